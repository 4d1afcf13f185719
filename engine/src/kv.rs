//! KV cells handed out in pages as sequences grow, from one budget shared by
//! all sequences (never a fixed split per slot), with a prefix cache: the
//! pages of finished sequences stay readable until the space is needed, and a
//! new prompt that starts with the same tokens reuses their whole pages.

pub const PAGE: usize = 16;

#[derive(Debug)]
struct Cached {
    tokens: Vec<u32>,
    pages: Vec<u32>,
    last_used: u64,
}

#[derive(Debug)]
pub struct KvPages {
    refs: Vec<u32>,
    free: Vec<u32>,
    cached: Vec<Cached>,
    clock: u64,
}

/// The pages of one live sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqKv {
    pub pages: Vec<u32>,
}

impl SeqKv {
    pub fn cell(&self, pos: usize) -> u32 {
        self.pages[pos / PAGE] * PAGE as u32 + (pos % PAGE) as u32
    }

    /// Cells of positions 0..len.
    pub fn cells(&self, len: usize) -> Vec<u32> {
        (0..len).map(|p| self.cell(p)).collect()
    }

    pub fn capacity(&self) -> usize {
        self.pages.len() * PAGE
    }
}

impl KvPages {
    pub fn new(n_cells: usize) -> KvPages {
        let n = n_cells / PAGE;
        KvPages { refs: vec![0; n], free: (0..n as u32).rev().collect(), cached: Vec::new(), clock: 0 }
    }

    pub fn n_pages(&self) -> usize {
        self.refs.len()
    }

    /// Pages held by live sequences or the prefix cache.
    pub fn used(&self) -> usize {
        self.refs.len() - self.free.len()
    }

    /// Pages that could be had now (free, or held only by the prefix cache).
    pub fn available(&self) -> usize {
        self.free.len() + self.cache_only()
    }

    /// Pages held by the prefix cache and no live sequence (a page two cached
    /// prefixes share counts once).
    pub fn cache_only(&self) -> usize {
        let mut holders = vec![0u32; self.refs.len()];
        for &p in self.cached.iter().flat_map(|c| &c.pages) {
            holders[p as usize] += 1;
        }
        holders.iter().zip(&self.refs).filter(|&(&h, &r)| h > 0 && h == r).count()
    }

    fn release(&mut self, p: u32) {
        let r = &mut self.refs[p as usize];
        *r -= 1;
        if *r == 0 {
            self.free.push(p);
        }
    }

    fn take_page(&mut self) -> Option<u32> {
        while self.free.is_empty() {
            // Evict the least recently used cached prefix.
            let i = self.cached.iter().enumerate().min_by_key(|(_, c)| c.last_used).map(|(i, _)| i)?;
            let c = self.cached.swap_remove(i);
            for p in c.pages {
                self.release(p);
            }
        }
        let p = self.free.pop()?;
        self.refs[p as usize] = 1;
        Some(p)
    }

    /// Grows `seq` to hold `len` positions. False (nothing taken) if the budget is spent.
    pub fn reserve(&mut self, seq: &mut SeqKv, len: usize) -> bool {
        let need = len.div_ceil(PAGE).saturating_sub(seq.pages.len());
        if need > self.available() {
            return false;
        }
        for _ in 0..need {
            match self.take_page() {
                Some(p) => seq.pages.push(p),
                None => return false,
            }
        }
        true
    }

    /// Starts a sequence for `prompt`, reusing the longest cached run of whole
    /// pages that the prompt starts with (always leaving at least one prompt
    /// token to evaluate). Returns the sequence and how many tokens it reuses.
    pub fn start(&mut self, prompt: &[u32]) -> (SeqKv, usize) {
        self.clock += 1;
        let mut best: Option<(usize, usize)> = None;
        for (i, c) in self.cached.iter().enumerate() {
            let common = c.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
            let usable = (common.min(prompt.len().saturating_sub(1)) / PAGE) * PAGE;
            if usable > 0 && best.is_none_or(|(_, b)| usable > b) {
                best = Some((i, usable));
            }
        }
        let mut seq = SeqKv::default();
        let Some((i, n)) = best else { return (seq, 0) };
        let clock = self.clock;
        let c = &mut self.cached[i];
        c.last_used = clock;
        seq.pages = c.pages[..n / PAGE].to_vec();
        for &p in &seq.pages {
            self.refs[p as usize] += 1;
        }
        (seq, n)
    }

    /// Ends a sequence whose first `valid` positions hold the KV of `tokens`:
    /// its whole pages go to the prefix cache, the rest are freed.
    pub fn finish(&mut self, seq: SeqKv, tokens: &[u32], valid: usize) {
        self.clock += 1;
        let keep = (valid.min(tokens.len()) / PAGE).min(seq.pages.len());
        let (kept, rest) = seq.pages.split_at(keep);
        for &p in rest {
            self.release(p);
        }
        if keep == 0 {
            return;
        }
        let tokens = tokens[..keep * PAGE].to_vec();
        // A cached entry that this one extends (or equals) is redundant.
        let mut i = 0;
        while i < self.cached.len() {
            let c = &self.cached[i];
            if c.tokens.len() <= tokens.len() && tokens.starts_with(&c.tokens) {
                let c = self.cached.swap_remove(i);
                for p in c.pages {
                    self.release(p);
                }
            } else {
                i += 1;
            }
        }
        self.cached.push(Cached { tokens, pages: kept.to_vec(), last_used: self.clock });
    }

