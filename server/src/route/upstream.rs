//! A small HTTP/1.1 client for an OpenAI-compatible upstream (`http://` or
//! `https://` base URLs, TLS in [`super::tls`]): one connection per request (`Connection: close`), bodies read as
//! they arrive (chunked, sized or to the end), so a streaming answer can be
//! relayed token by token and dropping the [`Body`] closes the connection,
//! which cancels the upstream's generation.
//!
//! The upstream's key is read from its environment variable at request time
//! and sent only in the `Authorization` header: it is never part of an error
//! message or a log line.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::tls::Tls;

/// A connection to an upstream: plain TCP or TLS over it.
trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

/// One `--upstream NAME=URL[,key_env=VAR][,model=MODEL][,price=MODEL][,ca=FILE]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// Base URL as an OpenAI client takes it, e.g. `http://127.0.0.1:8081/v1`.
    pub url: String,
    /// Environment variable holding the bearer key, if the upstream needs one.
    pub key_env: Option<String>,
    /// The model to ask for (replaces the request's `model`); also routes requests naming it.
    pub model: Option<String>,
    /// The price table's model the upstream's tokens are priced as (default: `model`,
    /// when the table has it); an upstream reporting `usage.cost` is charged that.
    pub price: Option<String>,
    /// Set for `https://` URLs (the certificate is always verified).
    pub tls: Option<Tls>,
    host: String,
    port: u16,
    /// The URL's path without a trailing slash (`/v1`).
    prefix: String,
}

