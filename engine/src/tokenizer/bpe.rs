//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): the text is split by the
//! pre-tokenizer regexes that `tokenizer.ggml.pre` names (llama.cpp's table in
//! `llama-vocab.cpp`, applied one after the other, the text between matches kept as
//! pieces too), each piece is mapped byte by byte to GPT-2's printable characters and
//! merged by the `tokenizers` crate's BPE with the file's merge ranks.

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::utils::SysRegex;
use tokenizers::Model;

use super::TokenizerError;

// The regexes, verbatim from llama.cpp (which took them from each model's
// tokenizer.json, with case-insensitive groups spelled out).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// DeepSeek's letter class, spelled out as code-point ranges in its tokenizer.json.
// Escaped: several of these code points (U+1F7D, U+2126, U+212A, ...) change
// under Unicode normalization, which editors apply to literal text.
const DEEPSEEK_LLM_LETTERS: &str =
    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+";
const DEEPSEEK_CJK: &str = "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+";

/// What a `tokenizer.ggml.pre` value means for a gpt2 vocabulary.
pub(super) struct PreTokenizer {
    pub regexes: &'static [&'static str],
    pub ignore_merges: bool,
    /// `Some` where llama.cpp changes the add-BOS default for this pre-tokenizer.
    pub add_bos: Option<bool>,
    pub clean_spaces: bool,
    /// SentencePiece-style BPE (Gemma 4): spaces become `▁`, pieces stay raw UTF-8
    /// (no GPT-2 byte map), unknown bytes fall back to `<0xNN>` tokens, and a piece
    /// of line breaks alone is its own token when the vocabulary has it.
    pub spm_style: bool,
}

/// The pre-tokenizer for `tokenizer.ggml.pre` (absent means "default").
pub(super) fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
    let p = |regexes, clean_spaces| PreTokenizer {
        regexes,
        ignore_merges: false,
        add_bos: None,
        clean_spaces,
        spm_style: false,
    };
    Ok(match pre.unwrap_or("default") {
        "default" => p(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            true,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => PreTokenizer {
            regexes: &[LLAMA3],
            ignore_merges: true,
            add_bos: Some(true),
            clean_spaces: true,
            spm_style: false,
        },
        "dbrx" | "smaug-bpe" => p(&[LLAMA3], true),
        "falcon" => p(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], true),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
            p(&[r"\p{N}", GPT2], true)
        }
        "command-r" | "smollm" => p(&[r"\p{N}", GPT2], false),
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "jina-es" | "jina-de" | "gigachat"
        | "jina-v1-en" | "jina-v2-es" | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" => {
            p(&[GPT2], true)
        }
        "qwen2" => p(&[QWEN2], false),
        "qwen35" => p(&[QWEN35], false),
        "deepseek-llm" => p(
            &[
                r"[\r\n]",
                DEEPSEEK_LLM_LETTERS,
                "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
                r"\s+$",
                DEEPSEEK_CJK,
                r"\p{N}+",
            ],
            false,
        ),
        "deepseek-coder" => p(
            &[
                r"[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                DEEPSEEK_CJK,
                r"\p{N}",
            ],
            false,
        ),
        "stablelm2" | "megrez" => p(&[QWEN2], true),
        "chatglm-bpe" => p(&[LLAMA3], true),
        "poro-chat" => p(&[BLOOM], false),
        "viking" => p(&[BLOOM, r"\p{N}"], false),
        "bloom" | "gpt3-finnish" => p(&[BLOOM], true),
        // llama.cpp turns add_bos on for these whatever the file says.
        "gemma4" | "granite-embed-multi-311m" => PreTokenizer {
            regexes: &[r"[^\n]+|[\n]+"],
            ignore_merges: false,
            add_bos: Some(true),
            clean_spaces: true,
            spm_style: true,
        },
        other => return Err(TokenizerError::UnknownPre(other.to_string())),
    })
}

/// GPT-2's byte -> printable character map (`bytes_to_unicode`).
pub(super) fn byte_encoder() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    map
}

pub(super) struct BpeModel {
    model: BPE,
    regexes: Vec<SysRegex>,
    byte_enc: [char; 256],
    spm_style: bool,
    /// Token ids by text, for pieces of line breaks alone (SentencePiece style).
    newlines: std::collections::HashMap<String, u32>,
}

