//! KL divergence against a base model's saved log-probabilities, in
//! llama-perplexity's file format (`--kl-divergence-base FILE`), so a file
//! written by either tool is read by the other: the bytes `_logits_`, then
//! n_ctx, n_vocab and n_chunk as i32, the n_chunk * n_ctx tokens as i32, then
//! per chunk and scored position a row of `nv = 2 * ceil(n_vocab / 2) + 4` u16:
//! two f32 (scale, min log-prob) and each token's log-prob as
//! `min + scale * q`, q in 0..=65535, clamped 16 nats below the top logit.

use std::io::{Read, Write};

use rayon::prelude::*;

use super::ChunkLogits;
use crate::EngineError;

const MAGIC: &[u8; 8] = b"_logits_";

/// u16 slots a row takes in the file.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// llama-perplexity's `nearest_int`: round to nearest, ties to even.
fn nearest_int(f: f32) -> u16 {
    let v = f + 12582912.0;
    ((v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000) as u16
}

/// One row of log-probs as llama-perplexity stores it; returns the row's nll of `tok`.
pub fn encode_row(logits: &[f32], tok: u32, out: &mut [u16]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = logits
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min)
        .max(max - 16.0);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum = sum.ln() as f32;
    let min_log_prob = min - max - log_sum;
    let scale = (max - min) / 65535.0;
    // Two f32 as four little-endian u16, as the C code's `(float *)log_prob` writes them.
    for (i, v) in [scale, min_log_prob].into_iter().enumerate() {
        out[2 * i] = v.to_bits() as u16;
        out[2 * i + 1] = (v.to_bits() >> 16) as u16;
    }
    let q = &mut out[4..4 + logits.len()];
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in q.iter_mut().zip(logits) {
            *o = if l > min {
                nearest_int(inv * (l - min))
            } else {
                0
            };
        }
    } else {
        q.fill(0);
    }
    (max + log_sum - logits[tok as usize]) as f64
}

fn f32_at(row: &[u16], i: usize) -> f32 {
    f32::from_bits(row[i] as u32 | (row[i + 1] as u32) << 16)
}

/// Writes a base file as perplexity runs: `header` once, then `chunk` per chunk.
pub struct BaseWriter<W: Write> {
    w: W,
    n_vocab: usize,
    buf: Vec<u16>,
}

impl<W: Write> BaseWriter<W> {
    pub fn new(
        mut w: W,
        n_ctx: usize,
        n_vocab: usize,
        n_chunk: usize,
        tokens: &[u32],
    ) -> std::io::Result<Self> {
        w.write_all(MAGIC)?;
        for v in [n_ctx, n_vocab, n_chunk] {
            w.write_all(&(v as i32).to_le_bytes())?;
        }
        for &t in &tokens[..n_chunk * n_ctx] {
            w.write_all(&(t as i32).to_le_bytes())?;
        }
        Ok(BaseWriter {
            w,
            n_vocab,
            buf: Vec::new(),
        })
    }

