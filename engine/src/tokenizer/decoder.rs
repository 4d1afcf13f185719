//! Tokens back to text: per-token pieces as llama.cpp's `token_to_piece(special =
//! false)` gives them, whole-sequence decoding as `llama_detokenize`, and an
//! incremental decoder for streaming that never cuts a UTF-8 sequence in two.

use std::sync::OnceLock;

use super::{
    bpe, Tokenizer, VocabKind, ATTR_BYTE, ATTR_CONTROL, ATTR_NORMAL, ATTR_UNKNOWN,
    ATTR_USER_DEFINED,
};

/// GPT-2's printable character -> byte map, the inverse of `bpe::byte_encoder`.
fn byte_decoder() -> &'static std::collections::HashMap<char, u8> {
    static MAP: OnceLock<std::collections::HashMap<char, u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        bpe::byte_encoder()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// `<0xNN>` -> NN.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// The bytes one token stands for in generated text. Control and unknown tokens
    /// are empty; SentencePiece `▁` is a space; `<0xNN>` byte tokens are that byte;
    /// byte-level BPE characters map back to their bytes. A piece may be part of a
    /// UTF-8 sequence, so it is bytes, not a string. Unknown ids give nothing.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.texts.get(id as usize) else {
            return Vec::new();
        };
        let attr = self.attrs[id as usize];
        if attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
            return Vec::new();
        }
        if attr & ATTR_USER_DEFINED != 0 {
            return text.as_bytes().to_vec();
        }
        match self.kind {
            VocabKind::Spm | VocabKind::Wpm => {
                if attr & ATTR_NORMAL != 0 {
                    text.replace('▁', " ").into_bytes()
                } else if attr & ATTR_BYTE != 0 {
                    parse_byte_token(text).map(|b| vec![b]).unwrap_or_default()
                } else {
                    Vec::new()
                }
            }
            VocabKind::Bpe if self.spm_style_bpe => {
                if attr & ATTR_NORMAL != 0 {
                    text.replace('▁', " ").into_bytes()
                } else if attr & ATTR_BYTE != 0 {
                    parse_byte_token(text).map(|b| vec![b]).unwrap_or_default()
                } else {
                    Vec::new()
                }
            }
            VocabKind::Bpe => {
                if attr & ATTR_NORMAL == 0 {
                    return Vec::new();
                }
                let map = byte_decoder();
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match map.get(&c) {
                        Some(&b) => out.push(b),
                        // Not a byte-level character: keep it as it is.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            }
        }
    }

    /// Decodes a whole sequence like `llama_detokenize(remove_special = false,
    /// unparse_special = false)`: control tokens render as nothing, the first
    /// token loses one leading space when the vocabulary adds a space prefix, and
    /// BPE vocabularies that ask for it get llama.cpp's space clean-up (` .` ->
    /// `.`, ` 's` -> `'s`). Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_to_piece(id);
            let piece = if i == 0 && self.add_space_prefix {
                piece.strip_prefix(b" ").unwrap_or(&piece)
            } else {
                &piece[..]
            };
            bytes.extend_from_slice(piece);
        }
        if self.clean_spaces {
            bytes = clean_up_spaces(&bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// llama.cpp's `clean_spaces` passes: drop the space before `?!.,`, around a lone
/// `'`, and before `'s`, `'m`, `'re`, `'ve`.
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    if text.is_empty() {
        return Vec::new();
    }
    // First pass: " ?", " !", " .", " ,".
    let mut a: Vec<u8> = vec![text[0]];
    for i in 1..text.len() {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            a.pop();
        }
        a.push(x);
    }
    // Second pass: " ' " -> "'".
    let mut b: Vec<u8> = vec![a[0]];
    let mut i = 1;
    while i < a.len() {
        let x = a[i];
        if x == b'\'' && i + 1 < a.len() && a[i - 1] == b' ' && a[i + 1] == b' ' {
            b.pop();
            b.push(x);
            i += 2;
            continue;
        }
        b.push(x);
        i += 1;
    }
    // Third pass: " 's", " 'm", " 're", " 've".
    let mut c: Vec<u8> = vec![b[0]];
    for i in 1..b.len() {
        let x = b[i];
        if b[i - 1] == b' ' && x == b'\'' && i + 1 < b.len() {
            let x1 = b[i + 1];
            let x2 = b.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < b.len() && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))));
            if drop {
                c.pop();
            }
        }
        c.push(x);
    }
    c
}

/// Turns a stream of tokens into text chunks that are always whole UTF-8: bytes of
/// a character split across tokens (byte-fallback `<0xF0><0x9F>...`) are held back
/// until the character is complete. Pushing every token and then flushing gives
/// the same text as [`Tokenizer::decode`] (without BPE space clean-up, which needs
/// to see ahead).
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    pending: Vec<u8>,
    started: bool,
}

impl IncrementalDecoder {
    pub fn new() -> IncrementalDecoder {
        IncrementalDecoder::default()
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        let piece = tok.token_to_piece(id);
        let piece = if !self.started && tok.add_space_prefix {
            piece.strip_prefix(b" ").unwrap_or(&piece)
        } else {
            &piece[..]
        };
        self.started = true;
        self.pending.extend_from_slice(piece);
        self.take_complete()
    }

    /// Ends the stream: whatever is still held back, with U+FFFD for bytes that
    /// never became a character.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Emits the longest prefix of `pending` that is complete: valid UTF-8 as it
    /// is, invalid bytes as U+FFFD, and holds back only an incomplete sequence at
    /// the very end.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // from_utf8 just said this prefix is valid.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}
