//! Output constraints from requests compiled by llguidance over a real vocabulary
//! (the tiny-llama fixture's), then driven a few tokens. First byte: the input's
//! kind — a chat/completions body whose `response_format` / `grammar` /
//! `json_schema` the server turns into a constraint, or raw Lark, GBNF, regex or
//! JSON Schema text. A bad grammar must be an error, never a panic or a hang.
#![no_main]
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use owl_engine::constrain::{gbnf_to_lark, Advance, Constraint, ConstraintEnv, Grammar};
use owl_engine::gguf::Gguf;
use owl_engine::tokenizer::Tokenizer;

fn env() -> &'static (Arc<ConstraintEnv>, usize) {
    static E: OnceLock<(Arc<ConstraintEnv>, usize)> = OnceLock::new();
    E.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../engine/tests/fixtures/synthetic/tiny-llama-F32.gguf");
        let g = Gguf::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let tok = Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let n = tok.vocab_size();
        (Arc::new(ConstraintEnv::new(&tok).expect("constraint env")), n)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let grammar = match kind % 5 {
        0 => match owl_server::request_constraint(rest) {
            Ok(Some(c)) => c.grammar,
            _ => return,
        },
        1 => Grammar::Lark(text.into_owned()),
        2 => match gbnf_to_lark(&text) {
            Ok(l) => Grammar::Lark(l),
            Err(_) => return,
        },
        3 => Grammar::Regex(text.into_owned()),
        _ => match serde_json::from_str(&text) {
            Ok(v) => Grammar::JsonSchema(v),
            Err(_) => return,
        },
    };
    let (env, n_vocab) = env();
    let Ok(mut m) = env.matcher(&Constraint::new(grammar)) else {
        return;
    };
    // A few steps: mask, take the allowed token the input's bytes point at, advance.
    let mut logits = vec![0f32; *n_vocab];
    for step in 0..8 {
        logits.iter_mut().for_each(|l| *l = 0.0);
        if m.apply(&mut logits).is_err() {
            return;
        }
        let allowed: Vec<u32> = (0..*n_vocab as u32).filter(|&i| logits[i as usize].is_finite()).collect();
        let Some(&pick) = allowed.get(rest.get(step).copied().unwrap_or(0) as usize % allowed.len().max(1)) else {
            return;
        };
        if m.ends_with(pick) {
            return;
        }
        match m.advance(pick) {
            Ok(Advance::Continue) => {}
            _ => return,
        }
    }
});
