//! llama-server's native `POST /completion`: the request its own web UI and many
//! front ends send (`prompt` as text or token ids, `n_predict`, `n_probs`,
//! `return_tokens`, `cache_prompt`, ...), answered in its shape: `content`,
//! `tokens`, `stop`, `stop_type`, `stopping_word`, `timings`,
//! `generation_settings`, `completion_probabilities`; streamed as `data:` lines
//! of the same objects, one per token, the last with `stop: true` (no `[DONE]`).
//!
//! The request becomes an OpenAI completions body (so validation, limits and
//! constraints are the same code) plus the options only this shape has; the
//! generation is the same engine path as `/v1/completions`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Map, Value};

use owl_engine::service::{FinishReason, Timings, TokenLogprob, Usage};

use crate::app::{AppState, JsonBody};
use crate::cost::Client;
use crate::error::ApiError;

/// `POST /completion`: always answered by the local model (no upstream speaks this shape).
pub(crate) async fn completion(
    State(st): State<AppState>,
    client: Client,
    JsonBody(v): JsonBody,
) -> Result<Response, ApiError> {
    super::start_native(st, client, &v).await?.respond().await
}

/// What a native answer needs beyond an OpenAI one.
#[derive(Clone, Debug, Default)]
pub(crate) struct NativeOpts {
    /// Alternatives per token in `completion_probabilities` (0: none asked).
    pub n_probs: usize,
    /// `tokens` carries the generated ids (always in a stream's chunks).
    pub return_tokens: bool,
    /// The prompt as text, echoed in `prompt`.
    pub prompt: String,
    /// `generation_settings`, as the request resolved them.
    pub settings: Value,
    /// `response_fields`: only these (slash paths into the answer) are returned.
    pub fields: Vec<String>,
    /// `post_sampling_probs`: probabilities (`prob`, `top_probs`) of the distribution each
    /// token was drawn from, after the sampler chain, instead of the model's log-probabilities.
    pub post_sampling: bool,
}

/// `GET /props`: the server's settings as llama-server reports them. The context is
/// not split per slot in owl (sequences share one paged KV cache), so `n_ctx` is
/// what one sequence may use.
pub(crate) async fn props(State(st): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let engine = st.engine()?;
    let info = engine.info();
    let mut params = settings(&Map::new(), -1);
    params["n_ctx"] = json!(info.n_ctx);
    Ok(axum::Json(json!({
        "default_generation_settings": {
            "id": 0, "id_task": -1, "n_ctx": info.n_ctx, "is_processing": false, "params": params,
        },
        "total_slots": info.n_parallel,
        "model_alias": info.name,
        "model_path": info.path,
        "chat_template": engine.chat_template(),
        "modalities": {"vision": false, "audio": false},
        "build_info": concat!("owl-", env!("CARGO_PKG_VERSION")),
        "is_sleeping": false,
    })))
}

/// Native fields that owl reads, or accepts knowing they change nothing here.
const ACCEPTED: &[&str] = &[
    "prompt", "n_predict", "max_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "stop",
    "repeat_penalty", "presence_penalty", "frequency_penalty", "ignore_eos", "grammar",
    "json_schema", "logit_bias", "n_probs", "stream", "return_tokens", "response_fields",
    "timeout", "model",
    // The prefix cache is always on; slots and keep/discard are the scheduler's business.
    "cache_prompt", "id_slot", "n_keep", "n_discard", "n_indent", "t_max_predict_ms",
    "t_max_prompt_ms", "samplers", "typical_p", "dynatemp_range", "dynatemp_exponent",
    "repeat_last_n", "penalize_nl", "tfs_z", "xtc_probability", "xtc_threshold", "dry_multiplier",
    "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
    "lora", "id_task", "timings_per_token", "post_sampling_probs", "return_progress",
    "backend_sampling", "mirostat", "mirostat_tau", "mirostat_eta",
];

