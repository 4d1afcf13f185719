//! The engine thread: continuous batching over all active sequences. Each
//! step carries prompt chunks and single decode tokens together; new requests
//! join between steps; cancelled ones free their pages within a step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::Sender;

use super::busy::{self, StepRows};
use super::masks;
use super::*;
use crate::constrain::{Advance, SeqConstraint};
use crate::gguf::Gguf;
use crate::kv::{KvPages, SeqKv, PAGE};
use crate::models::{Batch, BatchRow, Model};
use crate::sampler::{self, Sampler};
use crate::tokenizer::IncrementalDecoder;

/// Prompt tokens evaluated per step across all sequences (bounds step latency).
const STEP_TOKENS: usize = 512;

pub(super) enum Command {
    Generate(Box<Job>),
    Shutdown,
}

pub(super) struct Job {
    req: Request,
    tokens: Vec<u32>,
    constraint: Option<SeqConstraint>,
    tx: Sender<Event>,
    cancel: CancelToken,
    submitted: Instant,
}

impl Job {
    pub(super) fn new(req: Request, tokens: Vec<u32>, constraint: Option<SeqConstraint>, tx: Sender<Event>, cancel: CancelToken) -> Job {
        Job { req, tokens, constraint, tx, cancel, submitted: Instant::now() }
    }

    /// Sends without waiting. A token that would leave no room for the closing
    /// event instead cancels the request with an error (the reader is
    /// [`EVENT_BACKLOG`] events behind); the request is reaped at the next step.
    fn send(&self, ev: Event) {
        if matches!(ev, Event::Token { .. }) && self.tx.capacity() <= 1 {
            if !self.cancel.is_cancelled() {
                self.cancel.cancel();
                let _ = self.tx.try_send(Event::Error(format!(
                    "the client fell {EVENT_BACKLOG} events behind the stream; the request was cancelled (read the stream as it comes)"
                )));
            }
            return;
        }
        let _ = self.tx.try_send(ev);
    }
}

const TTFT_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ITL_BOUNDS: [f64; 10] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

#[derive(Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, &b) in self.counts.iter_mut().zip(bounds) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.n += 1;
    }
    fn buckets(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        bounds.iter().enumerate().map(|(i, &b)| (b, self.counts.get(i).copied().unwrap_or(0))).collect()
    }
}

/// Counters shared between the engine thread and `Engine`.
pub(super) struct Shared {
    pub queued: AtomicUsize,
    pub max_seq_len: usize,
    active: AtomicUsize,
    requests: AtomicU64,
    cancelled: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    gen_tokens: AtomicU64,
    pages_used: AtomicUsize,
    pages_cached: AtomicUsize,
    pages_total: usize,
    hist: Mutex<(Hist, Hist)>,
    clock: Mutex<busy::Clock>,
    /// Grammar masks are computed while the forward pass runs (masks.rs).
    pub mask_overlap: AtomicBool,
    /// Masks computed on the helper thread, during a forward pass.
    pub masks_overlapped: AtomicU64,
}

impl Shared {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        let clock = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
        MetricsSnapshot {
            requests_total: self.requests.load(Ordering::Relaxed),
            requests_cancelled: self.cancelled.load(Ordering::Relaxed),
            prompt_tokens_total: self.prompt_tokens.load(Ordering::Relaxed),
            prompt_tokens_cached_total: self.cached_tokens.load(Ordering::Relaxed),
            generated_tokens_total: self.gen_tokens.load(Ordering::Relaxed),
            queue_depth: self.queued.load(Ordering::Relaxed),
            active_sequences: self.active.load(Ordering::Relaxed),
            kv_pages_used: self.pages_used.load(Ordering::Relaxed),
            kv_pages_cache_only: self.pages_cached.load(Ordering::Relaxed),
            kv_pages_total: self.pages_total,
            kv_page_size: PAGE,
            ttft_buckets: h.0.buckets(&TTFT_BOUNDS),
            ttft_sum: h.0.sum,
            ttft_count: h.0.n,
            itl_buckets: h.1.buckets(&ITL_BOUNDS),
            itl_sum: h.1.sum,
            itl_count: h.1.n,
            busy_seconds_total: clock.busy_s,
            idle_seconds_total: clock.idle_s,
        }
    }
}

