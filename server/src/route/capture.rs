//! Capture for distillation (`owl serve --capture FILE`): every chat request an
//! upstream answered completely appends one line in OpenAI's chat fine-tuning
//! format: the conversation with earlier assistant turns at `weight: 0`, the
//! teacher's answer at `weight: 1`, the request's `tools`, and `metadata` (id,
//! time, teacher, reason, probe_score, usage and the dropped local draft, a free
//! preference pair next to the teacher's answer). A `/v1/completions` request
//! (one string prompt) is kept as `{"prompt", "completion", "metadata"}`, the
//! prompt/completion format of OpenAI's completions fine-tuning and of TRL.
//! `x-owl-capture: off` opts a request out.
//!
//! The file is created mode 0600 (it holds prompts). Records go through a bounded
//! queue to one writer thread, so capturing never blocks or slows an answer; when
//! the queue is full a record is dropped and counted (`owl_capture_dropped_total`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use serde_json::{json, Value};

/// Records queued for the writer at most.
pub const QUEUE: usize = 1024;

#[derive(Default)]
struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// The capture file's writer.
pub struct Capture {
    tx: SyncSender<String>,
    counts: Arc<Counts>,
    path: PathBuf,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("path", &self.path).finish()
    }
}

impl Capture {
    /// Opens `path` for appending (created 0600; an existing file is narrowed to 0600).
    pub fn open(path: &Path) -> std::io::Result<Capture> {
        Self::with_queue(path, QUEUE)
    }

    pub fn with_queue(path: &Path, queue: usize) -> std::io::Result<Capture> {
        let mut o = OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut file = o.open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let (tx, rx) = sync_channel::<String>(queue);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("owl-capture".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    match file.write_all(line.as_bytes()) {
                        Ok(()) => c.written.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("owl: warning: cannot write capture file {shown}: {e}");
                            c.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                let _ = file.flush();
            })?;
        Ok(Capture {
            tx,
            counts,
            path: path.to_path_buf(),
        })
    }

    /// Queues one record (never waits): a full queue drops it and counts it.
    pub fn push(&self, record: &Value) {
        let line = format!("{record}\n");
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `owl_capture_*` counters in Prometheus text.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            (
                "owl_capture_records_total",
                "Records written to the capture file.",
                &self.counts.written,
            ),
            (
                "owl_capture_dropped_total",
                "Records dropped because the capture writer's queue was full.",
                &self.counts.dropped,
            ),
            (
                "owl_capture_failed_total",
                "Records the capture writer could not write.",
                &self.counts.failed,
            ),
        ] {
            let n = c.load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}\n"
            ));
        }
        out
    }
}

/// What a capture record says besides the conversation and the answer.
#[derive(Clone, Debug)]
pub struct Meta {
    pub reason: String,
    pub probe_score: Option<f64>,
    /// The local model's dropped draft (low_confidence).
    pub local_draft: Option<String>,
}

/// A capture record to write once a local answer is complete (`--capture-all`).
#[derive(Clone, Debug)]
pub struct LocalCapture {
    pub sink: Arc<Capture>,
    /// The client's chat body.
    pub request: Value,
    pub meta: Meta,
}

impl LocalCapture {
    /// Queues the record of `message` (the assistant message answered), by `model`.
    pub fn push(&self, message: &Value, id: &str, model: &str, usage: &Value) {
        self.sink.push(&record(
            &self.request,
            message,
            id,
            model,
            usage,
            &self.meta,
        ));
    }
}

/// Whether a request's answer can be captured: a chat, or a completion of one string prompt.
pub fn capturable(request: &Value) -> bool {
    request["messages"].is_array() || request["prompt"].is_string()
}

/// One record in OpenAI's chat fine-tuning format. `request` is the client's
/// chat body, `answer` the upstream's assistant message; for a completions body
/// (a `prompt`), a prompt/completion record with the answer's `content`.
pub fn record(
    request: &Value,
    answer: &Value,
    id: &str,
    teacher: &str,
    usage: &Value,
    meta: &Meta,
) -> Value {
    let mut usage = usage.clone();
    if let Some(o) = usage.as_object_mut() {
        o.remove("owl");
    }
    let metadata = json!({
        "id": id, "time": owl_ledger::now_unix(), "teacher": teacher, "reason": meta.reason,
        "probe_score": meta.probe_score, "usage": usage, "local_draft": meta.local_draft,
    });
    if !request["messages"].is_array() {
        return json!({"prompt": request["prompt"], "completion": answer["content"], "metadata": metadata});
    }
    let mut messages: Vec<Value> = request["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut m| {
            if m["role"] == "assistant" {
                m["weight"] = json!(0);
            }
            m
        })
        .collect();
    let mut last = json!({"role": "assistant", "content": answer["content"], "weight": 1});
    if let Some(calls) = answer["tool_calls"].as_array().filter(|c| !c.is_empty()) {
        last["tool_calls"] = Value::Array(calls.clone());
    }
    messages.push(last);
    let mut rec = json!({"messages": messages, "metadata": metadata});
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        rec["tools"] = tools.clone();
    }
    rec
}

