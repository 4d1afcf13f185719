//! `GET /dashboard`: one static page compiled into the binary (no build step, no
//! vendored library: the charts are SVG drawn by the page's own script). It loads
//! without a key and reads `/v1/owl/cost`, asking for a key when that answers 401.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> Response {
    let mut r = PAGE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
