//! What a request asks its output to look like: OpenAI's `response_format`
//! (`text`, `json_object`, `json_schema`) and llama-server's `grammar` (Lark, or
//! GBNF, converted) and `json_schema` extensions, as an engine [`Constraint`].
//! Whatever owl cannot honour is refused with a 400 that names the field, never
//! ignored: a schema accepted and not enforced is the failure apps fear most.
//! The grammar itself is compiled by the engine at submit time, so a schema
//! llguidance rejects is a 400 with its message before any token is generated.

use owl_engine::constrain::{gbnf_to_lark, Constraint, Grammar};
use serde_json::Value;

use crate::error::ApiError;

/// The request's output constraint, if it asks for one.
pub fn constraint(
    response_format: Option<Value>,
    grammar: Option<Value>,
    json_schema: Option<Value>,
) -> Result<Option<Constraint>, ApiError> {
    let response_format = response_format.filter(|v| !v.is_null() && !is_text(v));
    let grammar = grammar.filter(|v| !v.is_null());
    let json_schema = json_schema.filter(|v| !v.is_null());
    let asked: Vec<&str> = [
        ("response_format", response_format.is_some()),
        ("grammar", grammar.is_some()),
        ("json_schema", json_schema.is_some()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| *name)
    .collect();
    if asked.len() > 1 {
        return Err(ApiError::invalid(
            asked[1],
            format!("give one of `{}`, not both", asked.join("` and `")),
        ));
    }
    let grammar = match (response_format, grammar, json_schema) {
        (Some(rf), _, _) => response_format_grammar(&rf)?,
        (_, Some(g), _) => grammar_text(&g)?,
        (_, _, Some(s)) => Grammar::JsonSchema(schema("json_schema", s)?),
        _ => return Ok(None),
    };
    Ok(Some(Constraint::new(grammar)))
}

fn is_text(rf: &Value) -> bool {
    rf.get("type").and_then(Value::as_str) == Some("text")
}

fn response_format_grammar(rf: &Value) -> Result<Grammar, ApiError> {
    let param = "response_format";
    let Some(obj) = rf.as_object() else {
        return Err(ApiError::invalid(
            param,
            "`response_format` must be an object with a `type`",
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        // llama-server's extension: `json_object` with a `schema` constrains to it.
        Some("json_object") => match obj.get("schema") {
            Some(s) => Ok(Grammar::JsonSchema(schema("response_format.schema", s.clone())?)),
            None => Ok(Grammar::JsonObject),
        },
        Some("json_schema") => {
            let Some(js) = obj.get("json_schema").and_then(Value::as_object) else {
                return Err(ApiError::invalid(
                    param,
                    "`response_format.json_schema` must be an object with a `schema`",
                ));
            };
            match js.get("schema") {
                Some(s) => Ok(Grammar::JsonSchema(schema("response_format.json_schema.schema", s.clone())?)),
                // OpenAI allows a missing schema: any JSON object then.
                None => Ok(Grammar::JsonObject),
            }
        }
        Some(other) => Err(ApiError::invalid(
            param,
            format!("`response_format.type` is {other:?}: use \"text\", \"json_object\" or \"json_schema\""),
        )),
        None => Err(ApiError::invalid(param, "`response_format` needs a `type`")),
    }
}

fn schema(param: &str, s: Value) -> Result<Value, ApiError> {
    match s {
        Value::Object(_) | Value::Bool(_) => Ok(s),
        // Some clients send the schema as a JSON string.
        Value::String(text) => serde_json::from_str::<Value>(&text)
            .ok()
            .filter(|v| v.is_object() || v.is_boolean())
            .ok_or_else(|| {
                ApiError::invalid(
                    param,
                    format!("`{param}` is a string that is not a JSON schema object"),
                )
            }),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a JSON Schema object"),
        )),
    }
}

/// `grammar`: Lark as llguidance takes it, or GBNF (llama.cpp's), recognised by `::=`.
fn grammar_text(g: &Value) -> Result<Grammar, ApiError> {
    let Some(text) = g.as_str() else {
        return Err(ApiError::invalid(
            "grammar",
            "`grammar` must be a string (Lark or GBNF)",
        ));
    };
    if text.contains("::=") {
        let lark = gbnf_to_lark(text)
            .map_err(|e| ApiError::invalid("grammar", format!("GBNF grammar: {e}")))?;
        Ok(Grammar::Lark(lark))
    } else {
        Ok(Grammar::Lark(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_form_gives_its_grammar() {
        let c = |rf, g, s| constraint(rf, g, s).map(|c| c.map(|c| c.grammar));
        assert_eq!(c(None, None, None).unwrap(), None);
        assert_eq!(c(Some(json!({"type": "text"})), None, None).unwrap(), None);
        assert_eq!(
            c(Some(json!({"type": "json_object"})), None, None).unwrap(),
            Some(Grammar::JsonObject)
        );
        // llama-server's json_object with a schema: the schema holds, and a bad one is a 400.
        assert_eq!(
            c(Some(json!({"type": "json_object", "schema": {"const": "42"}})), None, None).unwrap(),
            Some(Grammar::JsonSchema(json!({"const": "42"})))
        );
        let e = c(Some(json!({"type": "json_object", "schema": 123})), None, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.schema"));
        let s = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let rf = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}});
        assert_eq!(
            c(Some(rf), None, None).unwrap(),
            Some(Grammar::JsonSchema(s.clone()))
        );
        assert_eq!(
            c(None, None, Some(s.clone())).unwrap(),
            Some(Grammar::JsonSchema(s))
        );
        assert_eq!(
            c(None, Some(json!("start: \"yes\"")), None).unwrap(),
            Some(Grammar::Lark("start: \"yes\"".into()))
        );
        assert!(matches!(
            c(None, Some(json!("root ::= \"yes\" | \"no\"")), None).unwrap(),
            Some(Grammar::Lark(_))
        ));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let param = |r: Result<Option<Constraint>, ApiError>| r.unwrap_err().param.unwrap();
        assert_eq!(
            param(constraint(Some(json!({"type": "xml"})), None, None)),
            "response_format"
        );
        assert_eq!(
            param(constraint(Some(json!("json")), None, None)),
            "response_format"
        );
        assert_eq!(param(constraint(None, Some(json!(3)), None)), "grammar");
        assert_eq!(
            param(constraint(None, None, Some(json!([1])))),
            "json_schema"
        );
        assert_eq!(
            param(constraint(
                Some(json!({"type": "json_object"})),
                Some(json!("start: \"a\"")),
                None
            )),
            "grammar"
        );
    }
}
