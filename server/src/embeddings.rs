//! `POST /v1/embeddings` (and `/embeddings`): OpenAI's shape. `input` is a
//! string, an array of strings, an array of token ids or an array of those;
//! `encoding_format` is `float` (default) or `base64` (little-endian f32s).
//! Served by the embedding model `owl serve --embedding-model` loaded.

use axum::extract::State;
use axum::Json;
use owl_engine::service::EmbedInput;
use serde_json::{json, Value};

use crate::app::{AppState, JsonBody};
use crate::error::ApiError;

fn inputs(v: &Value) -> Result<Vec<EmbedInput>, ApiError> {
    let bad = || ApiError::invalid("input", "`input` must be a string, an array of strings, an array of token ids, or an array of token-id arrays");
    let ids = |a: &[Value]| -> Result<Vec<u32>, ApiError> {
        a.iter().map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(bad)).collect()
    };
    let out = match v {
        Value::String(s) => vec![EmbedInput::Text(s.clone())],
        Value::Array(a) if a.is_empty() => return Err(ApiError::invalid("input", "`input` is empty")),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            a.iter().map(|s| EmbedInput::Text(s.as_str().unwrap_or_default().to_string())).collect()
        }
        Value::Array(a) if a.iter().all(Value::is_number) => vec![EmbedInput::Tokens(ids(a)?)],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_array().ok_or_else(bad).and_then(|x| ids(x)).map(EmbedInput::Tokens))
            .collect::<Result<_, _>>()?,
        Value::Null => return Err(ApiError::invalid("input", "`input` is required")),
        _ => return Err(bad()),
    };
    Ok(out)
}

/// Standard base64 (with padding) of the vector's little-endian f32 bytes.
fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

pub(crate) async fn embeddings(State(st): State<AppState>, JsonBody(v): JsonBody) -> Result<Json<Value>, ApiError> {
    let obj = v.as_object().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let base64 = match obj.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::invalid("encoding_format", format!("encoding_format {other:?}: use \"float\" or \"base64\""))),
    };
    if let Some(d) = obj.get("dimensions").filter(|d| !d.is_null()) {
        return Err(ApiError::invalid("dimensions", format!("`dimensions` ({d}) is not supported: owl returns the model's full width")));
    }
    let inputs = inputs(obj.get("input").unwrap_or(&Value::Null))?;
    let embedder = st.embedder()?;
    let model = obj.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).unwrap_or(&embedder.info().name).to_string();
    let e = embedder.clone();
    let out = tokio::task::spawn_blocking(move || e.embed(&inputs))
        .await
        .map_err(|e| ApiError::internal(format!("the embedding task failed: {e}")))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { json!(base64_f32(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f; 1.0, 2.0 = 00 00 80 3f 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
    }

    #[test]
    fn input_shapes() {
        assert_eq!(inputs(&json!("a")).unwrap(), vec![EmbedInput::Text("a".into())]);
        assert_eq!(inputs(&json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(inputs(&json!([1, 2])).unwrap(), vec![EmbedInput::Tokens(vec![1, 2])]);
        assert_eq!(inputs(&json!([[1], [2, 3]])).unwrap().len(), 2);
        for bad in [json!([]), json!(null), json!(3), json!([1, "a"]), json!([-1]), json!({"a": 1})] {
            assert!(inputs(&bad).is_err(), "{bad}");
        }
    }
}
