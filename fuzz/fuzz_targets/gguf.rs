//! Arbitrary bytes as a GGUF file: header, metadata and tensor table, then everything
//! a load reads from them (model config, encoder config, tokenizer, chat template),
//! and every tensor's bytes touched. Errors are fine; a panic or overflow is a finding.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use owl_engine::chat::{ChatMessage, ChatTemplate};
use owl_engine::gguf::Gguf;
use owl_engine::models::{bert::EncoderConfig, transformer::Config};
use owl_engine::tokenizer::{IncrementalDecoder, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::from_bytes(Arc::new(data.to_vec())) else {
        return;
    };
    let mut sum = 0usize;
    for t in g.tensors() {
        sum = sum.wrapping_add(g.tensor_data(t).len());
    }
    for (_, v) in g.metadata().iter() {
        sum = sum.wrapping_add(v.display_abbrev(4, 16).len());
    }
    std::hint::black_box(sum);
    let _ = Config::from_gguf(&g);
    let _ = EncoderConfig::from_gguf(&g);
    if let Ok(tok) = Tokenizer::from_gguf(&g) {
        for text in ["Hello world", " <s>x</s>\n\t 123 ünï"] {
            if let Ok(ids) = tok.encode(text, true, true) {
                let mut d = IncrementalDecoder::new();
                for &id in &ids {
                    let _ = d.push(&tok, id);
                }
                let _ = d.flush();
                let _ = tok.decode(&ids);
            }
        }
    }
    if let Ok(t) = ChatTemplate::from_gguf(&g, None) {
        let _ = t.render(&[ChatMessage::new("user", "hi")], true);
    }
});