/// A sequence being generated.
struct Seq {
    job: Job,
    kv: SeqKv,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    n_prompt: usize,
    /// Positions whose KV is in the cache.
    n_past: usize,
    cached: usize,
    sampler: Sampler,
    /// The grammar this sequence must follow, if any.
    constraint: Option<SeqConstraint>,
    decoder: IncrementalDecoder,
    /// Text decoded but held back (it may start a stop string).
    pending: String,
    generated: usize,
    /// The stop string that ended the sequence, if one did.
    stop_word: Option<String>,
    t_first: Option<Instant>,
    t_prompt_start: Instant,
    t_last: Option<Instant>,
    /// This sequence's shares of busy time so far (busy.rs), seconds.
    prefill_s: f64,
    decode_s: f64,
}

pub(super) fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
    if cfg.n_parallel == 0 {
        return Err(EngineError::Config("--parallel must be at least 1".into()));
    }
    let path = crate::registry::resolve_model(&cfg.model, cfg.pull_if_missing)?;
    let gguf = Gguf::open(&path)?;
    let tokenizer = Arc::new(crate::tokenizer::Tokenizer::from_gguf(&gguf)?);
    let template = Arc::new(crate::chat::ChatTemplate::from_gguf(&gguf, cfg.chat_template.clone())?);
    let n_ctx = cfg.n_ctx.max(PAGE).div_ceil(PAGE) * PAGE;
    let backend = owl_backends::open(&cfg.device, cfg.threads)?;
    let model = Model::load(&gguf, backend, n_ctx)?;
    if tokenizer.vocab_size() > model.cfg.n_vocab {
        return Err(EngineError::BadModel(format!("{} tokens but the embedding has {} rows", tokenizer.vocab_size(), model.cfg.n_vocab)));
    }
    let is_lock_name = !std::path::Path::new(&cfg.model).is_file();
    let name = if is_lock_name { cfg.model.clone() } else { path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default() };
    let mut by_type: std::collections::HashMap<&str, u64> = Default::default();
    for t in gguf.tensors() {
        if t.dims.len() >= 2 {
            *by_type.entry(t.ty.name()).or_default() += t.size as u64;
        }
    }
    // The file's own name for its mix (Q4_K_M...), as llama.cpp shows it; else
    // the type holding the most bytes.
    let quant = gguf
        .metadata()
        .get_opt::<u32>("general.file_type")
        .ok()
        .flatten()
        .and_then(file_type_name)
        .map(str::to_string)
        .unwrap_or_else(|| by_type.into_iter().max_by_key(|&(_, b)| b).map(|(n, _)| n.to_string()).unwrap_or_default());
    let info = ModelInfo {
        name,
        path: path.clone(),
        arch: model.cfg.arch.name.to_string(),
        quant,
        n_params: gguf.tensors().iter().map(|t| t.n_elements()).sum(),
        file_size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        n_vocab: model.cfg.n_vocab,
        n_ctx_train: model.cfg.n_ctx_train,
        n_ctx,
        n_parallel: cfg.n_parallel,
        device: model.backend_name(),
        threads: model.threads(),
    };
    let kv = KvPages::new(n_ctx);
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        max_seq_len: n_ctx,
        active: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        cancelled: AtomicU64::new(0),
        prompt_tokens: AtomicU64::new(0),
        cached_tokens: AtomicU64::new(0),
        gen_tokens: AtomicU64::new(0),
        pages_used: AtomicUsize::new(0),
        pages_cached: AtomicUsize::new(0),
        pages_total: kv.n_pages(),
        hist: Mutex::new((Hist::default(), Hist::default())),
        clock: Mutex::new(busy::Clock::default()),
        mask_overlap: AtomicBool::new(masks::overlap_default()),
        masks_overlapped: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.max(1));
    let mut w = Worker {
        model,
        kv,
        tok: tokenizer.clone(),
        shared: shared.clone(),
        rx,
        waiting: VecDeque::new(),
        active: Vec::new(),
        n_parallel: cfg.n_parallel,
        logits: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("owl-engine".into())
        .spawn(move || match w.model.thread_pool() {
            // The step loop runs inside the CPU pool, so each op's parallel
            // region starts without handing work across threads.
            Some(pool) => pool.install(|| w.run()),
            None => w.run(),
        })
        .map_err(|e| EngineError::Internal(format!("cannot start the engine thread: {e}")))?;
    Ok(Engine { tx, info, tokenizer, template, shared, queue_capacity: cfg.queue_capacity.max(1), constrain_env: Default::default(), thread: Some(thread) })
}