impl BpeModel {
    /// Builds the model from the vocabulary and the `"left right"` merge strings.
    /// Merges naming a token the vocabulary lacks are dropped (llama.cpp would
    /// form a symbol it then spells byte by byte); repeated merges keep the first
    /// rank, as llama.cpp's rank map does.
    pub(super) fn new(
        texts: &[String],
        merges: &[&str],
        pre: &PreTokenizer,
    ) -> Result<BpeModel, TokenizerError> {
        let vocab: Vocab = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut seen = std::collections::HashSet::with_capacity(merges.len());
        let mut pairs = Vec::with_capacity(merges.len());
        let mut joined = String::new();
        for m in merges {
            // llama.cpp splits at the first space after the first byte.
            let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if !vocab.contains_key(a)
                || !vocab.contains_key(b)
                || !vocab.contains_key(joined.as_str())
            {
                continue;
            }
            if seen.insert((a, b)) {
                pairs.push((a.to_string(), b.to_string()));
            }
        }
        let newlines = vocab
            .iter()
            .filter(|(t, _)| pre.spm_style && t.bytes().all(|b| b == b'\n'))
            .map(|(t, &id)| (t.clone(), id))
            .collect();
        let model = BPE::builder()
            .vocab_and_merges(vocab, pairs)
            .ignore_merges(pre.ignore_merges)
            .byte_fallback(pre.spm_style)
            .build()
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        let regexes = pre
            .regexes
            .iter()
            .map(|r| {
                SysRegex::new(r).map_err(|e| TokenizerError::Regex {
                    regex: r.to_string(),
                    msg: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BpeModel {
            model,
            regexes,
            byte_enc: byte_encoder(),
            spm_style: pre.spm_style,
            newlines,
        })
    }

    /// Tokenizes one fragment of raw text (special tokens already taken out).
    pub(super) fn tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let escaped;
        let text = if self.spm_style {
            escaped = text.replace(' ', "▁");
            escaped.as_str()
        } else {
            text
        };
        let mut word = String::new();
        for (s, e) in self.split(text) {
            word.clear();
            if self.spm_style {
                let piece = &text[s..e];
                if let Some(&id) = self.newlines.get(piece) {
                    out.push(id);
                    continue;
                }
                word.push_str(piece);
            } else {
                word.extend(
                    text.as_bytes()[s..e]
                        .iter()
                        .map(|&b| self.byte_enc[b as usize]),
                );
            }
            let tokens = self
                .model
                .tokenize(&word)
                .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
            out.extend(tokens.iter().map(|t| t.id));
        }
        Ok(())
    }

    /// The pre-tokenizer's pieces of `text`, as byte ranges: each regex in turn
    /// splits every piece into its matches and the text between them.
    fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = vec![(0, text.len())];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(s, e) in &pieces {
                let mut last = 0;
                for (ms, me) in re.find_iter(&text[s..e]) {
                    if ms == me {
                        continue;
                    }
                    if ms > last {
                        next.push((s + last, s + ms));
                    }
                    next.push((s + ms, s + me));
                    last = me;
                }
                if s + last < e {
                    next.push((s + last, e));
                }
            }
            pieces = next;
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let texts: Vec<String> = byte_encoder().iter().map(|c| c.to_string()).collect();
        let model = BpeModel::new(&texts, &[], &pre_tokenizer(Some(pre)).unwrap()).unwrap();
        model
            .split(text)
            .into_iter()
            .map(|(s, e)| text[s..e].to_string())
            .collect()
    }

    #[test]
    fn pre_tokenizers_split_like_their_regexes() {
        let text = "Hello  world's 12345 IT'S\n\n  x";
        assert_eq!(
            pieces("gpt-2", text),
            ["Hello", " ", " world", "'s", " 12345", " IT", "'", "S", "\n\n ", " x"]
        );
        assert_eq!(
            pieces("smollm", text),
            [
                "Hello", " ", " world", "'s", " ", "1", "2", "3", "4", "5", " IT", "'", "S",
                "\n\n ", " x"
            ]
        );
        assert_eq!(
            pieces("llama-bpe", text),
            ["Hello", " ", " world", "'s", " ", "123", "45", " IT", "'S", "\n\n", " ", " x"]
        );
        assert_eq!(
            pieces("qwen2", text),
            [
                "Hello", " ", " world", "'s", " ", "1", "2", "3", "4", "5", " IT", "'S", "\n\n",
                " ", " x"
            ]
        );
        assert_eq!(
            pieces("default", "a+=b 1234"),
            ["a", "+=", "b", " ", "123", "4"]
        );
        assert!(matches!(
            pre_tokenizer(Some("nope")),
            Err(TokenizerError::UnknownPre(_))
        ));
    }

    #[test]
    fn byte_encoder_is_gpt2s() {
        let enc = byte_encoder();
        assert_eq!(
            (enc[b'!' as usize], enc[b' ' as usize], enc[b'\n' as usize]),
            ('!', 'Ġ', 'Ċ')
        );
        let mut all: Vec<char> = enc.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256);
    }
}
