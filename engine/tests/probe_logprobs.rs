//! `Request::logprobs_for`: the router's confidence probe asks for the logprobs of
//! the first n generated tokens only, so the rest of a long answer is not charged
//! a copy of the logits and a softmax per token. Real model, smollm2-135m-instruct
//! by name (pulled into the model cache by scripts/test).

use owl_engine::service::{Engine, EngineConfig, Event, Prompt, Request, SamplingParams};

#[test]
fn logprobs_stop_after_the_first_n_tokens_and_the_tokens_do_not_change() {
    let e = Engine::start(EngineConfig {
        model: "smollm2-135m-instruct".into(),
        n_ctx: 512,
        n_parallel: 1,
        threads: Some(2),
        pull_if_missing: false,
        ..Default::default()
    })
    .expect("smollm2-135m-instruct must be in the model cache (`owl pull smollm2-135m-instruct`)");
    let run = |logprobs_for: Option<usize>| {
        let mut r = Request::new(Prompt::Text("The numbers from one to twenty:".into()));
        r.sampling = SamplingParams::greedy();
        r.max_tokens = Some(12);
        r.stop_at_eog = false;
        r.logprobs = Some(0);
        r.logprobs_for = logprobs_for;
        let mut h = e.submit(r).unwrap();
        let mut toks = Vec::new();
        loop {
            match h.next_blocking() {
                Some(Event::Token { id, logprob, .. }) => {
                    toks.push((id, logprob.map(|l| l.logprob)))
                }
                Some(Event::Done { .. }) => return toks,
                Some(Event::Error(err)) => panic!("generation failed: {err}"),
                None => panic!("the engine dropped the request"),
                _ => {}
            }
        }
    };
    let all = run(None);
    let first = run(Some(4));
    assert_eq!(all.len(), 12);
    assert!(all.iter().all(|(_, lp)| lp.is_some()), "{all:?}");
    // The same greedy tokens, the first four with the same logprobs, the rest with none.
    assert_eq!(
        all.iter().map(|t| t.0).collect::<Vec<_>>(),
        first.iter().map(|t| t.0).collect::<Vec<_>>()
    );
    assert_eq!(&first[..4], &all[..4]);
    assert!(first[4..].iter().all(|(_, lp)| lp.is_none()), "{first:?}");
}
