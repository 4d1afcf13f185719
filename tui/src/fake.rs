//! A stand-in model for tests and for trying the chat without weights: it
//! answers "You said: …" word by word, counts a token per word (plus 4 per
//! message), and refuses conversations that outgrow its context like the
//! engine does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::app::{Finish, LastRun, ModelStatus, Refusal, Settings, Turn};
use crate::runtime::{answer_room, ChatBackend, Loader, Reply, ReplyStream};

/// Loads [`EchoBackend`]s; any name but "missing" loads.
#[derive(Clone, Debug)]
pub struct EchoLoader {
    pub n_ctx: usize,
    /// Pause before each word.
    pub delay: Duration,
}

impl Loader for EchoLoader {
    fn prepare(&self, model: &str, _progress: bool) -> Result<(), String> {
        if model == "missing" {
            return Err("unknown model missing; known models: echo".into());
        }
        Ok(())
    }

    fn load(&self, model: &str) -> Result<Box<dyn ChatBackend>, String> {
        Ok(Box::new(EchoBackend {
            name: model.to_string(),
            n_ctx: self.n_ctx,
            delay: self.delay,
            requests: Arc::new(AtomicU64::new(0)),
        }))
    }

    fn models(&self, current: Option<&str>) -> Result<String, String> {
        Ok(format!(
            "Models: echo (current: {})",
            current.unwrap_or("none")
        ))
    }
}

pub struct EchoBackend {
    pub name: String,
    pub n_ctx: usize,
    pub delay: Duration,
    requests: Arc<AtomicU64>,
}

/// Tokens the fake counts for a conversation.
pub fn fake_tokens(turns: &[Turn]) -> usize {
    turns
        .iter()
        .map(|t| 4 + t.content.split_whitespace().count())
        .sum()
}

impl ChatBackend for EchoBackend {
    fn status(&self) -> ModelStatus {
        ModelStatus {
            name: self.name.clone(),
            device: "cpu".into(),
            n_ctx: self.n_ctx,
            ..ModelStatus::default()
        }
    }

    fn submit(&self, turns: &[Turn], settings: &Settings) -> Result<ReplyStream, Refusal> {
        let n_prompt = fake_tokens(turns);
        let room = answer_room(settings, self.n_ctx);
        if n_prompt + room > self.n_ctx {
            return Err(Refusal::ContextFull {
                n_prompt,
                room,
                n_ctx: self.n_ctx,
            });
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let last = turns.last().map_or("", |t| t.content.as_str());
        let mut words: Vec<String> = format!("You said: {last}")
            .split(' ')
            .map(|w| format!("{w} "))
            .collect();
        if let Some(max) = settings.max_tokens {
            words.truncate(max);
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancelled);
        let delay = self.delay;
        // 0: Started not sent yet; 1 + k: k words sent.
        let mut step = 0usize;
        let mut done = false;
        let next = move || -> Option<Reply> {
            if done {
                return None;
            }
            if step == 0 {
                step = 1;
                return Some(Reply::Started {
                    prompt_tokens: n_prompt,
                    cached_tokens: 0,
                });
            }
            let sent = step - 1;
            if sent < words.len() && !flag.load(Ordering::Relaxed) {
                std::thread::sleep(delay);
                step += 1;
                return Some(Reply::Token(words[sent].clone()));
            }
            done = true;
            let finish = if flag.load(Ordering::Relaxed) {
                Finish::Cancelled
            } else {
                Finish::Stop
            };
            let run = LastRun {
                prompt_tokens: n_prompt,
                cached_tokens: 0,
                completion_tokens: sent,
                prompt_tps: 500.0,
                gen_tps: 25.0,
                ..LastRun::default()
            };
            Some(Reply::Done { finish, run })
        };
        Ok(ReplyStream {
            next: Box::new(next),
            cancel: Arc::new(move || cancelled.store(true, Ordering::Relaxed)),
        })
    }

    fn stats(&self) -> String {
        format!(
            "Engine: echo · {} requests",
            self.requests.load(Ordering::Relaxed)
        )
    }
}