    pub fn chunk(
        &mut self,
        c: &ChunkLogits,
        pool: Option<&rayon::ThreadPool>,
    ) -> std::io::Result<()> {
        let (nv, n_vocab) = (row_len(self.n_vocab), self.n_vocab);
        let first = c.tokens.len() / 2;
        let rows = c.logits.len() / n_vocab;
        self.buf.resize(rows * nv, 0);
        let work = |buf: &mut Vec<u16>| {
            buf.par_chunks_mut(nv)
                .zip(c.logits.par_chunks(n_vocab))
                .enumerate()
                .for_each(|(i, (o, l))| {
                    o.fill(0);
                    encode_row(l, c.tokens[first + i + 1], o);
                })
        };
        match pool {
            Some(p) => p.install(|| work(&mut self.buf)),
            None => work(&mut self.buf),
        }
        let bytes: Vec<u8> = self.buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.w.write_all(&bytes)
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A base file's header and tokens; its rows are read chunk by chunk.
pub struct BaseReader<R: Read> {
    r: R,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<u32>,
}

fn bad(what: &str) -> EngineError {
    EngineError::Config(format!("the KL-divergence base file {what}; write it with `owl perplexity --kl-divergence-base FILE` (or llama-perplexity's)"))
}

impl<R: Read> BaseReader<R> {
    pub fn new(mut r: R) -> Result<Self, EngineError> {
        let mut head = [0u8; 20];
        r.read_exact(&mut head)
            .map_err(|_| bad("is too short to hold a header"))?;
        if &head[..8] != MAGIC {
            return Err(bad("does not start with `_logits_`"));
        }
        let int = |i: usize| i32::from_le_bytes(head[i..i + 4].try_into().unwrap());
        let (n_ctx, n_vocab, n_chunk) = (int(8), int(12), int(16));
        if !(8..=1 << 20).contains(&n_ctx)
            || !(1..=1 << 24).contains(&n_vocab)
            || !(1..=1 << 20).contains(&n_chunk)
        {
            return Err(bad(&format!(
                "has an impossible header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk})"
            )));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let mut raw = vec![0u8; n_ctx * n_chunk * 4];
        r.read_exact(&mut raw)
            .map_err(|_| bad("ends inside its tokens"))?;
        let tokens = raw
            .chunks(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        Ok(BaseReader {
            r,
            n_ctx,
            n_vocab,
            n_chunk,
            tokens,
        })
    }

    /// The next chunk's rows, `[n_ctx - 1 - n_ctx / 2][row_len(n_vocab)]`.
    pub fn next_chunk(&mut self, out: &mut Vec<u16>) -> Result<(), EngineError> {
        let n = (self.n_ctx - 1 - self.n_ctx / 2) * row_len(self.n_vocab);
        let mut raw = vec![0u8; n * 2];
        self.r
            .read_exact(&mut raw)
            .map_err(|_| bad(&format!("ends before its {} chunks", self.n_chunk)))?;
        out.clear();
        out.extend(raw.chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
        Ok(())
    }
}

/// llama-perplexity's sums over every scored token.
#[derive(Clone, Debug, Default)]
pub struct KldSums {
    pub sum_nll: f64,
    pub sum_nll2: f64,
    pub sum_nll_base: f64,
    pub sum_nll_base2: f64,
    pub sum_nll_nll_base: f64,
    pub sum_kld: f64,
    pub sum_kld2: f64,
    pub sum_p_diff: f64,
    pub sum_p_diff2: f64,
    pub sum_p_diff4: f64,
    pub max_p_diff: f32,
    pub n_same_top: usize,
    pub count: usize,
    /// Per token, for the percentiles.
    pub kld_values: Vec<f32>,
    pub p_diff_values: Vec<f32>,
}

struct RowKld {
    nll: f32,
    nll_base: f32,
    kld: f64,
    p_diff: f32,
    same_top: bool,
}

/// One row against its base row, as llama-perplexity's KL `log_softmax` computes it.
fn row_kld(logits: &[f32], base: &[u16], tok: u32) -> RowKld {
    let (mut max, mut imax) = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            (max, imax) = (l, i);
        }
    }
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum = sum.ln() as f32;
    let (scale, min_log_prob) = (f32_at(base, 0), f32_at(base, 2));
    let q = &base[4..];
    let nll = max + log_sum - logits[tok as usize];
    let nll_base = -(scale * q[tok as usize] as f32 + min_log_prob);
    let top = max + log_sum;
    let (mut kld, mut imax_base, mut p_max) = (0f64, 0usize, 0f32);
    for (i, &l) in logits.iter().enumerate() {
        let pl = scale * q[i] as f32 + min_log_prob;
        if i == 0 || pl > p_max {
            (p_max, imax_base) = (pl, i);
        }
        if pl > -16.0 {
            kld += (pl.exp() * (pl - l + top)) as f64;
        }
    }
    RowKld {
        nll,
        nll_base,
        kld,
        p_diff: (-nll).exp() - (-nll_base).exp(),
        same_top: imax == imax_base,
    }
}

impl KldSums {
    /// Adds one chunk: its scored logits against the base file's rows for it.
    pub fn add(
        &mut self,
        c: &ChunkLogits,
        base: &[u16],
        n_vocab: usize,
        pool: Option<&rayon::ThreadPool>,
    ) {
        let nv = row_len(n_vocab);
        let first = c.tokens.len() / 2;
        let work = || -> Vec<RowKld> {
            c.logits
                .par_chunks(n_vocab)
                .zip(base.par_chunks(nv))
                .enumerate()
                .map(|(i, (l, b))| row_kld(l, b, c.tokens[first + i + 1]))
                .collect()
        };
        let rows = match pool {
            Some(p) => p.install(work),
            None => work(),
        };
        for r in rows {
            let (nll, nb) = (r.nll as f64, r.nll_base as f64);
            self.sum_nll += nll;
            self.sum_nll2 += nll * nll;
            self.sum_nll_base += nb;
            self.sum_nll_base2 += nb * nb;
            self.sum_nll_nll_base += nll * nb;
            self.sum_kld += r.kld;
            self.sum_kld2 += r.kld * r.kld;
            let pd = r.p_diff as f64;
            self.sum_p_diff += pd;
            self.sum_p_diff2 += pd * pd;
            self.sum_p_diff4 += pd * pd * pd * pd;
            self.max_p_diff = self.max_p_diff.max(r.p_diff.abs());
            self.n_same_top += r.same_top as usize;
            self.count += 1;
            self.kld_values.push(r.kld as f32);
            self.p_diff_values.push(r.p_diff);
        }
    }
}

/// llama-perplexity's `mean_and_uncertainty`.
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    (
        f,
        if df > 0.0 && count > 10 {
            (df / (n - 1.0)).sqrt()
        } else {
            0.0
        },
    )
}

/// llama-perplexity's covariance of the two mean log-likelihoods.
pub fn covariance(suma: f64, sumb: f64, sumab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sumab / n - (suma / n) * (sumb / n)) / (n - 1.0)
}

/// llama-perplexity's percentile of sorted values (linear between neighbours).
pub fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * sorted[ip] + p * sorted[(ip + 1).min(sorted.len() - 1)]
}