impl Upstream {
    /// Parses `NAME=URL[,key_env=VAR][,model=MODEL][,price=MODEL][,ca=FILE]`.
    pub fn parse(spec: &str) -> Result<Upstream, String> {
        let usage = "write --upstream NAME=URL[,key_env=VAR][,model=MODEL][,price=MODEL][,ca=FILE], e.g. big=http://127.0.0.1:8081/v1";
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("--upstream {spec:?} has no NAME=: {usage}"))?;
        let name = name.trim();
        let mut parts = rest.split(',');
        let url = parts.next().unwrap_or("").trim().to_string();
        let (mut key_env, mut model, mut price, mut ca) = (None, None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("key_env", v)) if !v.is_empty() => key_env = Some(v.to_string()),
                Some(("model", v)) if !v.is_empty() => model = Some(v.to_string()),
                Some(("price", v)) if !v.is_empty() => price = Some(v.to_string()),
                Some(("ca", v)) if !v.is_empty() => ca = Some(v.to_string()),
                _ => return Err(format!("--upstream {name}: unknown option {p:?}: {usage}")),
            }
        }
        Upstream::new(name, &url, key_env, model, price, ca).map_err(|e| format!("--{e}: {usage}"))
    }

    /// An upstream from its parts (a `--upstream` flag or an `[[upstream]]` table);
    /// an error starts "upstream NAME: ". `ca` (a PEM file) is only for `https://`.
    pub fn new(
        name: &str,
        url: &str,
        key_env: Option<String>,
        model: Option<String>,
        price: Option<String>,
        ca: Option<String>,
    ) -> Result<Upstream, String> {
        let name = name.trim();
        let url = url.trim().to_string();
        let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let (key_env, model, price, ca) = (given(key_env), given(model), given(price), given(ca));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "upstream name {name:?} must be letters, digits, '-', '_' or '.'"
            ));
        }
        let (after, https) = if let Some(a) = url.strip_prefix("http://") {
            (a, false)
        } else if let Some(a) = url.strip_prefix("https://") {
            (a, true)
        } else {
            return Err(format!(
                "upstream {name}: URL {url:?} must start with http:// or https://"
            ));
        };
        if ca.is_some() && !https {
            return Err(format!(
                "upstream {name}: ca= is for https:// URLs, and {url:?} is http://"
            ));
        }
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("upstream {name}: bad port {p:?} in {url:?}"))?;
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                )
            }
            _ => (authority.to_string(), if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("upstream {name}: URL {url:?} has no host"));
        }
        let tls = if https {
            let ca = ca.as_deref().map(std::path::Path::new);
            Some(Tls::new(ca).map_err(|e| format!("upstream {name}: {e}"))?)
        } else {
            None
        };
        Ok(Upstream {
            name: name.to_string(),
            url: url.clone(),
            key_env,
            model,
            price,
            tls,
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// Why an upstream request failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// Connect error, timeout, 5xx or a broken answer: worth one retry, then local.
    Retryable(String),
    /// The upstream refused the request (4xx): passed through as is.
    Refused { status: u16, body: Vec<u8> },
}

/// An answer whose status is 2xx; its body is read with [`Body::next`].
pub struct Body {
    reader: BufReader<Box<dyn Conn>>,
    mode: Mode,
    timeout: Duration,
}

enum Mode {
    Chunked { left: usize, done: bool },
    Sized(usize),
    ToEnd { done: bool },
}

fn io_err(e: std::io::Error) -> String {
    e.to_string()
}

impl Body {
    /// The next piece of the body, None at its end. Each read waits at most the timeout.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        let t = self.timeout;
        tokio::time::timeout(t, self.next_inner())
            .await
            .map_err(|_| format!("no data for {} s", t.as_secs()))?
    }

    async fn next_inner(&mut self) -> Result<Option<Vec<u8>>, String> {
        match &mut self.mode {
            Mode::Sized(0) | Mode::ToEnd { done: true } | Mode::Chunked { done: true, .. } => {
                Ok(None)
            }
            Mode::Sized(n) => {
                let mut buf = vec![0u8; (*n).min(16 << 10)];
                let got = self.reader.read(&mut buf).await.map_err(io_err)?;
                if got == 0 {
                    return Err("the upstream closed the connection mid-answer".into());
                }
                *n -= got;
                buf.truncate(got);
                Ok(Some(buf))
            }
            Mode::ToEnd { done } => {
                let mut buf = vec![0u8; 16 << 10];
                let got = self.reader.read(&mut buf).await.map_err(io_err)?;
                if got == 0 {
                    *done = true;
                    return Ok(None);
                }
                buf.truncate(got);
                Ok(Some(buf))
            }
            Mode::Chunked { left, done } => {
                if *left == 0 {
                    let mut line = String::new();
                    self.reader.read_line(&mut line).await.map_err(io_err)?;
                    let size = line.trim().split(';').next().unwrap_or("");
                    let size = usize::from_str_radix(size, 16).map_err(|_| {
                        format!("bad chunk size {:?} from the upstream", line.trim())
                    })?;
                    if size == 0 {
                        *done = true;
                        return Ok(None);
                    }
                    *left = size;
                }
                let mut buf = vec![0u8; (*left).min(16 << 10)];
                let got = self.reader.read(&mut buf).await.map_err(io_err)?;
                if got == 0 {
                    return Err("the upstream closed the connection mid-answer".into());
                }
                *left -= got;
                buf.truncate(got);
                if *left == 0 {
                    let mut crlf = String::new();
                    self.reader.read_line(&mut crlf).await.map_err(io_err)?;
                }
                Ok(Some(buf))
            }
        }
    }

    /// The whole rest of the body.
    pub async fn read_all(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(b) = self.next().await? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }
}