struct Worker {
    model: Model,
    kv: KvPages,
    tok: Arc<crate::tokenizer::Tokenizer>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    waiting: VecDeque<Job>,
    active: Vec<Seq>,
    n_parallel: usize,
    /// The last step's logits rows (see `Model::forward_into`), kept for reuse.
    logits: Vec<f32>,
}

fn is_gone(job: &Job) -> bool {
    job.cancel.is_cancelled() || job.tx.is_closed()
}

impl Worker {
    fn run(&mut self) {
        loop {
            // 1. Take new requests: block only when idle.
            if self.active.is_empty() && self.waiting.is_empty() {
                let t_idle = Instant::now();
                let cmd = self.rx.recv();
                self.clock().idle_s += t_idle.elapsed().as_secs_f64();
                match cmd {
                    Ok(Command::Generate(j)) => self.enqueue(*j),
                    Ok(Command::Shutdown) | Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(Command::Generate(j)) => self.enqueue(*j),
                    Ok(Command::Shutdown) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if self.active.is_empty() && self.waiting.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            // 2. Drop cancelled requests, admit waiting ones.
            self.reap_cancelled();
            self.admit();
            if self.active.is_empty() {
                continue;
            }
            // 3. One forward step over every active sequence.
            if let Err(e) = self.step() {
                for s in self.active.drain(..) {
                    s.job.send(Event::Error(e.to_string()));
                    self.kv.drop_seq(s.kv);
                }
            }
            self.publish();
        }
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, busy::Clock> {
        self.shared.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&mut self, j: Job) {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.waiting.push_back(j);
    }

    fn publish(&self) {
        self.shared.active.store(self.active.len(), Ordering::Relaxed);
        self.shared.pages_used.store(self.kv.used(), Ordering::Relaxed);
        self.shared.pages_cached.store(self.kv.cache_only(), Ordering::Relaxed);
        self.shared.queued.store(self.waiting.len(), Ordering::Relaxed);
    }

    fn reap_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|j| !is_gone(j));
        let mut n = before - self.waiting.len();
        let mut i = 0;
        while i < self.active.len() {
            if is_gone(&self.active[i].job) {
                let s = self.active.swap_remove(i);
                let usage = Usage { prompt_tokens: s.n_prompt, completion_tokens: s.generated, cached_tokens: s.cached };
                let timings = Timings { prefill_s: s.prefill_s, decode_s: s.decode_s, ..Timings::default() };
                s.job.send(Event::Done { finish_reason: FinishReason::Cancelled, usage, timings, stop_word: None });
                self.kv.drop_seq(s.kv);
                n += 1;
            } else {
                i += 1;
            }
        }
        self.shared.cancelled.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            self.publish();
        }
    }

    fn admit(&mut self) {
        while self.active.len() < self.n_parallel {
            let Some(job) = self.waiting.pop_front() else { break };
            let (kv, cached) = self.kv.start(&job.tokens);
            let n_prompt = job.tokens.len();
            // The prompt's pages must be had now; else wait for running sequences to finish.
            let mut kv = kv;
            if !self.kv.reserve(&mut kv, n_prompt) {
                self.kv.drop_seq(kv);
                if self.active.is_empty() {
                    job.send(Event::Error(format!(
                        "the prompt of {n_prompt} tokens does not fit the free KV cache ({} cells); raise --ctx",
                        self.kv.n_pages() * PAGE
                    )));
                    continue;
                }
                self.waiting.push_front(job);
                break;
            }
            job.send(Event::Started { prompt_tokens: n_prompt, cached_tokens: cached });
            self.shared.prompt_tokens.fetch_add(n_prompt as u64, Ordering::Relaxed);
            self.shared.cached_tokens.fetch_add(cached as u64, Ordering::Relaxed);
            let sampler = Sampler::new(job.req.sampling.clone());
            let mut job = job;
            let constraint = job.constraint.take();
            self.active.push(Seq {
                tokens: job.tokens.clone(),
                job,
                kv,
                n_prompt,
                n_past: cached,
                cached,
                sampler,
                constraint,
                decoder: IncrementalDecoder::new(),
                pending: String::new(),
                generated: 0,
                stop_word: None,
                t_first: None,
                t_prompt_start: Instant::now(),
                t_last: None,
                prefill_s: 0.0,
                decode_s: 0.0,
            });
        }
        self.publish();
    }

