//! The confidence probe of `owl serve --route-threshold` run here, on a file of
//! prompts (`owl route calibrate --escalate SHARE PROMPTS_FILE`): each prompt's
//! first N tokens are generated greedily with their logprobs and scored as the
//! server scores them (owl_server::route::probe), with no server and no upstream.

use std::path::Path;

use anyhow::{bail, Context, Result};
use owl_engine::{ChatMessage, Engine, Event, Prompt, Request, SamplingParams};
use serde_json::Value;

/// One prompt of a prompts file: a JSON line with `messages` (the `owl route eval`
/// format; other fields are ignored) or `prompt` (a string), else the line as text.
fn parse_line(line: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    let user = |t: &str| vec![ChatMessage::new("user", t)];
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Ok(user(line));
    };
    if let Some(p) = v.get("prompt").and_then(Value::as_str) {
        return Ok(user(p));
    }
    let Some(msgs) = v.get("messages").and_then(Value::as_array) else {
        if v.is_string() {
            return Ok(user(v.as_str().unwrap_or_default()));
        }
        return Err("a JSON line needs \"messages\" (an array) or \"prompt\" (a string)".into());
    };
    msgs.iter()
        .map(|m| match (m["role"].as_str(), m["content"].as_str()) {
            (Some(r), Some(c)) => Ok(ChatMessage::new(r, c)),
            _ => Err("each message needs a \"role\" and a string \"content\"".into()),
        })
        .collect()
}

/// The probe score of every prompt in `file`, with `model` reading `n` tokens.
pub fn probe_file(
    file: &Path,
    model: Option<&str>,
    threads: Option<usize>,
    n: usize,
) -> Result<Vec<f64>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        prompts.push(
            parse_line(line.trim())
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), i + 1))?,
        );
    }
    if prompts.is_empty() {
        bail!("{} has no prompts", file.display());
    }
    let cfg = crate::run::engine_config(model, "cpu", 4096, threads, 1, None)?;
    let engine = Engine::start(cfg)?;
    let mut scores = Vec::with_capacity(prompts.len());
    for (i, messages) in prompts.into_iter().enumerate() {
        let mut req = Request::new(Prompt::Chat(messages));
        req.sampling = SamplingParams::greedy();
        req.max_tokens = Some(n);
        req.logprobs = Some(0);
        let mut h = engine
            .submit(req)
            .map_err(|e| anyhow::anyhow!("prompt {}: {e}", i + 1))?;
        let mut logprobs = Vec::new();
        while let Some(ev) = h.next_blocking() {
            match ev {
                Event::Token {
                    logprob: Some(lp), ..
                } => logprobs.push(lp.logprob),
                Event::Error(e) => bail!("prompt {}: {e}", i + 1),
                Event::Done { .. } => break,
                _ => {}
            }
        }
        scores.push(owl_server::route::probe::score(&logprobs));
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn prompts_are_messages_a_prompt_or_plain_text() {
        let m = parse_line(r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "answer": "x"}"#).unwrap();
        assert_eq!(
            (m.len(), m[1].role.as_str(), m[1].content.as_str()),
            (2, "user", "Hi")
        );
        assert_eq!(
            parse_line(r#"{"prompt": "2 + 2?"}"#).unwrap()[0].content,
            "2 + 2?"
        );
        assert_eq!(
            parse_line("What is the capital of France?").unwrap()[0].content,
            "What is the capital of France?"
        );
        assert!(parse_line(r#"{"answer": "4"}"#).is_err());
        assert!(parse_line(r#"{"messages": [{"role": "user"}]}"#).is_err());
    }
}
