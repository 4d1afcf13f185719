//! The bounded in-memory store behind `previous_response_id`, `GET` and
//! `DELETE /v1/responses/{id}`.
//!
//! A stored response keeps its `response` object and the conversation it ends:
//! the input items it was answered from (those of its previous response
//! first) followed by its own output items, so a follow-up request is that
//! conversation plus its new input. Nothing is written to disk: a restart
//! forgets every response, as llama-server's does.
//!
//! The store holds at most `max_responses` responses and `max_bytes` of their
//! JSON; past either bound the oldest go first. A response larger than the
//! byte bound on its own is not kept (a follow-up to it is a 404 that says to
//! send the conversation in `input`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

/// Responses kept by default.
pub const DEFAULT_MAX_RESPONSES: usize = 1024;
/// JSON bytes kept by default (responses and their conversations).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

struct Entry {
    response: Value,
    /// Input items, then the response's output items.
    conversation: Vec<Value>,
    /// How many of `conversation` were input.
    n_input: usize,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Ids, oldest first (deleted ones are skipped when met).
    order: VecDeque<String>,
    bytes: usize,
}

pub struct Store {
    inner: Mutex<Inner>,
    max_responses: usize,
    max_bytes: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(DEFAULT_MAX_RESPONSES, DEFAULT_MAX_BYTES)
    }
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0)
}

impl Store {
    pub fn new(max_responses: usize, max_bytes: usize) -> Store {
        Store {
            inner: Mutex::new(Inner::default()),
            max_responses,
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data: every
        // update below is completed before the guard drops.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `response` (its `id` and `output`) after `input`, the items it was
    /// answered from. Returns whether it was kept.
    pub fn put(&self, response: Value, input: Vec<Value>) -> bool {
        let Some(id) = response["id"].as_str().map(str::to_string) else {
            return false;
        };
        let n_input = input.len();
        let mut conversation = input;
        conversation.extend(response["output"].as_array().cloned().unwrap_or_default());
        let bytes = size(&response) + conversation.iter().map(size).sum::<usize>();
        if self.max_responses == 0 || bytes > self.max_bytes {
            return false;
        }
        let mut g = self.lock();
        if let Some(old) = g.map.remove(&id) {
            g.bytes -= old.bytes;
        }
        while g.map.len() >= self.max_responses || g.bytes + bytes > self.max_bytes {
            let Some(oldest) = g.order.pop_front() else {
                break;
            };
            if let Some(e) = g.map.remove(&oldest) {
                g.bytes -= e.bytes;
            }
        }
        g.bytes += bytes;
        g.order.push_back(id.clone());
        g.map.insert(
            id,
            Entry {
                response,
                conversation,
                n_input,
                bytes,
            },
        );
        true
    }

    /// The stored `response` object.
    pub fn get(&self, id: &str) -> Option<Value> {
        self.lock().map.get(id).map(|e| e.response.clone())
    }

    /// The conversation a follow-up to `id` continues: its input, then its output.
    pub fn conversation(&self, id: &str) -> Option<Vec<Value>> {
        self.lock().map.get(id).map(|e| e.conversation.clone())
    }

    /// The input items `id` was answered from.
    pub fn input_items(&self, id: &str) -> Option<Vec<Value>> {
        self.lock()
            .map
            .get(id)
            .map(|e| e.conversation[..e.n_input].to_vec())
    }

    /// Forgets `id`; whether it was there.
    pub fn delete(&self, id: &str) -> bool {
        let mut g = self.lock();
        match g.map.remove(id) {
            Some(e) => {
                g.bytes -= e.bytes;
                if let Some(at) = g.order.iter().position(|x| x == id) {
                    g.order.remove(at);
                }
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    fn len_bytes(&self) -> (usize, usize) {
        let g = self.lock();
        (g.map.len(), g.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(id: &str, text: &str) -> Value {
        json!({"id": id, "object": "response", "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
        ]})
    }

    #[test]
    fn a_follow_up_continues_input_then_output() {
        let s = Store::default();
        let input = vec![json!({"type": "message", "role": "user", "content": "hi"})];
        assert!(s.put(resp("resp_1", "hello"), input.clone()));
        let c = s.conversation("resp_1").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], input[0]);
        assert_eq!(c[1]["content"][0]["text"], "hello");
        assert_eq!(s.input_items("resp_1").unwrap(), input);
        assert_eq!(s.get("resp_1").unwrap()["id"], "resp_1");
        assert!(s.get("resp_2").is_none());
        assert!(s.delete("resp_1"));
        assert!(!s.delete("resp_1"));
        assert!(s.conversation("resp_1").is_none());
        assert_eq!(s.len_bytes(), (0, 0));
    }

    #[test]
    fn the_oldest_go_first_past_either_bound() {
        let s = Store::new(3, usize::MAX);
        for i in 0..5 {
            assert!(s.put(resp(&format!("r{i}"), "x"), vec![]));
        }
        assert_eq!(s.len_bytes().0, 3);
        assert!(s.get("r0").is_none() && s.get("r1").is_none());
        assert!(s.get("r2").is_some() && s.get("r4").is_some());

        let one = size(&resp("r0", "x")) * 2; // response + its output item, about
        let s = Store::new(100, 2 * one);
        for i in 0..6 {
            s.put(resp(&format!("r{i}"), "x"), vec![]);
        }
        let (n, bytes) = s.len_bytes();
        assert!(bytes <= 2 * one, "{bytes} > {}", 2 * one);
        assert!((1..=2).contains(&n), "{n}");
        assert!(s.get("r5").is_some(), "the newest stays");
        assert!(s.get("r0").is_none());
        // Deleting an id in the middle keeps the accounting right.
        s.delete("r5");
        assert_eq!(s.len_bytes().0, n - 1);
    }

    #[test]
    fn a_response_over_the_byte_bound_is_not_kept() {
        let s = Store::new(10, 64);
        assert!(!s.put(resp("big", &"y".repeat(100)), vec![]));
        assert!(s.get("big").is_none());
        assert_eq!(s.len_bytes(), (0, 0));
        let off = Store::new(0, 1 << 20);
        assert!(!off.put(resp("a", "x"), vec![]));
    }
}
