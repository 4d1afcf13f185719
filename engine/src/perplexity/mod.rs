//! Perplexity as llama-perplexity measures it (tools/perplexity/perplexity.cpp):
//! the text tokenized once, cut into chunks of `n_ctx` tokens, each chunk
//! evaluated from an empty context with its first token replaced by BOS (where
//! the model adds one), and the loss counted over the second half of each chunk
//! only, so every scored token has at least `n_ctx / 2` tokens before it.
//! Several chunks share one forward step when `n_batch` holds them, as
//! llama-perplexity's `n_seq` does; the numbers do not depend on it.

use rayon::prelude::*;

use crate::models::{Batch, BatchRow, Model};
use crate::EngineError;

pub mod kld;

/// How the text is cut and fed (llama-perplexity's `-c`, `-b`, `--chunks`).
#[derive(Clone, Copy, Debug)]
pub struct PplOptions {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Tokens per forward step; `n_batch / n_ctx` chunks go in one step when it is larger.
    pub n_batch: usize,
    /// Chunks to evaluate at most (None: every whole chunk of the text).
    pub n_chunks: Option<usize>,
}

impl PplOptions {
    /// Chunks evaluated side by side in one step.
    pub fn n_seq(&self) -> usize {
        (self.n_batch / self.n_ctx).max(1)
    }

    /// Tokens per forward step, as llama-perplexity clamps `n_batch` to `n_seq * n_ctx`.
    pub fn step(&self) -> usize {
        self.n_batch.min(self.n_seq() * self.n_ctx)
    }

    /// KV cells the model needs: one chunk's worth per chunk in a step.
    pub fn n_cells(&self) -> usize {
        self.n_seq() * self.n_ctx
    }

    /// The first scored position of a chunk.
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Checks the settings against the model's training context and the text's
    /// length; returns how many chunks will be evaluated.
    pub fn check(&self, n_tokens: usize, n_ctx_train: usize) -> Result<usize, EngineError> {
        if self.n_ctx < 8 {
            return Err(EngineError::Config(format!(
                "--ctx {} is too small: a chunk needs at least 8 tokens",
                self.n_ctx
            )));
        }
        if self.n_batch == 0 {
            return Err(EngineError::Config("--batch must be at least 1".into()));
        }
        if n_ctx_train > 0 && self.n_ctx > n_ctx_train {
            return Err(EngineError::Config(format!("--ctx {} is over the model's training context of {n_ctx_train} tokens: give --ctx {n_ctx_train} or less", self.n_ctx)));
        }
        if self.n_chunks == Some(0) {
            return Err(EngineError::Config("--chunks must be at least 1".into()));
        }
        if n_tokens < 2 * self.n_ctx {
            return Err(EngineError::Config(format!(
                "the text tokenizes to only {n_tokens} tokens; perplexity with --ctx {} needs at least {}: give a longer text or a smaller --ctx",
                self.n_ctx,
                2 * self.n_ctx
            )));
        }
        let max = n_tokens / self.n_ctx;
        Ok(self.n_chunks.map_or(max, |k| k.min(max)))
    }
}

/// The logits of one evaluated chunk, for the positions that are scored.
pub struct ChunkLogits<'a> {
    /// 0-based chunk index.
    pub index: usize,
    /// The chunk's tokens as the text has them (not the BOS put in for evaluation).
    pub tokens: &'a [u32],
    /// `[n_ctx - 1 - first][n_vocab]`: row `i` is the prediction at position
    /// `first + i`, of `tokens[first + i + 1]`.
    pub logits: &'a [f32],
}

/// Runs the model over every chunk and hands each chunk's scored logits to `f`.
/// The model must have `opts.n_cells()` KV cells. Each chunk starts from an
/// empty context: positions restart at 0 on its own cells, which are written
/// before they are read, so no old entry is ever attended to.
pub fn eval_chunks(
    model: &mut Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PplOptions,
    f: impl FnMut(ChunkLogits) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let n_chunk = opts.check(tokens.len(), model.cfg.n_ctx_train)?;
    run_chunks(model, tokens, bos, opts, n_chunk, f)
}

