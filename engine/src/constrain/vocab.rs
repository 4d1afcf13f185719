//! The vocabulary as llguidance sees it: every token's bytes in a trie, special
//! tokens marked with llguidance's 0xFF prefix so grammars never produce them by
//! accident. Built once per engine, on the first constrained request.

use std::sync::Arc;

use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::ParserFactory;

use super::{Constraint, SeqConstraint};
use crate::tokenizer::Tokenizer;

/// The shared, read-only part of constrained decoding for one model.
pub struct ConstraintEnv {
    factory: ParserFactory,
    /// The token a finished grammar allows (the model's EOS, or its first end-of-generation token).
    pub eos: u32,
    /// Tokens in the trie; ids at or above it (embedding padding) are never allowed.
    pub n_vocab: usize,
}

impl ConstraintEnv {
    pub fn new(tok: &Tokenizer) -> Result<ConstraintEnv, String> {
        let n = tok.vocab_size();
        let eos = tok
            .eos()
            .or_else(|| tok.eog_tokens().first().copied())
            .ok_or("the model has no end-of-sequence token, so a grammar could never end")?;
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                if tok.is_control(id) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tok.token_text(id).unwrap_or("").as_bytes());
                    w
                } else {
                    tok.token_to_piece(id)
                }
            })
            .collect();
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tok.bos();
        info.tok_end_of_turn = tok.eot();
        Self::from_words(info, &words)
    }

    /// From each token's bytes (special tokens start with 0xFF), in id order.
    pub(crate) fn from_words(info: TokRxInfo, words: &[Vec<u8>]) -> Result<ConstraintEnv, String> {
        let (eos, n) = (info.tok_eos, words.len());
        let trie = TokTrie::from(&info, words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(ConstraintEnv {
            factory,
            eos,
            n_vocab: n,
        })
    }

    pub(crate) fn tok_env(&self) -> &TokEnv {
        self.factory.tok_env()
    }

    /// Compiles the grammar for one sequence; the error is llguidance's message.
    pub fn matcher(self: &Arc<Self>, c: &Constraint) -> Result<SeqConstraint, String> {
        let parser = self
            .factory
            .create_parser(c.grammar.to_llg())
            .map_err(|e| e.to_string())?;
        let m = llguidance::Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(e);
        }
        Ok(SeqConstraint::new(
            self.clone(),
            m,
            c.trigger.clone(),
            c.repeat,
        ))
    }
}
