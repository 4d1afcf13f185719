//! Tokenizer built from GGUF metadata, token for token equal to llama.cpp's
//! `llama_tokenize(add_special, parse_special)`.
//!
//! Three vocabulary types are supported: SentencePiece-style (`tokenizer.ggml.model =
//! "llama"`: score-driven merges, byte fallback, `add_space_prefix`), byte-level
//! BPE (`"gpt2"`: a pre-tokenizer regex chosen by `tokenizer.ggml.pre`, then rank
//! merges; `"gemma4"` is BPE over raw UTF-8 with `▁` for spaces) and WordPiece
//! (`"bert"`: BERT's normalizer, then longest-match pieces). Before any of them
//! runs, special tokens (CONTROL, USER_DEFINED and UNKNOWN types) are cut out of
//! the raw text, longest first, as llama.cpp's `tokenizer_st_partition` does;
//! CONTROL and UNKNOWN ones only when `parse_special` is set.

mod bpe;
mod decoder;
mod spm;
mod wpm;

use std::collections::HashMap;

use thiserror::Error;

use crate::gguf::{Gguf, GgufError, Metadata};

pub use decoder::IncrementalDecoder;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error("unsupported tokenizer model '{0}' (owl supports 'llama' (SentencePiece), 'gpt2' (byte-level BPE), 'gemma4' (SentencePiece-style BPE) and 'bert' (WordPiece))")]
    UnsupportedModel(String),
    #[error("unknown pre-tokenizer '{0}' in tokenizer.ggml.pre")]
    UnknownPre(String),
    #[error("the vocabulary (tokenizer.ggml.tokens) is empty")]
    EmptyVocab,
    #[error("the vocabulary has {0} tokens, more than token ids can address")]
    VocabTooLarge(usize),
    #[error("{key} has {got} entries but the vocabulary has {n_vocab} tokens")]
    LengthMismatch {
        key: &'static str,
        got: usize,
        n_vocab: usize,
    },
    #[error("a gpt2 (BPE) tokenizer needs tokenizer.ggml.merges, and the file has none")]
    MissingMerges,
    #[error("building the BPE model: {0}")]
    Bpe(String),
    #[error("invalid pre-tokenizer regex {regex:?}: {msg}")]
    Regex { regex: String, msg: String },
    #[error("the model asks for a {0} token to be added but defines none")]
    MissingSpecial(&'static str),
    #[error("no token for byte 0x{0:02X} (no <0x{0:02X}> token and no unknown token)")]
    NoByteToken(u8),
}

/// Which algorithm the vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece-style (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), or Gemma 4's
    /// SentencePiece-style BPE (`"gemma4"`).
    Bpe,
    /// WordPiece (`tokenizer.ggml.model = "bert"`).
    Wpm,
}

// Token attributes, from `tokenizer.ggml.token_type` (llama.cpp's llama_token_attr).
const ATTR_UNKNOWN: u8 = 1 << 0;
const ATTR_UNUSED: u8 = 1 << 1;
const ATTR_NORMAL: u8 = 1 << 2;
const ATTR_CONTROL: u8 = 1 << 3;
const ATTR_USER_DEFINED: u8 = 1 << 4;
const ATTR_BYTE: u8 = 1 << 5;

fn attr_from_type(t: i64) -> u8 {
    match t {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0, // undefined
    }
}

/// Token texts that end generation, as llama.cpp's vocabulary load collects them.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
];
/// Texts llama.cpp takes for the end-of-turn token when the file names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<PAD>"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// A piece of the input: raw text (byte range) or a special token cut out of it.
#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

/// A tokenizer for one model's vocabulary.
pub struct Tokenizer {
    kind: VocabKind,
    texts: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u8>,
    token_to_id: HashMap<String, u32>,
    /// CONTROL, USER_DEFINED and UNKNOWN tokens, longest text first.
    special_tokens: Vec<u32>,
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    /// WordPiece's `[SEP]`, appended with `add_special`.
    sep: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    /// BPE whose tokens spell spaces as `▁` and bytes as `<0xNN>` (Gemma 4).
    spm_style_bpe: bool,
    bpe: Option<bpe::BpeModel>,
    /// WordPiece's normalizer options and its longest token in bytes.
    wpm: Option<(wpm::Normalizer, usize)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("n_vocab", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish_non_exhaustive()
    }
}

