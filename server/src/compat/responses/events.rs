//! A chat stream as the Responses API's typed events, each with a `sequence_number`.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use super::{call_item, ids, message_item, response, usage};
use crate::compat::{feed_choice, sse_chunks, ChunkSink};

/// One output item being streamed.
enum Item {
    Text(String),
    /// Chat's call index, call id, name, arguments so far.
    Call(u64, Value, Value, String),
}

/// Called with the final response object once a stream completes (or ends
/// incomplete at the token limit): the store keeps it.
pub(super) type Done = Box<dyn FnOnce(&Value) + Send>;

/// Turns chat chunks into Responses events.
#[derive(Default)]
struct Events {
    done: Option<Done>,
    req: Value,
    out: Vec<Value>,
    seq: u64,
    id: String,
    model: Value,
    created: u64,
    items: Vec<Item>,
    /// Whether the last item is still open.
    open: bool,
    finish: Option<String>,
    usage: Value,
    failed: bool,
}

impl Events {
    fn emit(&mut self, ty: &str, mut v: Value) {
        v["type"] = json!(ty);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.out.push(v);
    }

    fn item_json(&self, k: usize, status: &str) -> Value {
        match &self.items[k] {
            Item::Text(t) => message_item(&self.id, t, status),
            Item::Call(_, cid, name, args) => call_item(&self.id, k, cid, name, args, status),
        }
    }

    /// The id `item_json` gives item `k`, without building the item (a delta per
    /// token must not copy the text so far).
    fn item_id(&self, k: usize) -> Value {
        match &self.items[k] {
            Item::Text(_) => json!(format!("msg_{}", self.id)),
            Item::Call(..) => json!(format!("fc_{}_{k}", self.id)),
        }
    }

    fn snapshot(&self, finish: Option<&str>) -> Value {
        let status = if finish.is_some() {
            "completed"
        } else {
            "in_progress"
        };
        let output = (0..self.items.len())
            .map(|k| self.item_json(k, status))
            .collect();
        response(
            &self.req,
            &self.id,
            &self.model,
            self.created,
            output,
            finish,
            self.usage.clone(),
        )
    }

    fn start(&mut self, c: &Value) {
        self.id = ids(&c["id"]);
        self.model = c["model"].clone();
        self.created = c["created"].as_u64().unwrap_or(0);
        let r = self.snapshot(None);
        self.emit("response.created", json!({"response": r}));
        let r = self.snapshot(None);
        self.emit("response.in_progress", json!({"response": r}));
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        let k = self.items.len() - 1;
        let item_id = self.item_id(k);
        match &self.items[k] {
            Item::Text(t) => {
                let t = t.clone();
                let at = json!({"item_id": item_id, "output_index": k, "content_index": 0});
                let mut e = at.clone();
                e["text"] = json!(t);
                self.emit("response.output_text.done", e);
                let mut e = at;
                e["part"] = json!({"type": "output_text", "text": t, "annotations": []});
                self.emit("response.content_part.done", e);
            }
            Item::Call(_, _, _, args) => {
                let e = json!({"item_id": item_id, "output_index": k, "arguments": args});
                self.emit("response.function_call_arguments.done", e);
            }
        }
        let item = self.item_json(k, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": k, "item": item}),
        );
    }

