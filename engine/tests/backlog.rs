//! A request's event channel is bounded ([`EVENT_BACKLOG`]): the engine never waits
//! for a reader, so one that lets that many events pile up has its request
//! cancelled, its sequence freed, and its last event an error saying why. Another
//! request that is read as it comes runs to its end meanwhile. On the tiny
//! synthetic llama (context 2048), so it runs in seconds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use owl_engine::service::{Engine, EngineConfig, Event, Prompt, Request, SamplingParams, EVENT_BACKLOG};

fn request(n_gen: usize) -> Request {
    let mut r = Request::new(Prompt::Tokens(vec![1, 20, 30, 40]));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(n_gen);
    r.stop_at_eog = false;
    r
}

#[test]
fn a_reader_that_falls_far_behind_is_cancelled_not_buffered() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic/tiny-llama-F32.gguf");
    let eng = Engine::start(EngineConfig {
        model: model.display().to_string(),
        n_ctx: 2048,
        n_parallel: 2,
        threads: Some(2),
        pull_if_missing: false,
        ..Default::default()
    })
    .expect("the tiny llama fixture loads");
    let n_gen = EVENT_BACKLOG + 600;
    let mut unread = eng.submit(request(n_gen)).unwrap();
    let mut read = eng.submit(request(200)).unwrap();

    // The other request, read as it comes, ends normally.
    let mut tokens = 0;
    loop {
        match read.next_blocking() {
            Some(Event::Token { .. }) => tokens += 1,
            Some(Event::Done { .. }) => break,
            Some(Event::Started { .. }) => {}
            other => panic!("the read request ended with {other:?}"),
        }
    }
    assert_eq!(tokens, 200);

    // The unread one is cancelled by the engine itself, once EVENT_BACKLOG events wait.
    let waited = Instant::now();
    while eng.metrics().active_sequences > 0 || eng.metrics().requests_cancelled == 0 {
        assert!(waited.elapsed() < Duration::from_secs(300), "the unread request never ended: {:?}", eng.metrics());
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = eng.metrics();
    assert_eq!(m.requests_cancelled, 1, "{m:?}");
    assert_eq!(m.kv_pages_used, m.kv_pages_cache_only, "the cancelled sequence's pages are freed: {m:?}");
    assert!(m.generated_tokens_total < (n_gen + 200) as u64, "it stopped short of max_tokens: {m:?}");

    // What waited for the reader: exactly the channel's bound, ending with the error.
    let mut events = Vec::new();
    while let Some(ev) = unread.next_blocking() {
        events.push(ev);
    }
    assert_eq!(events.len(), EVENT_BACKLOG, "the channel held more (or less) than its bound");
    assert!(matches!(events[0], Event::Started { .. }), "{:?}", events[0]);
    match events.last() {
        Some(Event::Error(e)) => assert!(e.contains(&format!("fell {EVENT_BACKLOG} events behind")), "{e}"),
        other => panic!("expected the backlog error last, got {other:?}"),
    }
    assert!(events[1..EVENT_BACKLOG - 1].iter().all(|e| matches!(e, Event::Token { .. })));
}