/// Turns a native body into an OpenAI completions body plus the native options.
pub(crate) fn to_openai(v: &Value) -> Result<(Value, NativeOpts), ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !ACCEPTED.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            k,
            format!("`{k}` is not supported by owl's /completion"),
        ));
    }
    // Samplers owl does not have are refused when they would change the output.
    for (field, off) in [("mirostat", json!(0)), ("typical_p", json!(1.0)), ("xtc_probability", json!(0.0)), ("dry_multiplier", json!(0.0))] {
        if let Some(x) = obj.get(field).filter(|x| x.as_f64() != off.as_f64()) {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` = {x} is not supported (owl samples with temperature, top_k, top_p, min_p and penalties)"),
            ));
        }
    }
    let post_sampling = match obj.get("post_sampling_probs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("post_sampling_probs", "`post_sampling_probs` must be true or false")),
    };
    let mut body = Map::new();
    for k in [
        "prompt", "temperature", "top_k", "top_p", "min_p", "stop", "repeat_penalty",
        "presence_penalty", "frequency_penalty", "ignore_eos", "grammar", "json_schema", "stream",
        "timeout", "model",
    ] {
        if let Some(x) = obj.get(k).filter(|x| !x.is_null()) {
            body.insert(k.into(), x.clone());
        }
    }
    if !body.contains_key("prompt") {
        return Err(ApiError::invalid("prompt", "`prompt` is required"));
    }
    // -1 (llama.cpp's "random") leaves the seed to the engine.
    if let Some(s) = obj.get("seed").and_then(Value::as_i64).filter(|&s| s >= 0 && s != u32::MAX as i64) {
        body.insert("seed".into(), json!(s));
    }
    let n_predict = obj.get("n_predict").or(obj.get("max_tokens")).and_then(Value::as_i64);
    match n_predict {
        None | Some(-1) => {}
        Some(n) if n >= 1 => {
            body.insert("max_tokens".into(), json!(n));
        }
        Some(n) => {
            return Err(ApiError::invalid(
                "n_predict",
                format!("`n_predict` must be -1 (no limit) or at least 1, got {n}"),
            ))
        }
    }
    let n_probs = match obj.get("n_probs") {
        None | Some(Value::Null) => 0,
        Some(x) => match x.as_u64() {
            Some(n) if n <= 20 => n as usize,
            _ => return Err(ApiError::invalid("n_probs", format!("`n_probs` must be from 0 to 20, got {x}"))),
        },
    };
    if n_probs > 0 {
        body.insert("logprobs".into(), json!(n_probs));
    }
    if let Some(b) = obj.get("logit_bias").filter(|b| !b.is_null()) {
        body.insert("logit_bias".into(), logit_bias(b)?);
    }
    let fields = match obj.get("response_fields") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|f| f.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("response_fields", "`response_fields` must be an array of strings"))?,
        Some(_) => return Err(ApiError::invalid("response_fields", "`response_fields` must be an array of strings")),
    };
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let opts = NativeOpts {
        n_probs,
        return_tokens: stream || obj.get("return_tokens").and_then(Value::as_bool).unwrap_or(false),
        prompt: String::new(),
        settings: settings(obj, n_predict.unwrap_or(-1)),
        fields,
        post_sampling,
    };
    Ok((Value::Object(body), opts))
}

/// llama-server's `logit_bias` forms: `[[id, bias], ...]` (bias `false` bans the
/// token) or `{"id": bias}`, as OpenAI's `{"id": bias}` map.
fn logit_bias(b: &Value) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::invalid(
            "logit_bias",
            "`logit_bias` must be [[token_id, bias], ...] or {\"token_id\": bias} (a bias of false bans the token)",
        )
    };
    let bias = |x: &Value| match x {
        Value::Bool(false) => Ok(json!(-100)),
        Value::Number(_) => Ok(x.clone()),
        _ => Err(bad()),
    };
    let mut out = Map::new();
    match b {
        Value::Array(pairs) => {
            for p in pairs {
                let [id, x] = p.as_array().map(Vec::as_slice).unwrap_or(&[]) else {
                    return Err(bad());
                };
                let id = id.as_u64().ok_or_else(bad)?;
                out.insert(id.to_string(), bias(x)?);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                out.insert(k.clone(), bias(x)?);
            }
        }
        _ => return Err(bad()),
    }
    Ok(Value::Object(out))
}

/// `generation_settings` as the request resolved them (llama-server's names).
fn settings(obj: &Map<String, Value>, n_predict: i64) -> Value {
    let get = |k: &str, d: Value| obj.get(k).filter(|x| !x.is_null()).cloned().unwrap_or(d);
    json!({
        "n_predict": n_predict,
        "seed": get("seed", json!(u32::MAX)),
        "temperature": get("temperature", json!(0.8)),
        "top_k": get("top_k", json!(40)),
        "top_p": get("top_p", json!(0.95)),
        "min_p": get("min_p", json!(0.05)),
        "repeat_penalty": get("repeat_penalty", json!(1.0)),
        "presence_penalty": get("presence_penalty", json!(0.0)),
        "frequency_penalty": get("frequency_penalty", json!(0.0)),
        "stop": get("stop", json!([])),
        "ignore_eos": get("ignore_eos", json!(false)),
        "n_probs": get("n_probs", json!(0)),
        "stream": get("stream", json!(false)),
        "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
    })
}

/// One token's `completion_probabilities` entry: log-probabilities, or with
/// `post_sampling_probs` probabilities after the sampler chain (llama-server's shape).
pub(crate) fn probability(o: &NativeOpts, piece: &str, id: u32, lp: &TokenLogprob) -> Value {
    if o.post_sampling {
        return json!({
            "id": id, "token": piece, "prob": lp.logprob.exp(), "bytes": piece.as_bytes(),
            "top_probs": lp.top.iter().map(|t| json!({
                "id": t.id, "token": t.text, "prob": t.logprob.exp(), "bytes": t.text.as_bytes(),
            })).collect::<Vec<_>>(),
        });
    }
    json!({
        "id": id, "token": piece, "logprob": lp.logprob, "bytes": piece.as_bytes(),
        "top_logprobs": lp.top.iter().map(|t| json!({
            "id": t.id, "token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes(),
        })).collect::<Vec<_>>(),
    })
}

/// A streamed token's object (`stop: false`).
pub(crate) fn chunk(o: &NativeOpts, text: &str, ids: &[u32], probs: Vec<Value>) -> Value {
    let mut c = json!({"index": 0, "content": text, "tokens": ids, "stop": false, "id_slot": 0});
    if o.n_probs > 0 {
        c["completion_probabilities"] = json!(probs);
    }
    c
}

/// What ended the generation, as llama-server names it.
fn stop_type(finish: FinishReason, stop_word: Option<&str>) -> &'static str {
    match (finish, stop_word) {
        (FinishReason::Length, _) => "limit",
        (FinishReason::Stop, Some(_)) => "word",
        (FinishReason::Stop, None) => "eos",
        (FinishReason::Cancelled, _) => "none",
    }
}

/// The final answer: the whole of it (`content`, all `tokens`) when not
/// streamed, or the closing object of a stream (`content` empty).
#[allow(clippy::too_many_arguments)]
pub(crate) fn final_object(
    o: &NativeOpts,
    model: &str,
    text: &str,
    ids: &[u32],
    probs: Vec<Value>,
    finish: FinishReason,
    stop_word: Option<&str>,
    usage: &Usage,
    t: &Timings,
    whole: &str,
) -> Value {
    let evaluated = usage.prompt_tokens - usage.cached_tokens.min(usage.prompt_tokens);
    let per_token = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
    let mut v = json!({
        "index": 0,
        "content": text,
        "tokens": if o.return_tokens { ids.to_vec() } else { vec![] },
        "id_slot": 0,
        "stop": true,
        "model": model,
        "tokens_predicted": usage.completion_tokens,
        "tokens_evaluated": usage.prompt_tokens,
        "generation_settings": o.settings,
        "prompt": o.prompt,
        "has_new_line": whole.contains('\n'),
        "truncated": false,
        "stop_type": stop_type(finish, stop_word),
        "stopping_word": stop_word.unwrap_or(""),
        "tokens_cached": usage.prompt_tokens + usage.completion_tokens,
        "timings": {
            "cache_n": usage.cached_tokens,
            "prompt_n": evaluated,
            "prompt_ms": t.prompt_ms,
            "prompt_per_token_ms": per_token(t.prompt_ms, evaluated),
            "prompt_per_second": t.prompt_tps,
            "predicted_n": usage.completion_tokens,
            "predicted_ms": t.gen_ms,
            "predicted_per_token_ms": per_token(t.gen_ms, usage.completion_tokens),
            "predicted_per_second": t.gen_tps,
        },
    });
    if o.n_probs > 0 {
        v["completion_probabilities"] = json!(probs);
    }
    if o.fields.is_empty() {
        return v;
    }
    // `response_fields`: each path's value under its own (slash-joined) name.
    let mut out = Map::new();
    for f in &o.fields {
        let at = f.split('/').try_fold(&v, |x, k| x.get(k));
        if let Some(x) = at {
            out.insert(f.clone(), x.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_fields_map_onto_openai() {
        let (b, o) = to_openai(&json!({
            "prompt": "Hi", "n_predict": 8, "n_probs": 3, "seed": -1, "cache_prompt": true,
            "logit_bias": [[15, false], [16, 2.5]], "return_tokens": true,
        }))
        .unwrap();
        assert_eq!(b["max_tokens"], 8);
        assert_eq!(b["logprobs"], 3);
        assert!(b.get("seed").is_none(), "-1 means a random seed");
        assert_eq!(b["logit_bias"], json!({"15": -100, "16": 2.5}));
        assert!(o.return_tokens);
        assert_eq!(o.settings["n_predict"], 8);
        let (b, _) = to_openai(&json!({"prompt": [1, 2, 3], "n_predict": -1})).unwrap();
        assert!(b.get("max_tokens").is_none(), "-1 means no limit");
    }

    #[test]
    fn what_owl_cannot_do_is_refused_by_name() {
        for (body, field) in [
            (json!({"prompt": "x", "mirostat": 2}), "mirostat"),
            (json!({"prompt": "x", "n_predict": 0}), "n_predict"),
            (json!({"prompt": "x", "n_probs": 99}), "n_probs"),
            (json!({"prompt": "x", "post_sampling_probs": "yes"}), "post_sampling_probs"),
            (json!({"prompt": "x", "frobnicate": 1}), "frobnicate"),
            (json!({"prompt": "x", "logit_bias": [[1]]}), "logit_bias"),
            (json!({"n_predict": 3}), "prompt"),
        ] {
            let e = to_openai(&body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn response_fields_pick_paths() {
        let (_, mut o) = to_openai(&json!({"prompt": "x", "n_predict": 4})).unwrap();
        o.fields = vec!["content".into(), "generation_settings/n_predict".into()];
        let u = Usage { prompt_tokens: 3, completion_tokens: 4, cached_tokens: 0 };
        let v = final_object(&o, "m", "abc", &[1, 2], vec![], FinishReason::Length, None, &u, &Timings::default(), "abc");
        assert_eq!(v, json!({"content": "abc", "generation_settings/n_predict": 4}));
        o.fields.clear();
        let v = final_object(&o, "m", "a\nb", &[1, 2], vec![], FinishReason::Stop, Some("\n\n"), &u, &Timings::default(), "a\nb");
        assert_eq!((v["stop_type"].as_str(), v["stopping_word"].as_str()), (Some("word"), Some("\n\n")));
        assert_eq!((v["has_new_line"].as_bool(), v["timings"]["prompt_n"].as_u64()), (Some(true), Some(3)));
        assert_eq!(v["tokens"], json!([]), "ids only with return_tokens");
    }
}
