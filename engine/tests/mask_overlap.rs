//! Grammar masks computed while the forward pass runs (service/masks.rs) give the
//! same tokens as masks computed after it, on a real model (smollm2-135m-instruct,
//! in the model cache via scripts/test): a batch of several constrained sequences
//! with different grammars, greedy and seeded, next to a free one; and a constrained
//! sequence cancelled mid-generation leaves nothing behind.

use std::sync::OnceLock;

use owl_engine::constrain::{Constraint, Grammar};
use owl_engine::service::{
    ChatMessage, Engine, EngineConfig, Event, FinishReason, Prompt, Request, RequestHandle,
    SamplingParams,
};

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::start(EngineConfig {
            model: "smollm2-135m-instruct".into(),
            n_ctx: 4096,
            n_parallel: 6,
            threads: Some(2),
            pull_if_missing: false,
            ..Default::default()
        })
        .expect(
            "smollm2-135m-instruct must be in the model cache (`owl pull smollm2-135m-instruct`)",
        )
    })
}

fn request(text: &str, max_tokens: usize, grammar: Option<Grammar>, seed: Option<u64>) -> Request {
    let mut r = Request::new(Prompt::Chat(vec![ChatMessage::new(
        "user",
        text.to_string(),
    )]));
    r.sampling = match seed {
        Some(s) => SamplingParams {
            temperature: 1.0,
            seed: Some(s),
            ..Default::default()
        },
        None => SamplingParams::greedy(),
    };
    r.max_tokens = Some(max_tokens);
    r.constraint = grammar.map(Constraint::new);
    r
}

fn finish(mut h: RequestHandle) -> (Vec<u32>, String, FinishReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    loop {
        match h.next_blocking() {
            Some(Event::Token { id, text: t, .. }) => {
                ids.push(id);
                text.push_str(&t);
            }
            Some(Event::Done { finish_reason, .. }) => return (ids, text, finish_reason),
            Some(Event::Error(e)) => panic!("generation failed: {e}"),
            None => panic!("the engine dropped the request"),
            _ => {}
        }
    }
}

fn person() -> Grammar {
    Grammar::JsonSchema(serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    }))
}

/// The requests of one batch: four constrained (two schemas, a regex, JSON objects),
/// greedy and at temperature 1 with seeds, and a free one. Submitted together, they
/// decode in the same steps.
fn batch() -> Vec<(Vec<u32>, String, FinishReason)> {
    let e = engine();
    let reqs = vec![
        request("Describe a person as JSON.", 48, Some(person()), None),
        request("Describe a person as JSON.", 48, Some(person()), Some(7)),
        request(
            "Give me a JSON object about the weather.",
            40,
            Some(Grammar::JsonObject),
            Some(11),
        ),
        request(
            "What is 12 times 12?",
            16,
            Some(Grammar::Regex("[0-9]{1,4}( is the answer)?".into())),
            None,
        ),
        request(
            "Pick a color.",
            24,
            Some(Grammar::JsonSchema(
                serde_json::json!({"enum": ["red", "green", "blue"]}),
            )),
            Some(3),
        ),
        request("Write a haiku about the sea.", 32, None, None),
    ];
    let handles: Vec<RequestHandle> = reqs.into_iter().map(|r| e.submit(r).unwrap()).collect();
    handles.into_iter().map(finish).collect()
}

#[test]
fn overlapped_masks_give_the_tokens_of_sequential_ones_and_cancelling_leaks_nothing() {
    let e = engine();
    e.set_mask_overlap(false);
    let n0 = e.masks_overlapped();
    let sequential = batch();
    assert_eq!(
        e.masks_overlapped(),
        n0,
        "the sequential path overlapped masks"
    );
    e.set_mask_overlap(true);
    let overlapped = batch();
    let constrained_tokens: usize = overlapped[..5].iter().map(|o| o.0.len()).sum();
    assert!(
        e.masks_overlapped() - n0 >= constrained_tokens as u64,
        "{} masks overlapped for {constrained_tokens} constrained tokens",
        e.masks_overlapped() - n0
    );
    for (i, (s, o)) in sequential.iter().zip(&overlapped).enumerate() {
        assert_eq!(s, o, "request {i}: overlapped masks changed the output");
    }
    // The constrained outputs are what their grammars allow (the masks were applied).
    for (ids, text, _) in &overlapped[..3] {
        assert!(!ids.is_empty());
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {text:?}");
        });
        assert!(v.is_object(), "{text}");
    }
    let answer = &overlapped[3].1;
    assert!(
        answer.chars().take_while(|c| c.is_ascii_digit()).count() >= 1,
        "{answer:?}"
    );
    assert!(
        ["\"red\"", "\"green\"", "\"blue\""].contains(&overlapped[4].1.as_str()),
        "{:?}",
        overlapped[4].1
    );

    // Cancelled while its next mask is being computed: the sequence ends, its mask dies
    // with its step, and the engine goes on (a request after it is served, nothing stays active).
    let alone = finish(
        e.submit(request(
            "Describe a person as JSON.",
            48,
            Some(person()),
            None,
        ))
        .unwrap(),
    );
    // 400 characters cannot be written in 200 tokens: only the cancel ends it early.
    let long = Grammar::Regex("[a-z ]{400}".into());
    let mut doomed = e
        .submit(request("Write about the sea.", 200, Some(long), Some(5)))
        .unwrap();
    let other = e
        .submit(request(
            "Describe a person as JSON.",
            48,
            Some(person()),
            None,
        ))
        .unwrap();
    let mut seen = 0;
    let reason = loop {
        match doomed.next_blocking() {
            Some(Event::Token { .. }) => {
                seen += 1;
                if seen == 3 {
                    doomed.cancel.cancel();
                }
            }
            Some(Event::Done { finish_reason, .. }) => break finish_reason,
            Some(Event::Error(err)) => panic!("{err}"),
            None => panic!("the engine dropped the cancelled request without a Done"),
            _ => {}
        }
    };
    assert_eq!(reason, FinishReason::Cancelled);
    assert_eq!(
        finish(other),
        alone,
        "the sequence beside a cancelled one changed"
    );
    assert_eq!(
        finish(
            e.submit(request(
                "Describe a person as JSON.",
                48,
                Some(person()),
                None
            ))
            .unwrap()
        ),
        alone
    );
    // The worker frees a sequence in the step after its Done is sent: wait for
    // it (a leak would hold it forever).
    let t0 = std::time::Instant::now();
    let m = loop {
        let m = e.metrics();
        if (m.active_sequences, m.queue_depth) == (0, 0) || t0.elapsed().as_secs() >= 10 {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!((m.active_sequences, m.queue_depth), (0, 0));
}
