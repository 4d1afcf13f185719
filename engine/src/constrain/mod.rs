//! Constrained decoding: a grammar (JSON Schema, regex, Lark or GBNF) limits which
//! tokens a sequence may sample. llguidance computes the token mask from a trie of
//! the model's vocabulary bytes (`vocab.rs`, built once per engine); each
//! constrained sequence carries its own matcher (`matcher.rs`).

mod gbnf;
mod matcher;
mod trigger;
mod vocab;

pub use gbnf::gbnf_to_lark;
pub use matcher::{Advance, Mask, SeqConstraint};
pub use trigger::{Scan, Trigger};
pub use vocab::ConstraintEnv;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON Schema.
    JsonSchema(serde_json::Value),
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
    /// A grammar in llguidance's Lark syntax (GBNF goes through `gbnf_to_lark` first).
    Lark(String),
}

/// A grammar and when it starts to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub grammar: Grammar,
    pub trigger: Option<Trigger>,
    /// `owl bench --json-schema`: a grammar that completes (or accepts the end token)
    /// starts over instead of ending the sequence, so tg runs all its tokens under the mask.
    pub repeat: bool,
}

impl Constraint {
    /// Constrained from the first generated token.
    pub fn new(grammar: Grammar) -> Constraint {
        Constraint {
            grammar,
            trigger: None,
            repeat: false,
        }
    }
}

/// JSON as `json.dumps` writes it (`", "` and `": "`, no other whitespace between
/// tokens) unless the schema sets its own `x-guidance` options. llguidance's default
/// allows any whitespace between tokens, and a small model at temperature 1 can fill
/// its whole `max_tokens` with newlines: valid, never finished.
fn compact(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
        });
    } else if schema == serde_json::Value::Bool(true) {
        return compact(serde_json::json!({}));
    }
    schema
}