/// Reads an optional token id; absent, negative or out-of-range ids are `None`
/// (llama.cpp ignores an out-of-range id and keeps its default).
fn token_id_key(md: &Metadata, key: &str, n_vocab: usize) -> Result<Option<u32>, GgufError> {
    Ok(md
        .get_opt::<i64>(key)?
        .filter(|&id| id >= 0 && (id as u64) < n_vocab as u64)
        .map(|id| id as u32))
}

/// Whether the model's tokenizer prepends BOS with `add_special`:
/// `tokenizer.ggml.add_bos_token`, else llama.cpp's default for the vocabulary type
/// (SentencePiece yes, BPE only for the llama3-style pre-tokenizers). Cheap: reads
/// no vocabulary; chat templates use it to avoid a doubled BOS.
pub fn adds_bos(md: &Metadata) -> Result<bool, TokenizerError> {
    let model: &str = md.get("tokenizer.ggml.model")?;
    if model == "gemma4"
        || (model == "gpt2"
            && matches!(
                md.get_opt("tokenizer.ggml.pre")?,
                Some("gemma4" | "granite-embed-multi-311m")
            ))
    {
        return Ok(true); // llama.cpp overrides a `false` for Gemma 4
    }
    if let Some(v) = md.get_opt::<bool>("tokenizer.ggml.add_bos_token")? {
        return Ok(v);
    }
    Ok(match model {
        "llama" | "bert" => true,
        "gpt2" => bpe::pre_tokenizer(md.get_opt("tokenizer.ggml.pre")?)?
            .add_bos
            .unwrap_or(false),
        other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
    })
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_metadata(gguf.metadata())
    }

    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model: &str = md.get("tokenizer.ggml.model")?;
        let kind = match model {
            "llama" => VocabKind::Spm,
            "gpt2" | "gemma4" => VocabKind::Bpe,
            "bert" => VocabKind::Wpm,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let tokens: Vec<&str> = md.get("tokenizer.ggml.tokens")?;
        let n_vocab = tokens.len();
        if n_vocab == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n_vocab > i32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge(n_vocab));
        }
        let scores: Option<Vec<f32>> = md.get_opt("tokenizer.ggml.scores")?;
        let types: Option<Vec<i64>> = md.get_opt("tokenizer.ggml.token_type")?;
        for (key, got) in [
            ("tokenizer.ggml.scores", scores.as_ref().map(Vec::len)),
            ("tokenizer.ggml.token_type", types.as_ref().map(Vec::len)),
        ] {
            if let Some(got) = got.filter(|&g| g != n_vocab) {
                return Err(TokenizerError::LengthMismatch { key, got, n_vocab });
            }
        }

        // Defaults per vocabulary type, as llama.cpp sets them before reading keys.
        // Gemma 4's tokenizer model implies its pre-tokenizer, as in llama.cpp.
        let pre_name: Option<&str> = match model {
            "gemma4" => Some("gemma4"),
            _ => md.get_opt("tokenizer.ggml.pre")?,
        };
        let (mut bos, mut eos, mut unk, mut add_eos, default_space_prefix, clean_spaces, pre) =
            match kind {
                VocabKind::Spm => (Some(1), Some(2), Some(0), false, true, false, None),
                VocabKind::Wpm => (Some(101), None, Some(100), false, false, true, None),
                VocabKind::Bpe => {
                    let pre = bpe::pre_tokenizer(pre_name)?;
                    // Gemma 4 reads its special ids from the file alone.
                    let (bos, eos) = match (model, pre_name) {
                        ("gemma4", _) => (None, None),
                        (_, Some("chatglm-bpe")) => (None, Some(11)),
                        _ => (Some(11), Some(11)),
                    };
                    (bos, eos, None, false, false, pre.clean_spaces, Some(pre))
                }
            };
        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < n_vocab);
        bos = valid(bos);
        eos = valid(eos);
        unk = valid(unk);
        let add_space_prefix = md
            .get_opt::<bool>("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(default_space_prefix);

        let key = |k: &str| token_id_key(md, k, n_vocab);
        bos = key("tokenizer.ggml.bos_token_id")?.or(bos);
        eos = key("tokenizer.ggml.eos_token_id")?.or(eos);
        unk = key("tokenizer.ggml.unknown_token_id")?.or(unk);
        // "seperator" is llama.cpp's spelling of the key.
        let sep = match kind {
            VocabKind::Wpm => key("tokenizer.ggml.seperator_token_id")?.or(valid(Some(102))),
            _ => None,
        };
        let mut eot = key("tokenizer.ggml.eot_token_id")?;
        let mut eom = key("tokenizer.ggml.eom_token_id")?;
        let mut fim_pad = key("tokenizer.ggml.fim_pad_token_id")?;
        let mut fim_rep = key("tokenizer.ggml.fim_rep_token_id")?;
        let mut fim_sep = key("tokenizer.ggml.fim_sep_token_id")?;
        let add_bos = adds_bos(md)?;
        if let Some(v) = md.get_opt::<bool>("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }

        let mut texts = Vec::with_capacity(n_vocab);
        let mut token_to_id = HashMap::with_capacity(n_vocab);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens so they can never match empty text.
            let text = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.to_string()
            };
            token_to_id.insert(text.clone(), i as u32);
            texts.push(text);
        }
        let mut attrs: Vec<u8> = match &types {
            Some(types) => types.iter().map(|&t| attr_from_type(t)).collect(),
            None => vec![ATTR_NORMAL; n_vocab],
        };

        // Tokens recognised by their text; like llama.cpp, each one found this way
        // is made a CONTROL token so it is parsed as special and renders as nothing.
        let mut find_by_text = |slot: &mut Option<u32>, candidates: &[&str]| {
            if slot.is_none() {
                *slot = candidates.iter().find_map(|c| token_to_id.get(*c).copied());
                if let Some(id) = *slot {
                    attrs[id as usize] |= ATTR_CONTROL;
                }
            }
        };
        find_by_text(&mut eot, EOT_TEXTS);
        find_by_text(&mut eom, EOM_TEXTS);
        find_by_text(&mut fim_pad, FIM_PAD_TEXTS);
        find_by_text(&mut fim_rep, FIM_REP_TEXTS);
        find_by_text(&mut fim_sep, FIM_SEP_TEXTS);

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for text in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*text) {
                eog.push(id);
                attrs[id as usize] |= ATTR_CONTROL;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let mut special_tokens: Vec<u32> = (0..n_vocab as u32)
            .filter(|&id| {
                attrs[id as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0
            })
            .collect();
        special_tokens.sort_by(|&a, &b| texts[b as usize].len().cmp(&texts[a as usize].len()));

        let spm_style_bpe = pre.as_ref().is_some_and(|p| p.spm_style);
        let bpe = match (kind, pre) {
            (VocabKind::Bpe, Some(pre)) => {
                let merges: Vec<&str> = md
                    .get_opt("tokenizer.ggml.merges")?
                    .ok_or(TokenizerError::MissingMerges)?;
                Some(bpe::BpeModel::new(&texts, &merges, &pre)?)
            }
            _ => None,
        };
        let wpm = match kind {
            VocabKind::Wpm => {
                let lowercase = md
                    .get_opt::<bool>("tokenizer.ggml.normalizer.lowercase")?
                    .unwrap_or(true);
                let strip_accents = md
                    .get_opt::<bool>("tokenizer.ggml.normalizer.strip_accents")?
                    .unwrap_or(lowercase);
                let max_len = texts.iter().map(String::len).max().unwrap_or(0);
                Some((
                    wpm::Normalizer {
                        lowercase,
                        strip_accents,
                    },
                    max_len,
                ))
            }
            _ => None,
        };

        Ok(Tokenizer {
            kind,
            texts,
            scores: scores.unwrap_or_else(|| vec![0.0; n_vocab]),
            attrs,
            token_to_id,
            special_tokens,
            eog,
            bos,
            eos,
            eot,
            eom,
            unk,
            sep,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            spm_style_bpe,
            bpe,
            wpm,
        })
    }

    /// Tokenizes `text` like llama.cpp's `llama_tokenize(add_special, parse_special)`:
    /// `add_special` adds BOS/EOS where the model asks for them; `parse_special`
    /// turns control-token texts such as `<|im_start|>` into their ids.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && (self.add_bos || self.kind == VocabKind::Wpm) {
            out.push(self.bos.ok_or(TokenizerError::MissingSpecial("BOS"))?);
        }
        match self.kind {
            VocabKind::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(s, e) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in text[s..e].chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::tokenize(self, &buf, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            VocabKind::Bpe => {
                let bpe = self.bpe.as_ref().ok_or(TokenizerError::MissingMerges)?;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(s, e) => bpe.tokenize(&text[s..e], &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            VocabKind::Wpm => {
                let (norm, max_len) = self.wpm.ok_or(TokenizerError::EmptyVocab)?;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(s, e) => {
                            wpm::tokenize(self, norm, max_len, &text[s..e], &mut out)?
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
                // llama.cpp closes a WordPiece sequence with [SEP], whatever add_eos says.
                if add_special {
                    out.push(self.sep.ok_or(TokenizerError::MissingSpecial("SEP"))?);
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos.ok_or(TokenizerError::MissingSpecial("EOS"))?);
        }
        Ok(out)
    }

    /// Cuts special tokens out of `text`, longest token first, every occurrence.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut fragments = vec![Fragment::Text(0, text.len())];
        for &id in &self.special_tokens {
            let attr = self.attrs[id as usize];
            if !parse_special && attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let pat = self.texts[id as usize].as_str();
            if !text.contains(pat) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                match fragment {
                    Fragment::Text(mut s, e) => {
                        while let Some(pos) = text[s..e].find(pat) {
                            if pos > 0 {
                                next.push(Fragment::Text(s, s + pos));
                            }
                            next.push(Fragment::Token(id));
                            s += pos + pat.len();
                        }
                        if s < e {
                            next.push(Fragment::Text(s, e));
                        }
                    }
                    token => next.push(token),
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The vocabulary type.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (`<|im_end|>`, `<end_of_turn>`, ...), if any.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// The end-of-message token (`<|eom_id|>`), if any.
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether SentencePiece text gets a leading space (and decoding drops it).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by text.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation tokens, ascending.
    pub fn eog_tokens(&self) -> &[u32] {
        &self.eog
    }

    /// The id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The token's text as stored in the vocabulary (`▁the`, `Ġthe`, `<0x0A>`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// Whether the token is a control token (BOS, `<|im_start|>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & ATTR_CONTROL != 0)
    }

    fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    /// The byte-fallback token for `b`: `<0xNN>`, else the byte itself as a token,
    /// else the unknown token.
    fn byte_to_token(&self, b: u8) -> Result<u32, TokenizerError> {
        let name = format!("<0x{b:02X}>");
        if let Some(id) = self.token_id(&name) {
            return Ok(id);
        }
        if b < 0x80 {
            if let Some(id) = self.token_id(&(b as char).to_string()) {
                return Ok(id);
            }
        }
        self.unk.ok_or(TokenizerError::NoByteToken(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SentencePiece vocabulary: "▁a" and "ab" merge paths, byte fallback.
    fn spm_md() -> Metadata {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        tokens.extend(["▁a", "a", "b", "ab", "▁ab", "<|im_end|>"].map(String::from));
        let n = tokens.len();
        let mut types = vec![2i32, 3, 3];
        types.extend(std::iter::repeat_n(6, 256));
        types.extend([1, 1, 1, 1, 1, 1]);
        let scores: Vec<f32> = (0..n)
            .map(|i| if i < 259 { 0.0 } else { -(i as f32) })
            .collect();
        let mut md = Metadata::new();
        md.insert("tokenizer.ggml.model", "llama");
        md.insert("tokenizer.ggml.tokens", tokens);
        md.insert("tokenizer.ggml.token_type", types);
        md.insert("tokenizer.ggml.scores", scores);
        md
    }

    #[test]
    fn spm_merges_by_score_and_falls_back_to_bytes() {
        let tok = Tokenizer::from_metadata(&spm_md()).unwrap();
        let id = |t: &str| tok.token_id(t).unwrap();
        // Defaults without the keys: BOS 1 added, EOS 2, space prefix on.
        assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
        assert!(tok.add_bos() && !tok.add_eos() && tok.add_space_prefix());
        // "▁a" (score -259) merges before "ab" (-262), then "▁a"+"b" = "▁ab".
        assert_eq!(tok.encode("ab", true, false).unwrap(), vec![1, id("▁ab")]);
        // "▁" and "é" are no tokens: their UTF-8 bytes.
        let bytes: Vec<u32> = "▁é".bytes().map(|b| id(&format!("<0x{b:02X}>"))).collect();
        assert_eq!(tok.encode("é", false, false).unwrap(), bytes);
        assert_eq!(tok.decode(&bytes), "▁é");
        // <|im_end|> is recognised by its text: control, end of generation.
        let im_end = id("<|im_end|>");
        assert!(tok.is_control(im_end) && tok.is_eog(im_end) && tok.is_eog(2));
        assert_eq!(
            tok.encode("a<|im_end|>", false, true).unwrap(),
            vec![id("▁a"), im_end]
        );
        assert_eq!(tok.decode(&[id("▁a"), im_end, 0, 1]), "a");
        // Out-of-range ids decode to nothing rather than panicking.
        assert_eq!(tok.token_to_piece(u32::MAX), Vec::<u8>::new());
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<IncrementalDecoder>();
        assert_send_sync::<crate::chat::ChatTemplate>();
    }

    #[test]
    fn metadata_keys_override_defaults() {
        let mut md = spm_md();
        md.insert("tokenizer.ggml.add_bos_token", false);
        md.insert("tokenizer.ggml.add_eos_token", true);
        md.insert("tokenizer.ggml.add_space_prefix", false);
        md.insert("tokenizer.ggml.eos_token_id", 99_999u32); // out of range: default kept
        let tok = Tokenizer::from_metadata(&md).unwrap();
        assert_eq!(tok.eos(), Some(2));
        let a = tok.token_id("a").unwrap();
        assert_eq!(tok.encode("a", true, true).unwrap(), vec![a, 2]);
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let mut md = spm_md();
        md.insert("tokenizer.ggml.scores", vec![0.0f32; 3]);
        assert!(matches!(
            Tokenizer::from_metadata(&md),
            Err(TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.scores",
                got: 3,
                ..
            })
        ));

        let mut md = spm_md();
        md.insert("tokenizer.ggml.model", "t5");
        assert!(
            matches!(Tokenizer::from_metadata(&md), Err(TokenizerError::UnsupportedModel(m)) if m == "t5")
        );

        let mut md = spm_md();
        md.insert("tokenizer.ggml.model", "gpt2");
        assert!(matches!(
            Tokenizer::from_metadata(&md),
            Err(TokenizerError::MissingMerges)
        ));
        md.insert("tokenizer.ggml.pre", "no-such-pre");
        assert!(matches!(
            Tokenizer::from_metadata(&md),
            Err(TokenizerError::UnknownPre(_))
        ));

        let mut md = spm_md();
        md.insert("tokenizer.ggml.tokens", Vec::<String>::new());
        assert!(Tokenizer::from_metadata(&md).is_err());

        let mut md = spm_md();
        md.insert("tokenizer.ggml.tokens", 7u32);
        let err = Tokenizer::from_metadata(&md).unwrap_err();
        assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

        assert!(Tokenizer::from_metadata(&Metadata::new()).is_err());
    }

    #[test]
    fn bpe_byte_level_with_ranked_merges() {
        // Byte-level alphabet for a, b, space (Ġ), plus merges "a b" then "Ġ ab".
        let mut md = Metadata::new();
        md.insert("tokenizer.ggml.model", "gpt2");
        md.insert("tokenizer.ggml.pre", "gpt-2");
        md.insert(
            "tokenizer.ggml.tokens",
            vec!["a", "b", "Ġ", "ab", "Ġab", "<|endoftext|>"],
        );
        md.insert("tokenizer.ggml.merges", vec!["a b", "Ġ ab", "Ġ a"]);
        let tok = Tokenizer::from_metadata(&md).unwrap();
        assert!(!tok.add_bos());
        assert_eq!(tok.encode("ab ab b", true, true).unwrap(), vec![3, 4, 2, 1]);
        assert_eq!(tok.decode(&[3, 4, 2, 1, 5]), "ab ab b");
        assert!(tok.is_eog(5) && tok.is_control(5));
    }
}