    /// Offers a live sequence's first `tokens.len()` positions (whose KV is written) to the
    /// prefix cache while it goes on generating: its whole pages among them become
    /// readable by new prompts that start the same way (as vLLM's automatic prefix
    /// caching does), so `n` choices of one prompt, or parallel requests sharing a
    /// system prompt, prefill it once. Safe because a sequence never writes a position
    /// below its length again: the shared pages only hold positions it has passed.
    pub fn share(&mut self, seq: &SeqKv, tokens: &[u32]) {
        let keep = (tokens.len() / PAGE).min(seq.pages.len());
        if keep == 0 {
            return;
        }
        let tokens = &tokens[..keep * PAGE];
        // Already cached (this prompt was itself a cache hit, or shared before): nothing to add.
        if self.cached.iter().any(|c| c.tokens.len() >= tokens.len() && c.tokens.starts_with(tokens)) {
            return;
        }
        self.clock += 1;
        let pages = seq.pages[..keep].to_vec();
        for &p in &pages {
            self.refs[p as usize] += 1;
        }
        self.cached.push(Cached { tokens: tokens.to_vec(), pages, last_used: self.clock });
    }

    /// Frees a sequence without caching anything (cancelled or failed).
    pub fn drop_seq(&mut self, seq: SeqKv) {
        for p in seq.pages {
            self.release(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_shared_from_one_budget_and_freed() {
        let mut kv = KvPages::new(4 * PAGE);
        let (mut a, _) = kv.start(&[1, 2, 3]);
        assert!(kv.reserve(&mut a, 3 * PAGE));
        let (mut b, _) = kv.start(&[9]);
        assert!(kv.reserve(&mut b, PAGE));
        assert!(!kv.reserve(&mut b, 2 * PAGE), "budget is spent");
        assert_eq!(kv.used(), 4);
        kv.drop_seq(a);
        assert_eq!(kv.used(), 1);
        assert!(kv.reserve(&mut b, 4 * PAGE));
    }

    #[test]
    fn prefix_cache_reuses_whole_pages_and_is_evicted_when_needed() {
        let mut kv = KvPages::new(4 * PAGE);
        let prompt: Vec<u32> = (0..40).collect();
        let (mut a, reused) = kv.start(&prompt);
        assert_eq!(reused, 0);
        assert!(kv.reserve(&mut a, 40));
        let pages = a.pages.clone();
        kv.finish(a, &prompt, 40);
        assert_eq!(kv.used(), 2, "two whole pages cached, the partial one freed");
        let mut p2 = prompt[..35].to_vec();
        p2.push(99);
        let (b, reused) = kv.start(&p2);
        assert_eq!(reused, 32);
        assert_eq!(b.pages, pages[..2]);
        // A prompt equal to the cached tokens keeps one token to evaluate.
        let (c, reused) = kv.start(&prompt[..32]);
        assert_eq!(reused, 16);
        kv.drop_seq(c);
        kv.drop_seq(b);
        // The cache gives its pages up when a sequence needs them.
        let (mut d, _) = kv.start(&[7]);
        assert!(kv.reserve(&mut d, 4 * PAGE));
    }

    /// A running sequence's prompt pages, once shared, serve a second sequence of the same
    /// prompt at once; the pages outlive whichever ends first and are freed only when
    /// both ended and the cache gives them up.
    #[test]
    fn a_live_sequences_prompt_is_shared_with_the_next() {
        let mut kv = KvPages::new(8 * PAGE);
        let prompt: Vec<u32> = (0..40).collect();
        let (mut a, reused) = kv.start(&prompt);
        assert_eq!(reused, 0);
        assert!(kv.reserve(&mut a, 41));
        kv.share(&a, &prompt);
        kv.share(&a, &prompt);
        assert_eq!(kv.cached.len(), 1, "sharing twice caches once");
        assert_eq!(kv.cache_only(), 0, "the pages are still a's");
        let (mut b, reused) = kv.start(&prompt);
        assert_eq!(reused, 32, "two whole pages of the prompt");
        assert_eq!(b.pages, a.pages[..2]);
        assert!(kv.reserve(&mut b, 41));
        assert_eq!(kv.used(), 4, "a's three pages and b's own third");
        kv.drop_seq(a);
        kv.finish(b, &prompt, 40);
        assert_eq!(kv.used(), 2);
        assert_eq!(kv.available(), 8);
        let (mut c, _) = kv.start(&[7]);
        assert!(kv.reserve(&mut c, 8 * PAGE), "the cache gives way");
    }

    /// Two cached prefixes sharing a page: once no sequence runs, every used page is the
    /// cache's, and all of them can be had (a page held by two entries counted once, not missed).
    #[test]
    fn shared_cached_pages_count_as_the_caches() {
        let mut kv = KvPages::new(8 * PAGE);
        let a: Vec<u32> = (0..2 * PAGE as u32).collect();
        let (mut sa, _) = kv.start(&a);
        assert!(kv.reserve(&mut sa, a.len()));
        kv.finish(sa, &a, a.len());
        // b shares a's first page, then differs.
        let mut b = a[..PAGE].to_vec();
        b.extend(1000..1000 + PAGE as u32 + 1);
        let (mut sb, reused) = kv.start(&b);
        assert_eq!(reused, PAGE);
        assert!(kv.reserve(&mut sb, b.len()));
        assert_eq!(kv.cache_only(), 1, "a's second page; its first is b's too");
        kv.finish(sb, &b, b.len());
        assert_eq!(kv.used(), 3);
        assert_eq!(kv.cache_only(), 3, "the shared page counts once");
        assert_eq!(kv.available(), 8);
        let (mut c, _) = kv.start(&[7]);
        assert!(kv.reserve(&mut c, 8 * PAGE), "the whole cache gives way");
    }
}
