//! GBNF (llama.cpp's grammar format) to llguidance's Lark syntax, so `grammar`
//! accepts what llama-server accepts. Rules `name ::= body` become `name: body`
//! on one line, `root` becomes `start`, `-` in names becomes `_`, character
//! classes and `.` become regexes; strings, `|`, groups, `*`, `+`, `?` and
//! `{m,n}` are the same in both.

/// Converts GBNF text to Lark. Err says where the text is not GBNF.
pub fn gbnf_to_lark(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut body = String::new();
    let mut i = 0;
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let rename = |n: &str| {
        if n == "root" {
            "start".to_string()
        } else {
            n.replace('-', "_")
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!(
                        "unterminated string at character {start} of the grammar"
                    ));
                }
                body.extend(&chars[start..=i]);
                i += 1;
            }
            '[' => {
                let start = i;
                i += 1;
                let mut class = String::from("[");
                while i < chars.len() && chars[i] != ']' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        class.push('\\');
                        class.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if chars[i] == '/' {
                        class.push('\\');
                    }
                    class.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!(
                        "unterminated character class at character {start} of the grammar"
                    ));
                }
                class.push(']');
                body.push_str(&format!(" /{class}/ "));
                i += 1;
            }
            '.' => {
                body.push_str(" /(?s:.)/ ");
                i += 1;
            }
            c if name_char(c) => {
                let start = i;
                while i < chars.len() && name_char(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars[j..].starts_with(&[':', ':', '=']) {
                    if let Some(last) = rules.last_mut() {
                        last.1 = std::mem::take(&mut body);
                    } else if !body.trim().is_empty() {
                        return Err(format!("text before the first rule: '{}'", body.trim()));
                    }
                    rules.push((rename(&name), String::new()));
                    body.clear();
                    i = j + 3;
                } else if c.is_ascii_digit() {
                    body.push_str(&name);
                } else {
                    body.push_str(&format!(" {} ", rename(&name)));
                }
            }
            '\n' | '\r' | '\t' => {
                body.push(' ');
                i += 1;
            }
            _ => {
                body.push(c);
                i += 1;
            }
        }
    }
    match rules.last_mut() {
        Some(last) => last.1 = body,
        None => return Err("no rules: GBNF rules look like `root ::= \"yes\" | \"no\"`".into()),
    }
    if !rules.iter().any(|r| r.0 == "start") {
        return Err("the grammar has no `root` rule".into());
    }
    Ok(rules
        .iter()
        .map(|(n, b)| format!("{n}: {}\n", b.trim()))
        .collect())
}