    fn open_item(&mut self, item: Item) -> usize {
        self.close();
        self.items.push(item);
        self.open = true;
        let k = self.items.len() - 1;
        let mut it = self.item_json(k, "in_progress");
        if let Some(c) = it["content"].as_array_mut() {
            c.clear();
        }
        self.emit(
            "response.output_item.added",
            json!({"output_index": k, "item": it}),
        );
        if matches!(self.items[k], Item::Text(_)) {
            let item_id = self.item_id(k);
            self.emit(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": k, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        k
    }
}

impl ChunkSink for Events {
    fn text(&mut self, t: &str) {
        let k = match (self.open, self.items.last()) {
            (true, Some(Item::Text(_))) => self.items.len() - 1,
            _ => self.open_item(Item::Text(String::new())),
        };
        if let Item::Text(s) = &mut self.items[k] {
            s.push_str(t);
        }
        let item_id = self.item_id(k);
        self.emit(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": k, "content_index": 0, "delta": t}),
        );
    }

    fn call(&mut self, d: &Value) {
        let idx = d["index"].as_u64().unwrap_or(0);
        let k = match (self.open, self.items.last()) {
            (true, Some(Item::Call(i, ..))) if *i == idx => self.items.len() - 1,
            _ => self.open_item(Item::Call(
                idx,
                d["id"].clone(),
                d["function"]["name"].clone(),
                String::new(),
            )),
        };
        let Some(args) = d["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        if let Item::Call(.., so_far) = &mut self.items[k] {
            so_far.push_str(args);
        }
        let item_id = self.item_id(k);
        self.emit(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": k, "delta": args}),
        );
    }

    fn finish(&mut self, f: &str, _choice: &Value) {
        self.finish = Some(f.to_string());
    }
}

impl Events {
    fn chunk(&mut self, c: &Value) {
        if let Some(e) = c.get("error") {
            self.failed = true;
            self.emit(
                "error",
                json!({"code": "server_error", "message": e["message"], "param": null}),
            );
            let mut r = self.snapshot(None);
            r["status"] = json!("failed");
            r["error"] = json!({"code": "server_error", "message": e["message"]});
            self.emit("response.failed", json!({"response": r}));
            return;
        }
        if !c["usage"].is_null() {
            self.usage = usage(&c["usage"]);
        }
        feed_choice(c, self);
    }

    /// After the last chunk: close the open item and complete the response. A
    /// stream that ended without a finish reason was cut: it fails, visibly.
    fn end(&mut self) {
        if self.failed {
            return;
        }
        let Some(finish) = self.finish.clone() else {
            let mut r = self.snapshot(None);
            r["status"] = json!("failed");
            r["error"] = json!({"code": "server_error", "message": "the answer ended before it was complete"});
            self.emit("response.failed", json!({"response": r}));
            return;
        };
        if self.items.is_empty() {
            self.open_item(Item::Text(String::new()));
        }
        self.close();
        let r = self.snapshot(Some(&finish));
        let ty = if finish == "length" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        if let Some(done) = self.done.take() {
            done(&r);
        }
        self.emit(ty, json!({"response": r}));
    }
}

pub(super) fn stream_answer(resp: Response, req: Value, done: Option<Done>) -> Response {
    let chunks = sse_chunks(resp).boxed();
    let ev = Events {
        req,
        done,
        usage: usage(&Value::Null),
        ..Default::default()
    };
    let events = stream::unfold(
        (chunks, ev, false, false),
        |(mut chunks, mut ev, mut started, mut ended)| async move {
            loop {
                if !ev.out.is_empty() {
                    let v = ev.out.remove(0);
                    let name = v["type"].as_str().unwrap_or("message").to_string();
                    let e = SseEvent::default().event(name).data(v.to_string());
                    return Some((Ok::<_, Infallible>(e), (chunks, ev, started, ended)));
                }
                if ended {
                    return None;
                }
                match chunks.next().await {
                    Some(c) => {
                        if !started && c.get("error").is_none() {
                            started = true;
                            ev.start(&c);
                        }
                        ev.chunk(&c);
                    }
                    None => {
                        ev.end();
                        ended = true;
                    }
                }
            }
        },
    );
    Sse::new(events).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_follow_the_items() {
        let mut ev = Events {
            req: json!({}),
            ..Default::default()
        };
        let c0 = json!({"id": "chatcmpl-abc", "model": "m", "created": 5,
            "choices": [{"delta": {"role": "assistant", "content": "Hi"}}]});
        ev.start(&c0);
        ev.chunk(&c0);
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}));
        ev.chunk(&json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}));
        ev.chunk(&json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}));
        ev.end();
        let names: Vec<&str> = ev.out.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seq: Vec<u64> = ev
            .out
            .iter()
            .map(|v| v["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..14).collect::<Vec<_>>());
        // Every event names its item by the id the item itself carries.
        assert_eq!(ev.out[4]["item_id"], ev.out[7]["item"]["id"]);
        assert_eq!(ev.out[9]["item_id"], ev.out[12]["item"]["id"]);
        assert_eq!(ev.out[12]["item"]["id"], "fc_abc_1");
        let done = &ev.out[13]["response"];
        assert_eq!(
            (done["id"].as_str(), done["status"].as_str()),
            (Some("resp_abc"), Some("completed"))
        );
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["total_tokens"], 10);
    }

    #[test]
    fn a_cut_stream_fails_visibly() {
        let mut ev = Events {
            req: json!({}),
            ..Default::default()
        };
        let c0 = json!({"id": "chatcmpl-x", "choices": [{"delta": {"content": "Hal"}}]});
        ev.start(&c0);
        ev.chunk(&c0);
        ev.end();
        let last = ev.out.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
    }
}