/// `eval_chunks` over exactly `n_chunk` chunks of `tokens`, without the text-length
/// check (a KL-divergence base file fixes the tokens and the chunk count).
pub fn run_chunks(
    model: &mut Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PplOptions,
    n_chunk: usize,
    mut f: impl FnMut(ChunkLogits) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    if tokens.len() < n_chunk * opts.n_ctx {
        return Err(EngineError::Internal(format!(
            "{} tokens do not make {n_chunk} chunks of {}",
            tokens.len(),
            opts.n_ctx
        )));
    }
    if model.n_cells < opts.n_cells() {
        return Err(EngineError::Internal(format!(
            "the model has {} KV cells, perplexity needs {}",
            model.n_cells,
            opts.n_cells()
        )));
    }
    let (n_ctx, first, n_vocab) = (opts.n_ctx, opts.first(), model.cfg.n_vocab);
    let n_seq = opts.n_seq();
    let step = opts.step();
    let per_seq = n_ctx - first;
    let mut logits: Vec<Vec<f32>> = Vec::new();
    let mut out = Vec::new();
    for i in (0..n_chunk).step_by(n_seq) {
        let n_seq_batch = n_seq.min(n_chunk - i);
        for l in logits.iter_mut() {
            l.clear();
        }
        logits.resize_with(n_seq_batch, Vec::new);
        let seq_cells: Vec<Vec<u32>> = (0..n_seq_batch)
            .map(|s| ((s * n_ctx) as u32..((s + 1) * n_ctx) as u32).collect())
            .collect();
        // With n_seq > 1 one step holds whole chunks; otherwise a chunk takes ceil(n_ctx / step) steps.
        let per_step = step.min(n_ctx);
        for b0 in (0..n_ctx).step_by(per_step) {
            let len = per_step.min(n_ctx - b0);
            let mut rows = Vec::with_capacity(n_seq_batch * len);
            for s in 0..n_seq_batch {
                let chunk = &tokens[(i + s) * n_ctx..(i + s + 1) * n_ctx];
                for (pos, &t) in chunk.iter().enumerate().skip(b0).take(len) {
                    let token = match (pos, bos) {
                        (0, Some(b)) => b,
                        _ => t,
                    };
                    rows.push(BatchRow {
                        token,
                        seq: s as u32,
                        pos: pos as u32,
                        logits: pos >= first,
                    });
                }
            }
            let batch = Batch {
                rows,
                seq_cells: seq_cells.iter().map(|c| c[..b0 + len].to_vec()).collect(),
            };
            model.forward_into(&batch, &mut out)?;
            // The logit rows come in row order: each sequence's wanted rows of this step, in turn.
            let wanted = (b0 + len).saturating_sub(first.max(b0));
            for (s, l) in logits.iter_mut().enumerate() {
                l.extend_from_slice(&out[s * wanted * n_vocab..(s + 1) * wanted * n_vocab]);
            }
        }
        for (s, l) in logits.iter().enumerate() {
            debug_assert_eq!(l.len(), per_seq * n_vocab);
            let idx = i + s;
            f(ChunkLogits {
                index: idx,
                tokens: &tokens[idx * n_ctx..(idx + 1) * n_ctx],
                logits: &l[..(per_seq - 1) * n_vocab],
            })?;
        }
    }
    Ok(())
}

/// `-log p(tok)` under `logits`, computed as llama-perplexity's `log_softmax`
/// (float max, double sum of float exps).
pub fn nll(logits: &[f32], tok: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    -((logits[tok as usize] - max) as f64 - sum.ln())
}

/// The running and final figures of a perplexity run.
#[derive(Clone, Debug, Default)]
pub struct PplResult {
    /// The running estimate after each chunk (`[1]..`, as llama-perplexity prints it).
    pub running: Vec<f64>,
    /// Scored tokens.
    pub count: usize,
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// llama-perplexity's uncertainty: ppl * sqrt(var(nll) / (count - 1));
    /// None where the variance comes out non-positive.
    pub err: Option<f64>,
}

/// Sums of the negative log-likelihoods, as llama-perplexity keeps them.
#[derive(Clone, Debug, Default)]
pub struct PplAccumulator {
    nll: f64,
    nll2: f64,
    count: usize,
    running: Vec<f64>,
}

