//! The busy-time split (engine/src/service/busy.rs) on a real model,
//! smollm2-135m-instruct by name (pulled into the model cache by scripts/test):
//! two concurrent requests with equal tokens get equal shares; a request alone gets
//! the whole busy time of its steps; idle time is charged to no one.

use std::time::Duration;

use owl_engine::service::{
    Engine, EngineConfig, Event, Prompt, Request, RequestHandle, SamplingParams, Timings,
};

fn engine(parallel: usize) -> Engine {
    Engine::start(EngineConfig {
        model: "smollm2-135m-instruct".into(),
        n_ctx: 2048,
        n_parallel: parallel,
        threads: Some(2),
        pull_if_missing: false,
        ..Default::default()
    })
    .expect("smollm2-135m-instruct must be in the model cache (`owl pull smollm2-135m-instruct`)")
}

/// A request of `n_prompt` distinct token ids starting at `first`, generating exactly `n_gen`.
fn request(first: u32, n_prompt: u32, n_gen: usize) -> Request {
    let mut r = Request::new(Prompt::Tokens((first..first + n_prompt).collect()));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(n_gen);
    r.stop_at_eog = false;
    r
}

fn wait_started(h: &mut RequestHandle) {
    match h.next_blocking() {
        Some(Event::Started { .. }) => {}
        other => panic!("expected Started, got {other:?}"),
    }
}

fn finish(mut h: RequestHandle) -> (usize, Timings) {
    loop {
        match h.next_blocking() {
            Some(Event::Done { usage, timings, .. }) => return (usage.completion_tokens, timings),
            Some(Event::Error(e)) => panic!("generation failed: {e}"),
            None => panic!("the engine dropped the request"),
            _ => {}
        }
    }
}

#[test]
fn equal_requests_in_the_same_steps_pay_equal_shares() {
    let e = engine(3);
    // A long prompt first: while its prefill step runs, the two equal requests queue up
    // together and join the same step.
    let mut long = e.submit(request(1000, 400, 24)).unwrap();
    wait_started(&mut long);
    let a = e.submit(request(3000, 48, 16)).unwrap();
    let b = e.submit(request(5000, 48, 16)).unwrap();
    let (na, ta) = finish(a);
    let (nb, tb) = finish(b);
    let (_, tl) = finish(long);
    assert_eq!((na, nb), (16, 16));
    for t in [&ta, &tb] {
        assert!(t.prefill_s > 0.0 && t.decode_s > 0.0, "{t:?}");
    }
    let rel = (ta.busy_s() - tb.busy_s()).abs() / ta.busy_s().max(tb.busy_s());
    assert!(
        rel < 0.05,
        "equal requests paid {:.6}s and {:.6}s ({:.1}% apart)",
        ta.busy_s(),
        tb.busy_s(),
        rel * 100.0
    );
    // The long prompt pays for its prefill: 400 prompt tokens against 48.
    assert!(
        tl.prefill_s > 4.0 * ta.prefill_s,
        "long {tl:?} vs short {ta:?}"
    );
    // Nothing else ran: the three shares add up to the engine's busy time.
    let m = e.metrics();
    let sum = ta.busy_s() + tb.busy_s() + tl.busy_s();
    assert!(
        (sum - m.busy_seconds_total).abs() < 1e-9 * m.busy_seconds_total.max(1.0),
        "{sum} vs {}",
        m.busy_seconds_total
    );
}

#[test]
fn a_request_alone_gets_the_whole_busy_time_and_idle_is_not_charged() {
    let e = engine(2);
    std::thread::sleep(Duration::from_millis(300));
    let before = e.metrics();
    let (n, t) = finish(e.submit(request(700, 32, 8)).unwrap());
    assert_eq!(n, 8);
    let after = e.metrics();
    let busy = after.busy_seconds_total - before.busy_seconds_total;
    assert!(busy > 0.0);
    assert!(
        (t.busy_s() - busy).abs() < 1e-9,
        "alone it paid {} of {busy} busy seconds",
        t.busy_s()
    );
    // The 300 ms before it were idle, and its share holds none of them.
    assert!(
        after.idle_seconds_total >= 0.25,
        "idle {}",
        after.idle_seconds_total
    );
    assert!(
        t.busy_s() < t.ttft_ms / 1e3 + t.gen_ms / 1e3 + 0.05,
        "{t:?}"
    );
}