    fn step(&mut self) -> Result<(), EngineError> {
        // Every decoding sequence gets one row; prompts share the rest of the step's budget in order.
        let t_step = Instant::now();
        let mut step_rows = vec![StepRows::default(); self.active.len()];
        let mut batch = Batch::default();
        let mut budget = STEP_TOKENS;
        let mut out_of_room = Vec::new();
        let mut sampling = vec![false; self.active.len()];
        for (si, s) in self.active.iter_mut().enumerate() {
            let remaining = s.tokens.len() - s.n_past;
            let take = if s.n_past < s.n_prompt { remaining.min(budget.max(1)) } else { remaining };
            if take == 0 {
                continue;
            }
            budget = budget.saturating_sub(take);
            let end = s.n_past + take;
            if !self.kv.reserve(&mut s.kv, end) {
                out_of_room.push(si);
                continue;
            }
            // This step's rows finish the sequence's known tokens: it samples one.
            sampling[si] = end == s.tokens.len();
            let seq = batch.seq_cells.len() as u32;
            batch.seq_cells.push(s.kv.cells(end));
            let prefill = end.min(s.n_prompt).saturating_sub(s.n_past);
            step_rows[si] = StepRows { prefill, decode: take - prefill };
            for pos in s.n_past..end {
                batch.rows.push(BatchRow { token: s.tokens[pos], seq, pos: pos as u32, logits: pos + 1 == end && end >= s.n_prompt });
            }
        }
        // A sequence that found no free page waits for others to finish; only
        // when nothing at all can run is the budget truly spent for it.
        let stalled = batch.rows.is_empty();
        // The logits buffer lives in the worker and is reused step after step.
        let mut logits = std::mem::take(&mut self.logits);
        // The masks of the constrained sequences that sample this step (their prompt
        // done with this step's rows) are computed while the forward pass runs (masks.rs).
        let mut masks: Vec<Option<masks::StepMask>> = (0..self.active.len()).map(|_| None).collect();
        if stalled {
            logits.clear();
        } else {
            let constrained: Vec<(usize, &mut SeqConstraint)> = self
                .active
                .iter_mut()
                .enumerate()
                .filter(|(si, s)| sampling[*si] && s.constraint.as_ref().is_some_and(|c| c.is_active()))
                .filter_map(|(si, s)| s.constraint.as_mut().map(|c| (si, c)))
                .collect();
            let overlap = self.shared.mask_overlap.load(Ordering::Relaxed);
            let model = &mut self.model;
            let n_masks = constrained.len();
            let (r, computed, overlapped) = masks::forward_with_masks(constrained, overlap, || model.forward_into(&batch, &mut logits));
            r?;
            if overlapped {
                self.shared.masks_overlapped.fetch_add(n_masks as u64, Ordering::Relaxed);
            }
            for (si, m) in computed {
                masks[si] = Some(m);
            }
        }
        // Advance, sample and stream.
        let n_vocab = self.model.cfg.n_vocab;
        let mut li = 0;
        let mut seq_idx = 0;
        let mut finished: Vec<(usize, FinishReason)> = Vec::new();
        // Sequences whose grammar failed (a matcher error): they end with Event::Error.
        let mut errored: Vec<(usize, String)> = Vec::new();
        for (si, s) in self.active.iter_mut().enumerate() {
            if out_of_room.contains(&si) {
                if stalled {
                    finished.push((si, FinishReason::Length));
                }
                continue;
            }
            let remaining = s.tokens.len() - s.n_past;
            if remaining == 0 {
                continue;
            }
            let rows_of = batch.rows.iter().filter(|r| r.seq == seq_idx).count();
            seq_idx += 1;
            let was_prefilling = s.n_past < s.n_prompt;
            s.n_past += rows_of;
            if was_prefilling && s.n_past >= s.n_prompt {
                // The prompt's KV is written: its whole pages serve the same prompt at once
                // (the other `n` choices of a request), not only after this sequence ends.
                self.kv.share(&s.kv, &s.tokens[..s.n_prompt]);
            }
            if s.n_past < s.tokens.len() {
                continue; // prompt not done yet
            }
            // The mask and the sampler edit the row in place; only logprobs need it as the
            // model gave it, so only they pay for a copy (152k floats a step on Qwen).
            let l = &mut logits[li * n_vocab..(li + 1) * n_vocab];
            let wants_logprobs = s.job.req.logprobs_for.is_none_or(|n| s.generated < n);
            let post = s.job.req.sampling.post_sampling_probs;
            let raw = s.job.req.logprobs.filter(|_| wants_logprobs && !post).map(|_| l.to_vec());
            li += 1;
            // The grammar's mask goes on before penalties, top-k/p and temperature.
            if let Some(c) = s.constraint.as_mut() {
                // Computed with the forward pass; a lazy grammar still waiting for its
                // trigger has no entry (nothing to mask).
                let mask = match masks[si].take() {
                    Some(m) => m,
                    None => c.compute_mask(),
                };
                match mask {
                    Ok(Some(mask)) => c.apply_mask(&mask, l),
                    Ok(None) => {}
                    Err(e) => {
                        errored.push((si, e));
                        continue;
                    }
                }
            }
            let id = s.sampler.sample(l, &s.tokens);
            let now = Instant::now();
            {
                let mut h = self.shared.hist.lock().unwrap_or_else(|e| e.into_inner());
                match s.t_last {
                    None => h.0.observe(&TTFT_BOUNDS, (now - s.job.submitted).as_secs_f64()),
                    Some(t) => h.1.observe(&ITL_BOUNDS, (now - t).as_secs_f64()),
                }
            }
            if s.t_first.is_none() {
                s.t_first = Some(now);
            }
            s.t_last = Some(now);
            if (s.job.req.stop_at_eog && self.tok.is_eog(id)) || s.constraint.as_ref().is_some_and(|c| c.ends_with(id)) {
                finished.push((si, FinishReason::Stop));
                continue;
            }
            let mut complete = false;
            if let Some(c) = s.constraint.as_mut() {
                match c.advance(id) {
                    Ok(a) => complete = a == Advance::Complete,
                    Err(e) => {
                        errored.push((si, e));
                        continue;
                    }
                }
            }
            s.tokens.push(id);
            s.generated += 1;
            self.shared.gen_tokens.fetch_add(1, Ordering::Relaxed);
            let post_lp = s.job.req.logprobs.filter(|_| wants_logprobs && post).map(|n| {
                // After the sampler chain: the drawn-from distribution, as log-probabilities.
                let d = s.sampler.last_distribution();
                let p = d.iter().find(|x| x.0 == id).map_or(0.0, |x| x.1);
                TokenLogprob {
                    logprob: p.ln(),
                    top: d.iter().take(n).map(|&(t, p)| TopLogprob { id: t, text: self.tok.decode(&[t]), logprob: p.ln() }).collect(),
                }
            });
            let logprob = post_lp.or_else(|| s.job.req.logprobs.zip(raw).map(|(n, raw)| {
                let (lp, top) = sampler::logprobs(&raw, id, n);
                TokenLogprob {
                    logprob: lp,
                    top: top.into_iter().map(|(t, p)| TopLogprob { id: t, text: self.tok.decode(&[t]), logprob: p }).collect(),
                }
            }));
            s.pending.push_str(&s.decoder.push(&self.tok, id));
            let (emit, stopped) = split_stop(&mut s.pending, &s.job.req.stop);
            s.job.send(Event::Token { id, text: emit, logprob });
            if let Some(word) = stopped {
                s.stop_word = Some(word);
                finished.push((si, FinishReason::Stop));
            } else if complete {
                finished.push((si, FinishReason::Stop));
            } else if s.job.req.max_tokens.is_some_and(|m| s.generated >= m) || s.tokens.len() >= self.model.n_cells {
                finished.push((si, FinishReason::Length));
            }
        }
        // Charge the step's wall time before anything finishes, so every Done carries its whole share.
        if !stalled {
            let elapsed = t_step.elapsed().as_secs_f64();
            for (s, (p, d)) in self.active.iter_mut().zip(busy::split(elapsed, &step_rows)) {
                s.prefill_s += p;
                s.decode_s += d;
            }
            self.clock().busy_s += elapsed;
        }
        errored.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (si, e) in errored {
            // `finished` never holds an errored sequence; shift the later indices it does hold.
            for f in finished.iter_mut() {
                if f.0 > si {
                    f.0 -= 1;
                }
            }
            let s = self.active.remove(si);
            s.job.send(Event::Error(format!("constrained decoding failed: {e}")));
            self.kv.drop_seq(s.kv);
        }
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (si, reason) in finished {
            let mut s = self.active.swap_remove(si);
            // Whatever was held back (an incomplete character, a possible stop string) is text after all,
            // unless a stop string ended the sequence.
            if s.stop_word.is_none() {
                let tail = s.decoder.flush();
                s.pending.push_str(&tail);
                if !s.pending.is_empty() {
                    s.job.send(Event::Token { id: TEXT_ONLY, text: std::mem::take(&mut s.pending), logprob: None });
                }
            }
            let t_end = Instant::now();
            let first = s.t_first.unwrap_or(t_end);
            let prompt_ms = (first - s.t_prompt_start).as_secs_f64() * 1e3;
            let gen_ms = (t_end - first).as_secs_f64() * 1e3;
            let timings = Timings {
                ttft_ms: (first - s.job.submitted).as_secs_f64() * 1e3,
                prompt_ms,
                gen_ms,
                prompt_tps: if prompt_ms > 0.0 { (s.n_prompt - s.cached) as f64 / (prompt_ms / 1e3) } else { 0.0 },
                gen_tps: if gen_ms > 0.0 && s.generated > 1 { (s.generated - 1) as f64 / (gen_ms / 1e3) } else { 0.0 },
                prefill_s: s.prefill_s,
                decode_s: s.decode_s,
                constrain_ms: s.constraint.as_ref().map_or(0.0, |c| c.busy_s() * 1e3),
            };
            let usage = Usage { prompt_tokens: s.n_prompt, completion_tokens: s.generated, cached_tokens: s.cached };
            s.job.send(Event::Done { finish_reason: reason, usage, timings, stop_word: s.stop_word.take() });
            let valid = s.n_past;
            self.kv.finish(s.kv, &s.tokens, valid);
        }
        self.logits = logits;
        Ok(())
    }
}