/// POSTs `body` (JSON) to `{url}{path}` and returns the body of a 2xx answer.
pub async fn post(
    up: &Upstream,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Body, UpstreamError> {
    let retry = UpstreamError::Retryable;
    let stream = tokio::time::timeout(timeout, TcpStream::connect((up.host.as_str(), up.port)))
        .await
        .map_err(|_| retry(format!("connecting to upstream {} timed out", up.name)))?
        .map_err(|e| retry(format!("cannot connect to upstream {}: {e}", up.name)))?;
    let _ = stream.set_nodelay(true);
    let stream: Box<dyn Conn> = match &up.tls {
        None => Box::new(stream),
        Some(tls) => {
            let handshake = tokio::time::timeout(timeout, tls.connect(&up.host, stream))
                .await
                .map_err(|_| retry(format!("upstream {}: TLS handshake timed out", up.name)))?;
            Box::new(handshake.map_err(|e| retry(format!("upstream {}: {e}", up.name)))?)
        }
    };
    let mut reader = BufReader::new(stream);
    let default_port = if up.tls.is_some() { 443 } else { 80 };
    let host = if up.host.contains(':') {
        format!("[{}]", up.host)
    } else {
        up.host.clone()
    };
    let mut head = format!(
        "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        up.prefix,
        if up.port == default_port { host } else { format!("{host}:{}", up.port) },
        body.len()
    );
    if let Some(var) = &up.key_env {
        match std::env::var(var) {
            Ok(k) if !k.is_empty() => head.push_str(&format!("Authorization: Bearer {k}\r\n")),
            _ => {
                return Err(retry(format!(
                    "upstream {}: environment variable {var} (its key_env) is not set",
                    up.name
                )))
            }
        }
    }
    head.push_str("\r\n");
    let exchange = async {
        let s = reader.get_mut();
        s.write_all(head.as_bytes()).await.map_err(io_err)?;
        s.write_all(body).await.map_err(io_err)?;
        s.flush().await.map_err(io_err)?;
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.map_err(io_err)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", status_line.trim()))?;
        let (mut chunked, mut length) = (false, None);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.map_err(io_err)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                } else if k == "content-length" {
                    length = v.parse::<usize>().ok();
                }
            }
        }
        Ok::<_, String>((status, chunked, length))
    };
    let (status, chunked, length) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            retry(format!(
                "upstream {} did not answer in {} s",
                up.name,
                timeout.as_secs()
            ))
        })?
        .map_err(|e| retry(format!("upstream {}: {e}", up.name)))?;
    let mode = if chunked {
        Mode::Chunked {
            left: 0,
            done: false,
        }
    } else if let Some(n) = length {
        Mode::Sized(n)
    } else {
        Mode::ToEnd { done: false }
    };
    let mut b = Body {
        reader,
        mode,
        timeout,
    };
    match status {
        200..=299 => Ok(b),
        400..=499 => {
            let body = b.read_all().await.unwrap_or_default();
            Err(UpstreamError::Refused { status, body })
        }
        _ => Err(retry(format!("upstream {} answered {status}", up.name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let u =
            Upstream::parse("big=http://127.0.0.1:8081/v1/,key_env=BIG_KEY,model=qwen").unwrap();
        assert_eq!(
            (u.name.as_str(), u.host.as_str(), u.port, u.prefix.as_str()),
            ("big", "127.0.0.1", 8081, "/v1")
        );
        assert_eq!(u.key_env.as_deref(), Some("BIG_KEY"));
        assert_eq!(u.model.as_deref(), Some("qwen"));
        let u = Upstream::parse("a=http://localhost").unwrap();
        assert_eq!((u.port, u.prefix.as_str(), u.key_env), (80, "", None));
        for bad in [
            "nourl",
            "=http://x",
            "a=ftp://x",
            "a=http://x:99999",
            "a=http://x,key=1",
            "a=http://x/v1,ca=ca.pem",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn https_urls_verify_against_the_public_roots_or_a_ca_file() {
        let u = Upstream::parse("paid=https://api.example.com/v1,key_env=PAID_KEY").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("api.example.com", 443, "/v1")
        );
        assert_eq!(u.tls.as_ref().map(|t| t.ca.is_none()), Some(true));
        let u = Upstream::parse("v6=https://[::1]:8443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8443));
        let e = Upstream::parse("p=https://h/v1,ca=/no/such/ca.pem").unwrap_err();
        assert!(
            e.contains("upstream p: cannot read ca=/no/such/ca.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("owl-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "just text\n").unwrap();
        let e = Upstream::parse(&format!("p=https://h/v1,ca={}", not_pem.display())).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
