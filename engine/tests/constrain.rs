//! Constrained decoding on a real model (smollm2-135m-instruct, in the model cache
//! via scripts/test): schema output parses and matches, a constrained sequence in
//! the batch leaves free ones unchanged, bad grammars are refused at submit, and
//! logprobs describe the model's row, not the one the grammar masked.

use std::sync::OnceLock;

use owl_engine::constrain::{Constraint, Grammar};
use owl_engine::service::{
    ChatMessage, Engine, EngineConfig, Event, FinishReason, Prompt, Request, RequestHandle,
    SamplingParams, SubmitError,
};

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::start(EngineConfig {
            model: "smollm2-135m-instruct".into(),
            n_ctx: 2048,
            n_parallel: 4,
            threads: Some(2),
            pull_if_missing: false,
            ..Default::default()
        })
        .expect(
            "smollm2-135m-instruct must be in the model cache (`owl pull smollm2-135m-instruct`)",
        )
    })
}

fn chat(text: &str, max_tokens: usize, grammar: Option<Grammar>) -> Request {
    let mut r = Request::new(Prompt::Chat(vec![ChatMessage::new(
        "user",
        text.to_string(),
    )]));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r.constraint = grammar.map(Constraint::new);
    r
}

fn finish(mut h: RequestHandle) -> (String, Vec<u32>, FinishReason) {
    let (mut text, mut ids) = (String::new(), Vec::new());
    loop {
        match h.next_blocking() {
            Some(Event::Token { id, text: t, .. }) => {
                text.push_str(&t);
                ids.push(id);
            }
            Some(Event::Done { finish_reason, .. }) => return (text, ids, finish_reason),
            Some(Event::Error(e)) => panic!("generation failed: {e}"),
            None => panic!("the engine dropped the request"),
            _ => {}
        }
    }
}

fn person_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    })
}

#[test]
fn schema_output_parses_and_matches() {
    let (text, _, reason) = finish(
        engine()
            .submit(chat(
                "Describe a person as JSON.",
                120,
                Some(Grammar::JsonSchema(person_schema())),
            ))
            .unwrap(),
    );
    assert_eq!(
        reason,
        FinishReason::Stop,
        "the grammar completes before max_tokens: {text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 3, "{text}");
    assert!(
        o["name"].as_str().is_some_and(|s| s.chars().count() <= 12),
        "{text}"
    );
    assert!(
        o["age"].as_i64().is_some_and(|a| (0..=120).contains(&a)),
        "{text}"
    );
    let tags = o["tags"].as_array().unwrap();
    assert!(
        tags.len() <= 2 && tags.iter().all(|t| t == "a" || t == "b"),
        "{text}"
    );
}

#[test]
fn regex_stops_when_complete_and_max_tokens_cuts_to_a_prefix() {
    let (text, _, reason) = finish(
        engine()
            .submit(chat(
                "Is the sky blue? Answer yes or no.",
                20,
                Some(Grammar::Regex("(yes|no)".into())),
            ))
            .unwrap(),
    );
    assert_eq!(reason, FinishReason::Stop);
    assert!(text == "yes" || text == "no", "{text:?}");
    let (text, ids, reason) = finish(
        engine()
            .submit(chat(
                "Describe a person as JSON.",
                4,
                Some(Grammar::JsonSchema(person_schema())),
            ))
            .unwrap(),
    );
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(
        ids.iter()
            .filter(|&&i| i != owl_engine::service::TEXT_ONLY)
            .count(),
        4
    );
    assert!(
        text.starts_with('{') && serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "a valid prefix, cut: {text}"
    );
}

#[test]
fn a_constrained_sequence_leaves_free_ones_in_its_batch_unchanged() {
    let e = engine();
    let free = || chat("Write a haiku about the sea.", 24, None);
    let (solo, solo_ids, _) = finish(e.submit(free()).unwrap());
    let c = e
        .submit(chat(
            "Describe a person as JSON.",
            24,
            Some(Grammar::JsonSchema(person_schema())),
        ))
        .unwrap();
    let f = e.submit(free()).unwrap();
    let (batched, batched_ids, _) = finish(f);
    let (ctext, _, _) = finish(c);
    assert!(ctext.starts_with('{'), "{ctext}");
    assert_eq!(
        batched_ids, solo_ids,
        "free output changed next to a constrained one: {solo:?} vs {batched:?}"
    );
}

#[test]
fn invalid_grammars_are_refused_at_submit() {
    for g in [
        Grammar::JsonSchema(serde_json::json!({"type": "nonsense"})),
        Grammar::Lark("start: undefined_rule".into()),
        Grammar::Regex("(unclosed".into()),
    ] {
        match engine().submit(chat("hi", 8, Some(g.clone()))) {
            Err(SubmitError::Constraint(msg)) => assert!(!msg.is_empty()),
            other => panic!("{g:?} should be SubmitError::Constraint, got {other:?}"),
        }
    }
}

/// The first token's logprobs of a one-token request.
fn first_logprob(grammar: Option<Grammar>) -> (u32, owl_engine::service::TokenLogprob) {
    let mut r = chat("Describe a person as JSON.", 1, grammar);
    r.logprobs = Some(5);
    let mut h = engine().submit(r).unwrap();
    loop {
        match h.next_blocking() {
            Some(Event::Token {
                id,
                logprob: Some(lp),
                ..
            }) => return (id, lp),
            Some(Event::Error(e)) => panic!("generation failed: {e}"),
            None | Some(Event::Done { .. }) => panic!("no token with logprobs came"),
            _ => {}
        }
    }
}

#[test]
fn logprobs_are_the_models_not_the_masked_ones() {
    // The grammar masks the row in place before sampling; logprobs must still
    // describe the model's distribution, so both runs report the same top list.
    let (free_id, free) = first_logprob(None);
    let (yes_no_id, masked) = first_logprob(Some(Grammar::Regex("(yes|no)".into())));
    assert_ne!(
        free_id, yes_no_id,
        "the mask must change the choice for this check to mean anything"
    );
    assert_eq!(free.top, masked.top);
    assert_eq!(free.top[0].id, free_id);
    // The forced token keeps its (lower) probability under the model.
    assert!(
        masked.logprob < free.logprob,
        "{} vs {}",
        masked.logprob,
        free.logprob
    );
}
