//! The text that starts a lazy grammar (`tool_choice: auto`), and how it is found
//! in the output. A JSON trigger such as `{"name": "` tolerates JSON's whitespace,
//! so a pretty-printed call (`{\n  "name": "`, often after a ```` ```json ```` fence)
//! fires it as the compact one does; the grammar then covers what follows.

/// Lazy constraint: free generation until the output contains the trigger; from there on
/// the grammar applies to what follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    /// A string such as `<tool_call>` (possibly one special token's text) or `{"name": "`.
    pub text: String,
    /// Whitespace is free as between JSON tokens: a space in `text` matches any run of
    /// whitespace (none too), and so do the gaps after `{ [ , :` and before `: , } ]`.
    pub json_ws: bool,
}

/// Where a trigger stands in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// It spans `start..end`.
    Found { start: usize, end: usize },
    /// Not there; a match could still begin at `from` (the text's length when none can).
    Pending { from: usize },
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// How a match starting at `hay[0]` ends.
enum Try {
    Matched(usize),
    /// The text ended inside a possible match.
    Partial,
    Failed,
}

impl Trigger {
    /// A trigger matched byte for byte.
    pub fn exact(text: &str) -> Trigger {
        Trigger { text: text.into(), json_ws: false }
    }

    /// A JSON trigger, whitespace-tolerant.
    pub fn json(text: &str) -> Trigger {
        Trigger { text: text.into(), json_ws: true }
    }

    fn try_at(&self, hay: &[u8]) -> Try {
        let t = self.text.as_bytes();
        let (mut i, mut j) = (0, 0);
        let skip = |j: &mut usize| {
            while *j < hay.len() && is_ws(hay[*j]) {
                *j += 1;
            }
        };
        while i < t.len() {
            let c = t[i];
            if self.json_ws && c == b' ' {
                skip(&mut j);
                i += 1;
                continue;
            }
            if self.json_ws && i > 0 && matches!(c, b':' | b',' | b'}' | b']') {
                skip(&mut j);
            }
            if j == hay.len() {
                return Try::Partial;
            }
            if hay[j] != c {
                return Try::Failed;
            }
            i += 1;
            j += 1;
            if self.json_ws && i < t.len() && matches!(c, b'{' | b'[' | b',' | b':') {
                skip(&mut j);
            }
        }
        Try::Matched(j)
    }

    /// The first match in `hay` starting at or after `from`.
    pub fn scan(&self, hay: &[u8], from: usize) -> Scan {
        let mut pending = None;
        for start in from..hay.len() {
            match self.try_at(&hay[start..]) {
                Try::Matched(len) => return Scan::Found { start, end: start + len },
                Try::Partial => {
                    pending.get_or_insert(start);
                }
                Try::Failed => {}
            }
        }
        Scan::Pending { from: pending.unwrap_or(hay.len()) }
    }

    /// Where the first match in `text` starts, if there is one.
    pub fn find(&self, text: &str) -> Option<usize> {
        match self.scan(text.as_bytes(), 0) {
            Scan::Found { start, .. } => Some(start),
            Scan::Pending { .. } => None,
        }
    }

    /// How much of `text` is surely no part of a trigger: up to a match, or up to
    /// the earliest start of a possible match the text ends inside.
    pub fn releasable(&self, text: &str) -> usize {
        match self.scan(text.as_bytes(), 0) {
            Scan::Found { start, .. } => start,
            Scan::Pending { from } => from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "{\"name\": \"";

    #[test]
    fn json_triggers_fire_on_pretty_printed_calls() {
        let t = Trigger::json(BARE);
        for (text, start, end) in [
            ("{\"name\": \"f\"", 0, 10),
            ("```json\n{\n  \"name\": \"f\"", 8, 21),
            ("x {\"name\":\"f\"", 2, 11),
            ("{ \"name\" :  \"f\"", 0, 13),
            ("{\r\n\t\"name\":\n\"", 0, 13),
        ] {
            assert_eq!(t.scan(text.as_bytes(), 0), Scan::Found { start, end }, "{text:?}");
        }
        for text in ["{\"names\": \"f\"", "{name: \"f\"", "{\"name\": 3", "\"name\": \"f\""] {
            assert!(matches!(t.scan(text.as_bytes(), 0), Scan::Pending { .. }), "{text:?}");
        }
        // A text that ends inside a possible match holds it back from its start.
        assert_eq!(t.releasable("Sure:\n```json\n{\n  \"na"), 14);
        assert_eq!(t.releasable("Sure: {"), 6);
        assert_eq!(t.releasable("a {b} c"), 7);
        assert_eq!(t.scan(b"ab {\n ", 0), Scan::Pending { from: 3 });
        assert_eq!(t.scan(b"{} {\"name\": \"", 1), Scan::Found { start: 3, end: 13 });
    }

    #[test]
    fn exact_triggers_match_byte_for_byte() {
        let t = Trigger::exact("[TOOL_CALLS]");
        assert_eq!(t.find("ok [TOOL_CALLS]["), Some(3));
        assert_eq!(t.find("ok [ TOOL_CALLS]["), None);
        assert_eq!(t.releasable("ok [TOOL"), 3);
        let t = Trigger::exact(BARE);
        assert_eq!(t.find("{\n  \"name\": \""), None);
    }
}