impl PplAccumulator {
    /// Scores one chunk; returns the running estimate.
    pub fn add(
        &mut self,
        c: &ChunkLogits,
        n_vocab: usize,
        pool: Option<&rayon::ThreadPool>,
    ) -> f64 {
        let first = c.tokens.len() / 2;
        let targets = &c.tokens[first + 1..];
        let score = || -> Vec<f64> {
            c.logits
                .par_chunks(n_vocab)
                .zip(targets.par_iter())
                .map(|(row, &t)| nll(row, t))
                .collect()
        };
        let v = match pool {
            Some(p) => p.install(score),
            None => score(),
        };
        for x in v {
            self.nll += x;
            self.nll2 += x * x;
        }
        self.count += targets.len();
        let r = (self.nll / self.count as f64).exp();
        self.running.push(r);
        r
    }

    pub fn finish(self) -> PplResult {
        let n = self.count as f64;
        let mean = self.nll / n;
        let ppl = mean.exp();
        let var = self.nll2 / n - mean * mean;
        let err = (var > 0.0 && self.count > 1).then(|| (var / (n - 1.0)).sqrt() * ppl);
        PplResult {
            running: self.running,
            count: self.count,
            ppl,
            err,
        }
    }
}

/// The perplexity of `model` on `tokens` (tokenized once, BOS as the model adds
/// it); `on_chunk(k, running)` sees the running estimate after chunk k (1-based).
pub fn perplexity(
    model: &mut Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PplOptions,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PplResult, EngineError> {
    let n_vocab = model.cfg.n_vocab;
    let pool = model.thread_pool();
    let mut acc = PplAccumulator::default();
    eval_chunks(model, tokens, bos, opts, |c| {
        let r = acc.add(&c, n_vocab, pool.as_deref());
        on_chunk(c.index + 1, r);
        Ok(())
    })?;
    Ok(acc.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_minus_log_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..3 {
            let want = -((l[t] as f64).exp() / z).ln();
            assert!((nll(&l, t as u32) - want).abs() < 1e-6, "{t}");
        }
    }

    #[test]
    fn error_formula_is_llama_perplexitys() {
        let mut acc = PplAccumulator::default();
        // Two rows over a 2-token vocabulary, targets 1 and 0 (tokens[first + 1..]).
        let tokens = [0u32, 0, 0, 0, 1, 0];
        let logits = [0.0f32, 1.0, 0.0, 3.0];
        let c = ChunkLogits {
            index: 0,
            tokens: &tokens,
            logits: &logits,
        };
        acc.add(&c, 2, None);
        let r = acc.finish();
        let a = -(1f64.exp() / (1.0 + 1f64.exp())).ln();
        let b = -(1.0 / (1.0 + 3f64.exp())).ln();
        let mean = (a + b) / 2.0;
        assert_eq!(r.count, 2);
        assert!((r.ppl - mean.exp()).abs() < 1e-6);
        let var = (a * a + b * b) / 2.0 - mean * mean;
        assert!((r.err.unwrap() - (var / 1.0).sqrt() * mean.exp()).abs() < 1e-6);
    }

    #[test]
    fn bad_settings_are_one_clear_error() {
        let o = PplOptions {
            n_ctx: 512,
            n_batch: 512,
            n_chunks: None,
        };
        assert!(o
            .check(1000, 8192)
            .unwrap_err()
            .to_string()
            .contains("only 1000 tokens"));
        assert!(o
            .check(5000, 256)
            .unwrap_err()
            .to_string()
            .contains("training context of 256"));
        assert_eq!(o.check(5000, 8192).unwrap(), 9);
        assert_eq!(
            PplOptions {
                n_chunks: Some(3),
                ..o
            }
            .check(5000, 8192)
            .unwrap(),
            3
        );
        let big = PplOptions { n_batch: 2048, ..o };
        assert_eq!((big.n_seq(), big.step(), big.n_cells()), (4, 2048, 2048));
        let odd = PplOptions { n_batch: 1000, ..o };
        assert_eq!((odd.n_seq(), odd.step()), (1, 512));
    }
}