/// The middle of sorted values (mean of the two middle ones for an even count).
pub fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_read_back_has_no_divergence_from_itself() {
        let logits: Vec<f32> = (0..101)
            .map(|i| ((i * 37 % 101) as f32) * 0.13 - 4.0)
            .collect();
        let mut row = vec![0u16; row_len(logits.len())];
        let nll = encode_row(&logits, 5, &mut row);
        assert!((nll - super::super::nll(&logits, 5)).abs() < 1e-5);
        let r = row_kld(&logits, &row, 5);
        assert!(r.kld.abs() < 1e-4, "{}", r.kld);
        assert!(r.same_top);
        assert!((r.nll - r.nll_base).abs() < 1e-3);
        // A different distribution diverges.
        let other: Vec<f32> = logits.iter().rev().copied().collect();
        assert!(row_kld(&other, &row, 5).kld > 0.1);
    }

    #[test]
    fn nearest_int_rounds_like_llama() {
        assert_eq!(
            (
                nearest_int(0.4),
                nearest_int(0.6),
                nearest_int(2.5),
                nearest_int(65535.0)
            ),
            (0, 1, 2, 65535)
        );
    }

    #[test]
    fn percentiles_are_llamas() {
        let v = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(
            (
                percentile(&v, 0.0),
                percentile(&v, 0.5),
                percentile(&v, 1.0),
                median(&v)
            ),
            (1.0, 2.5, 4.0, 2.5)
        );
    }

    #[test]
    fn a_broken_base_file_is_one_clear_error() {
        let e = BaseReader::new(&b"not a logits file at all"[..])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not start with `_logits_`"), "{e}");
        let e = BaseReader::new(&b"_logits_"[..]).err().unwrap().to_string();
        assert!(e.contains("too short"), "{e}");
    }
}
