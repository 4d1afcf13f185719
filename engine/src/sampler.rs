//! Token sampling: penalties, top-k, top-p, min-p, temperature, seeded draw
//! (llama.cpp's default chain order). Temperature 0 is greedy.

use crate::service::SamplingParams;

/// splitmix64: small, seedable, deterministic per request.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub struct Sampler {
    p: SamplingParams,
    rng: Rng,
    /// With `post_sampling_probs`: the last draw's candidates and their probabilities,
    /// best first (greedy: the one token, probability 1).
    last: Vec<(u32, f32)>,
}

/// Index of the largest logit (lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// log softmax of one logit, and the `n` most likely (id, logprob).
pub fn logprobs(logits: &[f32], chosen: u32, n: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + logits
            .iter()
            .map(|&v| ((v - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if n > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = n.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        top = idx
            .into_iter()
            .map(|i| (i, logits[i as usize] - lse))
            .collect();
    }
    (logits[chosen as usize] - lse, top)
}

impl Sampler {
    pub fn new(p: SamplingParams) -> Sampler {
        let seed = p.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (std::process::id() as u64) << 32
        });
        Sampler {
            p,
            rng: Rng::new(seed),
            last: Vec::new(),
        }
    }

    /// The distribution the last token was drawn from, best first (empty unless
    /// `post_sampling_probs` is set).
    pub fn last_distribution(&self) -> &[(u32, f32)] {
        &self.last
    }

    /// Picks the next token. `history` is the sequence so far (prompt and output).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.p;
        // 1. Penalties over the last `penalty_last_n` tokens.
        if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let window = &history[history.len().saturating_sub(p.penalty_last_n)..];
            let mut counts: std::collections::HashMap<u32, u32> = Default::default();
            for &t in window {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &c) in &counts {
                let Some(l) = logits.get_mut(t as usize) else {
                    continue;
                };
                if *l > 0.0 {
                    *l /= p.repeat_penalty;
                } else {
                    *l *= p.repeat_penalty;
                }
                *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
            }
        }
        // 2. The client's logit bias (after penalties, before any cut, as OpenAI's).
        for &(t, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
        if p.temperature <= 0.0 {
            let id = argmax(logits);
            if p.post_sampling_probs {
                self.last = vec![(id, 1.0)];
            }
            return id;
        }
        // 3. Candidates cut by top-k (partial selection, no sort of the vocabulary).
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let k = if p.top_k == 0 {
            cand.len()
        } else {
            p.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, better);
            cand.truncate(k);
        }
        let mut r = Ranked { cand, sorted: 0 };
        let max = r.get(0).1;
        // 4. top-p and min-p on the untempered distribution, over a best-first
        // prefix sorted only as far as the walk reaches.
        let norm = exp_sum(&r.cand, max, 1.0);
        let prob = |l: f32| ((l - max).exp() as f64 / norm) as f32;
        let mut keep = r.cand.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for i in 0..r.cand.len() {
                acc += prob(r.get(i).1);
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = prob(max) * p.min_p;
            let mut i = 1;
            while i < keep && prob(r.get(i).1) >= floor {
                i += 1;
            }
            keep = i;
        }
        // 5. Temperature, then draw (walking the same best-first order).
        r.cand.truncate(keep.max(1));
        if keep < r.sorted {
            r.sorted = keep;
        }
        let norm = exp_sum(&r.cand, max, p.temperature);
        if p.post_sampling_probs {
            self.last = (0..r.cand.len())
                .map(|i| {
                    let (id, l) = r.get(i);
                    (id, (((l - max) / p.temperature).exp() as f64 / norm) as f32)
                })
                .collect();
        }
        let u = self.rng.next_f32();
        let mut acc = 0.0;
        for i in 0..r.cand.len() {
            let (id, l) = r.get(i);
            acc += ((((l - max) / p.temperature).exp()) as f64 / norm) as f32;
            if u < acc {
                return id;
            }
        }
        r.cand.len().checked_sub(1).map(|i| r.get(i).0).unwrap_or(0)
    }
}

