//! WordPiece (`tokenizer.ggml.model = "bert"`), as llama.cpp's `llm_tokenizer_wpm`
//! does it. The text is normalized and split into words the way BERT's basic
//! tokenizer does (whitespace separates, each punctuation, ASCII symbol and CJK
//! character is a word of its own, control characters are dropped, and with
//! `lowercase` the text is lowercased and, with `strip_accents`, decomposed and
//! stripped of combining marks). Each word, with a `▁` in front, is then covered
//! greedily from the left by the longest tokens of the vocabulary; a word with a
//! position no token starts at becomes the unknown token.
//!
//! The vocabulary is llama.cpp's conversion of BERT's: word-initial pieces carry a
//! `▁` prefix and continuation pieces (`##ing` in BERT) are bare.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use super::{Tokenizer, TokenizerError};

/// BERT's normalizer options (`tokenizer.ggml.normalizer.*`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Normalizer {
    pub lowercase: bool,
    pub strip_accents: bool,
}

/// CJK ideographs, each a word of its own (BERT's `_is_chinese_char`, including
/// the upper bound HF's Rust code uses for extension E).
fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// Normalizes `text` and splits it into words (llama.cpp's `preprocess`).
pub(super) fn preprocess(text: &str, norm: Normalizer) -> Vec<String> {
    let chars: Vec<char> = if norm.strip_accents {
        text.nfd().map(|(c, _)| c).collect()
    } else {
        text.chars().collect()
    };
    let mut words = vec![String::new()];
    for c in chars {
        if c.is_whitespace() {
            if !words.last().is_some_and(String::is_empty) {
                words.push(String::new());
            }
            continue;
        }
        if c == '\0' || c == '\u{FFFD}' || c.is_other() {
            continue;
        }
        if norm.strip_accents && c.is_mark() {
            continue;
        }
        // llama.cpp lowercases one code point to one code point: the first of
        // Rust's full mapping (U+0130 'İ' gives 'i', not "i\u{307}").
        let c = if norm.lowercase {
            c.to_lowercase().next().unwrap_or(c)
        } else {
            c
        };
        let last = words.last_mut().expect("words is never empty");
        if c.is_punctuation() || (c < '\u{7F}' && c.is_symbol()) || is_chinese_char(c) {
            if !last.is_empty() {
                words.push(String::new());
            }
            let last = words.last_mut().expect("words is never empty");
            last.push(c);
            words.push(String::new());
        } else {
            last.push(c);
        }
    }
    if words.last().is_some_and(String::is_empty) {
        words.pop();
    }
    words
}

/// Tokenizes one fragment of raw text (special tokens already taken out).
pub(super) fn tokenize(
    tok: &Tokenizer,
    norm: Normalizer,
    max_token_len: usize,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut word1 = String::new();
    for word in preprocess(text, norm) {
        if word.is_empty() {
            continue;
        }
        word1.clear();
        word1.push('▁');
        word1.push_str(&word);
        let bytes = word1.as_bytes();
        let n = bytes.len();
        let start = out.len();
        // Byte positions, as llama.cpp's; a cut inside a character is no token.
        let mut i = 0;
        while i < n {
            let matched = (i + 1..=n.min(i + max_token_len + 1)).rev().find_map(|j| {
                let id = std::str::from_utf8(&bytes[i..j])
                    .ok()
                    .and_then(|s| tok.token_id(s))?;
                Some((j, id))
            });
            match matched {
                Some((j, id)) => {
                    out.push(id);
                    i = j;
                }
                None => {
                    out.truncate(start);
                    break;
                }
            }
        }
        if out.len() == start {
            out.push(tok.unk.ok_or(TokenizerError::MissingSpecial("unknown"))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_splits_like_bert() {
        let norm = Normalizer {
            lowercase: true,
            strip_accents: true,
        };
        assert_eq!(
            preprocess("Héllo, WORLD!\t\u{7}x 中文 a$b", norm),
            ["hello", ",", "world", "!", "x", "中", "文", "a", "$", "b"]
        );
        let keep = Normalizer {
            lowercase: false,
            strip_accents: false,
        };
        assert_eq!(preprocess("Héllo  ", keep), ["Héllo"]);
    }
}
