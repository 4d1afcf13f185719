//! SentencePiece-style tokenization (`tokenizer.ggml.model = "llama"`), as llama.cpp
//! does it: start from UTF-8 characters, repeatedly merge the adjacent pair whose
//! concatenation is a token with the highest score (leftmost on ties), then emit
//! each remaining symbol as its token or, when it is none, as byte-fallback tokens.
//!
//! This is written out rather than expressed as a `tokenizers` BPE with merges
//! derived from the scores: llama.cpp merges a pair whenever the *concatenation* is
//! a token, even when a half is not (the synthetic vocabularies have `▁o` but no
//! `▁`), which a merge table keyed by pairs of token ids cannot express. It also
//! builds in no time: the vocabulary map is all it needs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{Tokenizer, TokenizerError};

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    // Max-heap order: higher score first, then the leftmost pair (llama.cpp's
    // comparator, including its `<` on floats, so -0.0 and 0.0 tie).
    fn cmp(&self, other: &Self) -> Ordering {
        if self.score < other.score {
            Ordering::Less
        } else if self.score > other.score {
            Ordering::Greater
        } else {
            other.left.cmp(&self.left)
        }
    }
}

/// Tokenizes one fragment of already whitespace-escaped text (spaces are `▁`).
pub(super) fn tokenize(
    tok: &Tokenizer,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    if text.is_empty() {
        return Ok(());
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut iter = text.char_indices().peekable();
    while let Some((start, c)) = iter.next() {
        let index = symbols.len();
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: index.checked_sub(1),
            next: iter.peek().map(|_| index + 1),
        });
    }

    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let try_add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Bigram>,
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (symbols[left], symbols[right]);
        let piece = &text[l.start..l.start + l.len + r.len];
        if let Some(id) = tok.token_id(piece) {
            queue.push(Bigram {
                left,
                right,
                score: tok.score(id),
                size: piece.len(),
            });
        }
    };

    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // One side was merged away since this pair was queued.
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        symbols[bigram.left].len += r.len;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        let prev = symbols[bigram.left].prev;
        let next = symbols[bigram.left].next;
        try_add(&symbols, &mut queue, prev, Some(bigram.left));
        try_add(&symbols, &mut queue, Some(bigram.left), next);
    }

    let mut i = Some(0);
    while let Some(index) = i {
        let sym = symbols[index];
        let piece = &text[sym.start..sym.start + sym.len];
        match tok.token_id(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece.as_bytes() {
                    out.push(tok.byte_to_token(b)?);
                }
            }
        }
        i = sym.next;
    }
    Ok(())
}