/// Best first: larger logit, then lower id (a total order, so the ranking
/// does not depend on how the candidates were selected).
fn better(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Σ exp((l - max) / temp) over the candidates, in f64 (so the order of the
/// unsorted tail does not matter in practice).
fn exp_sum(cand: &[(u32, f32)], max: f32, temp: f32) -> f64 {
    cand.iter().map(|c| ((c.1 - max) / temp).exp() as f64).sum()
}

/// Candidates whose first `sorted` entries are the best ones, in order; the
/// rest is unordered and gets sorted lazily, in growing chunks.
struct Ranked {
    cand: Vec<(u32, f32)>,
    sorted: usize,
}

impl Ranked {
    /// The `i`-th best candidate (`i < cand.len()`).
    fn get(&mut self, i: usize) -> (u32, f32) {
        if i >= self.sorted {
            let n = (2 * i).max(i + 64).min(self.cand.len());
            let rest = &mut self.cand[self.sorted..];
            let m = n - self.sorted;
            if m < rest.len() {
                rest.select_nth_unstable_by(m - 1, better);
            }
            rest[..m].sort_unstable_by(better);
            self.sorted = n;
        }
        self.cand[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_seeds_repeat() {
        let logits = vec![0.1, 2.0, 1.9, -1.0];
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
        let p = SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(7),
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..32)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&p), draw(&p));
        let d = draw(&p);
        assert!(
            d.iter().any(|&t| t != d[0]),
            "temperature 1.5 should vary: {d:?}"
        );
    }

    #[test]
    fn logit_bias_bans_and_forces_tokens() {
        let logits = vec![0.1, 2.0, 1.9, -1.0];
        // Greedy: banning the best token picks the runner-up.
        let mut s = Sampler::new(SamplingParams { logit_bias: vec![(1, -100.0)], ..SamplingParams::greedy() });
        assert_eq!(s.sample(&mut logits.clone(), &[]), 2);
        // Sampled: a +100 bias makes the weakest token the only one left after min-p.
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, seed: Some(3), logit_bias: vec![(3, 100.0)], ..Default::default() });
        for _ in 0..16 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 3);
        }
        // Sampled with a ban: the banned token never comes.
        let mut s = Sampler::new(SamplingParams { temperature: 2.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: Some(9), logit_bias: vec![(1, -100.0)], ..Default::default() });
        let draws: Vec<u32> = (0..200).map(|_| s.sample(&mut logits.clone(), &[])).collect();
        assert!(!draws.contains(&1), "a banned token was drawn: {draws:?}");
        assert!(draws.contains(&2) && draws.contains(&0), "temperature 2 should still vary: {draws:?}");
    }

    /// The kept distribution is the one drawn from: top-k's cut, renormalised, best first,
    /// and recording it changes no draw.
    #[test]
    fn post_sampling_distribution_is_what_was_drawn_from() {
        let logits = vec![0.1, 2.0, 1.9, -1.0];
        let p = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0, min_p: 0.0, seed: Some(3), ..Default::default() };
        let mut plain = Sampler::new(p.clone());
        let mut s = Sampler::new(SamplingParams { post_sampling_probs: true, ..p });
        for _ in 0..16 {
            let id = s.sample(&mut logits.clone(), &[]);
            assert_eq!(id, plain.sample(&mut logits.clone(), &[]));
            let d = s.last_distribution();
            assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
            assert!(d.iter().any(|x| x.0 == id));
            let sum: f32 = d.iter().map(|x| x.1).sum();
            assert!((sum - 1.0).abs() < 1e-5 && d[0].1 > d[1].1, "{d:?}");
        }
        let mut g = Sampler::new(SamplingParams { post_sampling_probs: true, ..SamplingParams::greedy() });
        assert_eq!(g.sample(&mut logits.clone(), &[]), 1);
        assert_eq!(g.last_distribution(), &[(1, 1.0)]);
        assert!(plain.last_distribution().is_empty());
    }

    #[test]
    fn top_k_one_and_penalties() {
        let logits = vec![0.1, 2.0, 1.9, -1.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 1,
            seed: Some(1),
            ..Default::default()
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
        }
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            presence_penalty: 1.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut logits.clone(), &[1]), 2);
        let (lp, top) = logprobs(&logits, 1, 2);
        assert!(lp < 0.0 && top[0].0 == 1 && top[1].0 == 2);
    }

    /// The plain chain: the whole vocabulary sorted best first, then the same
    /// arithmetic as `Sampler::sample` (what the partial selection must equal).
    fn reference(p: &SamplingParams, logits: &[f32], rng: &mut Rng) -> u32 {
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        cand.sort_by(better);
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let norm = exp_sum(&cand, max, 1.0);
        let probs: Vec<f32> = cand
            .iter()
            .map(|c| ((c.1 - max).exp() as f64 / norm) as f32)
            .collect();
        let mut keep = cand.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            if let Some(i) = probs.iter().position(|&pr| {
                acc += pr;
                acc >= p.top_p
            }) {
                keep = i + 1;
            }
        }
        if p.min_p > 0.0 {
            keep = probs[..keep]
                .iter()
                .take_while(|&&pr| pr >= probs[0] * p.min_p)
                .count()
                .max(1);
        }
        cand.truncate(keep.max(1));
        let norm = exp_sum(&cand, max, p.temperature);
        let u = rng.next_f32();
        let mut acc = 0.0;
        for &(id, l) in &cand {
            acc += ((((l - max) / p.temperature).exp()) as f64 / norm) as f32;
            if u < acc {
                return id;
            }
        }
        cand.last().unwrap().0
    }

    #[test]
    fn partial_selection_equals_the_full_sort() {
        let mut g = Rng::new(99);
        // A vocabulary with ties (logits on a coarse grid) and a long flat tail.
        let logits: Vec<f32> = (0..20_000)
            .map(|_| ((g.next_f32() * 24.0).round() - 12.0) * 0.5)
            .collect();
        let peaked: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| if i % 997 == 0 { l + 9.0 } else { l })
            .collect();
        let settings = [
            (0.8, 0, 1.0, 0.0),
            (1.0, 40, 0.95, 0.05),
            (0.7, 0, 0.9, 0.0),
            (1.3, 0, 1.0, 0.1),
            (1.0, 5, 1.0, 0.0),
            (0.5, 0, 0.5, 0.5),
            (2.0, 1000, 0.99, 0.0),
        ];
        for logits in [&logits, &peaked] {
            for &(temperature, top_k, top_p, min_p) in &settings {
                let p = SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    seed: Some(5),
                    ..Default::default()
                };
                let mut s = Sampler::new(p.clone());
                let mut rng = Rng::new(5);
                let fast: Vec<u32> = (0..64)
                    .map(|_| s.sample(&mut logits.clone(), &[]))
                    .collect();
                let want: Vec<u32> = (0..64).map(|_| reference(&p, logits, &mut rng)).collect();
                assert_eq!(
                    fast, want,
                    "t={temperature} k={top_k} p={top_p} min_p={min_p}"
                );
                assert!(
                    fast.iter().any(|&t| t != fast[0]) || top_k == 1 || min_p >= 0.5,
                    "draws should vary: {fast:?}"
                );
            }
        }
    }
}