impl Grammar {
    pub(crate) fn to_llg(&self) -> llguidance::api::TopLevelGrammar {
        use llguidance::api::TopLevelGrammar;
        match self {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"}))),
            Grammar::JsonSchema(v) => TopLevelGrammar::from_json_schema(compact(v.clone())),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
            Grammar::Lark(l) => TopLevelGrammar::from_lark(l.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llguidance::toktrie::TokRxInfo;

    use super::*;

    /// Every byte as a token, a few multi-byte words, and an end token.
    fn env() -> (Arc<ConstraintEnv>, Vec<Vec<u8>>) {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for w in ["true", "false", "{\"", "\":", "null", "yes", "no"] {
            words.push(w.as_bytes().to_vec());
        }
        words.push(b"\xFF<|end|>".to_vec());
        let info = TokRxInfo::new(words.len() as u32, words.len() as u32 - 1);
        (
            Arc::new(ConstraintEnv::from_words(info, &words).unwrap()),
            words,
        )
    }

    fn id(words: &[Vec<u8>], w: &str) -> u32 {
        words.iter().position(|x| x == w.as_bytes()).unwrap() as u32
    }

    fn allowed(c: &mut SeqConstraint, n: usize) -> Vec<bool> {
        let mut l = vec![0.0f32; n];
        c.apply(&mut l).unwrap();
        l.iter().map(|v| v.is_finite()).collect()
    }

    #[test]
    fn schema_mask_allows_only_valid_continuations() {
        let (env, words) = env();
        let n = words.len();
        let mut c = env
            .matcher(&Constraint::new(Grammar::JsonSchema(
                serde_json::json!({"type": "boolean"}),
            )))
            .unwrap();
        let a = allowed(&mut c, n + 3);
        assert!(
            a[id(&words, "true") as usize] && a[id(&words, "false") as usize] && a[b't' as usize]
        );
        assert!(!a[id(&words, "null") as usize] && !a[b'x' as usize] && !a[b'1' as usize]);
        assert!(
            !a[env.eos as usize],
            "the end token is allowed only once the value is complete"
        );
        assert!(
            !a[n] && !a[n + 2],
            "ids past the vocabulary are never allowed"
        );
        assert_eq!(c.advance(id(&words, "t")).unwrap(), Advance::Continue);
        assert!(
            !allowed(&mut c, n)[env.eos as usize],
            "`t` is not a value yet"
        );
        c.advance(b'r' as u32).unwrap();
        c.advance(b'u' as u32).unwrap();
        assert_eq!(
            c.advance(b'e' as u32).unwrap(),
            Advance::Complete,
            "`true` completes the grammar"
        );
        let a = allowed(&mut c, n);
        assert!(a[env.eos as usize], "after `true` the grammar accepts");
        assert!(!a[b'x' as usize]);
        assert!(c.ends_with(env.eos));
    }

    #[test]
    fn regex_completes_and_trigger_defers() {
        let (env, words) = env();
        let mut c = env
            .matcher(&Constraint::new(Grammar::Regex("(yes|no)".into())))
            .unwrap();
        let a = allowed(&mut c, words.len());
        assert!(a[id(&words, "yes") as usize] && !a[id(&words, "true") as usize]);
        assert_eq!(c.advance(id(&words, "yes")).unwrap(), Advance::Complete);
        let a = allowed(&mut c, words.len());
        assert!(
            a[env.eos as usize] && a.iter().filter(|&&x| x).count() == 1,
            "a complete grammar allows only the end"
        );
        // With a trigger, anything goes until the trigger text has been produced.
        let t = Constraint {
            grammar: Grammar::Regex("[0-9]+".into()),
            trigger: Some(Trigger::exact("no")),
            repeat: false,
        };
        let mut c = env.matcher(&t).unwrap();
        assert!(!c.is_active());
        assert!(allowed(&mut c, words.len()).iter().all(|&a| a));
        c.advance(id(&words, "true")).unwrap();
        c.advance(b'n' as u32).unwrap();
        assert!(!c.is_active());
        c.advance(b'o' as u32).unwrap();
        assert!(c.is_active(), "the trigger may span tokens");
        let a = allowed(&mut c, words.len());
        assert!(a[b'7' as usize] && !a[b'x' as usize] && !a[env.eos as usize]);
    }

    #[test]
    fn bad_grammars_are_errors_with_a_message() {
        let (env, _) = env();
        let e = env
            .matcher(&Constraint::new(Grammar::JsonSchema(
                serde_json::json!({"type": "nonsense"}),
            )))
            .unwrap_err();
        assert!(!e.is_empty(), "{e}");
        let e = env
            .matcher(&Constraint::new(Grammar::Lark(
                "start: missing_rule".into(),
            )))
            .unwrap_err();
        assert!(e.contains("missing_rule"), "{e}");
    }

    #[test]
    fn gbnf_converts_to_lark_that_compiles() {
        let g = "# yes or no, then digits\nroot ::= answer \" \" num-list\nanswer ::= (\"yes\" | \"no\")\nnum-list ::= [0-9]{1,3}\n  (\",\" [0-9])*\n";
        let lark = gbnf_to_lark(g).unwrap();
        assert_eq!(lark.lines().count(), 3, "one line per rule: {lark}");
        assert!(
            lark.starts_with("start: answer")
                && lark.contains("num_list: /[0-9]/")
                && !lark.contains("::="),
            "{lark}"
        );
        let (env, words) = env();
        let mut c = env.matcher(&Constraint::new(Grammar::Lark(lark))).unwrap();
        c.advance(id(&words, "no")).unwrap();
        c.advance(b' ' as u32).unwrap();
        let a = allowed(&mut c, words.len());
        assert!(a[b'5' as usize] && !a[b',' as usize] && !a[env.eos as usize]);
        assert!(gbnf_to_lark("answer ::= \"x\"")
            .unwrap_err()
            .contains("root"));
        assert!(gbnf_to_lark("root ::= \"x")
            .unwrap_err()
            .contains("unterminated"));
        assert!(gbnf_to_lark("").is_err());
    }
}