/// Splits off the text that is safe to emit. Returns (text, stop): when a
/// stop string appears, the text before it is emitted, the rest dropped and the
/// stop string (the earliest in the text) returned; otherwise a tail that could
/// begin a stop string stays in `pending`.
fn split_stop(pending: &mut String, stops: &[String]) -> (String, Option<String>) {
    let stops: Vec<&str> = stops.iter().map(|s| s.as_str()).filter(|s| !s.is_empty()).collect();
    if let Some((at, word)) = stops.iter().filter_map(|s| pending.find(s).map(|at| (at, *s))).min_by_key(|m| m.0) {
        let out = pending[..at].to_string();
        let word = word.to_string();
        pending.clear();
        return (out, Some(word));
    }
    let mut hold = 0;
    for s in &stops {
        for k in (1..s.len().min(pending.len() + 1)).rev() {
            if pending.is_char_boundary(pending.len() - k) && s.is_char_boundary(k) && pending.ends_with(&s[..k]) {
                hold = hold.max(k);
                break;
            }
        }
    }
    let cut = pending.len() - hold;
    let out = pending[..cut].to_string();
    pending.drain(..cut);
    (out, None)
}


/// llama.cpp's `llama_ftype` names for `general.file_type`.
fn file_type_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        25 => "IQ4_NL",
        30 => "IQ4_XS",
        32 => "BF16",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::split_stop;

    #[test]
    fn stop_strings_hold_back_and_cut() {
        let stops = vec!["\n\nUser:".to_string()];
        let mut p = "Hello\n\nUs".to_string();
        assert_eq!(split_stop(&mut p, &stops), ("Hello".to_string(), None));
        assert_eq!(p, "\n\nUs");
        p.push_str("er: hi");
        assert_eq!(split_stop(&mut p, &stops), (String::new(), Some("\n\nUser:".to_string())));
        let mut p = "\n\nfine".to_string();
        assert_eq!(split_stop(&mut p, &stops), ("\n\nfine".to_string(), None));
        // The stop string earliest in the text is the one reported.
        let stops = vec!["b".to_string(), "a".to_string()];
        let mut p = "xaxb".to_string();
        assert_eq!(split_stop(&mut p, &stops), ("x".to_string(), Some("a".to_string())));
    }
}