/// Builds the assistant message of a streamed answer from its chunks' deltas.
#[derive(Debug, Default)]
pub struct Assembler {
    content: String,
    /// Tool calls by index: id, name, arguments so far.
    calls: Vec<(String, String, String)>,
    pub finished: bool,
}

impl Assembler {
    pub fn add(&mut self, chunk: &Value) {
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        let d = &choice["delta"];
        // A chat delta's content, or a completions chunk's text.
        if let Some(t) = d["content"].as_str().or(choice["text"].as_str()) {
            self.content.push_str(t);
        }
        for c in d["tool_calls"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(0) as usize;
            if i >= 64 {
                continue;
            }
            while self.calls.len() <= i {
                self.calls.push(Default::default());
            }
            let slot = &mut self.calls[i];
            if let Some(id) = c["id"].as_str() {
                slot.0 = id.to_string();
            }
            if let Some(n) = c["function"]["name"].as_str() {
                slot.1.push_str(n);
            }
            if let Some(a) = c["function"]["arguments"].as_str() {
                slot.2.push_str(a);
            }
        }
        if choice["finish_reason"].is_string() {
            self.finished = true;
        }
    }

    /// The assistant message so far, in the non-streamed answer's shape.
    pub fn message(&self) -> Value {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
            .collect();
        let content = if calls.is_empty() || !self.content.is_empty() {
            json!(self.content)
        } else {
            Value::Null
        };
        json!({"role": "assistant", "content": content, "tool_calls": calls})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_weights_the_teacher_and_not_earlier_turns() {
        let req = json!({"messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"},
        ], "tools": [{"type": "function", "function": {"name": "add"}}]});
        let meta = Meta {
            reason: "low_confidence".into(),
            probe_score: Some(0.2),
            local_draft: Some("5".into()),
        };
        let usage = json!({"prompt_tokens": 9, "completion_tokens": 1, "owl": {"cost_usd": 1.0}});
        let r = record(
            &req,
            &json!({"content": "4"}),
            "chatcmpl-1",
            "qwen",
            &usage,
            &meta,
        );
        let ms = r["messages"].as_array().unwrap();
        assert_eq!(ms.len(), 5);
        assert_eq!(ms[2]["weight"], 0);
        assert!(ms[0].get("weight").is_none() && ms[1].get("weight").is_none());
        assert_eq!(
            ms[4],
            json!({"role": "assistant", "content": "4", "weight": 1})
        );
        assert_eq!(r["tools"], req["tools"]);
        assert_eq!(r["metadata"]["local_draft"], "5");
        assert!(r["metadata"]["usage"].get("owl").is_none());
    }

    #[test]
    fn a_completion_is_a_prompt_completion_record() {
        let meta = Meta {
            reason: "header".into(),
            probe_score: None,
            local_draft: None,
        };
        let req = json!({"prompt": "def add(a, b):", "max_tokens": 8});
        assert!(capturable(&req) && !capturable(&json!({"prompt": ["a", "b"]})));
        let mut a = Assembler::default();
        for c in [
            json!({"choices": [{"text": "\n    return", "index": 0}]}),
            json!({"choices": [{"text": " a + b", "index": 0, "finish_reason": "stop"}]}),
        ] {
            a.add(&c);
        }
        assert!(a.finished);
        let r = record(
            &req,
            &a.message(),
            "cmpl-1",
            "qwen",
            &json!({"completion_tokens": 4}),
            &meta,
        );
        assert_eq!(
            (&r["prompt"], &r["completion"]),
            (&req["prompt"], &json!("\n    return a + b"))
        );
        assert!(r.get("messages").is_none() && r["metadata"]["reason"] == "header");
    }

    #[test]
    fn streamed_deltas_assemble_into_the_message() {
        let mut a = Assembler::default();
        for c in [
            json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "add", "arguments": ""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
        ] {
            a.add(&c);
        }
        assert!(a.finished);
        let m = a.message();
        assert_eq!(m["content"], Value::Null);
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(m["tool_calls"][0]["id"], "c1");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // A writer that is not reading: the queue of one fills at the second record.
        let (tx, _rx) = sync_channel(1);
        let c = Capture {
            tx,
            counts: Arc::default(),
            path: PathBuf::from("unused"),
        };
        for i in 0..3 {
            c.push(&json!({"i": i}));
        }
        assert!(c.metrics_text().contains("\nowl_capture_dropped_total 2\n"));
    }

    #[test]
    fn the_file_is_private_and_appended() {
        let dir = std::env::temp_dir().join(format!("owl-capture-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cap.jsonl");
        let _ = std::fs::remove_file(&p);
        let c = Capture::open(&p).unwrap();
        c.push(&json!({"i": 1}));
        drop(c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
