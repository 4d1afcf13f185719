//! The multi-line input box: a list of lines and a cursor (row, column in chars).

/// Text being typed. Always holds at least one (possibly empty) line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Editor {
    lines: Vec<String>,
    /// Cursor line.
    row: usize,
    /// Cursor position in `lines[row]`, counted in chars.
    col: usize,
}

impl Default for Editor {
    fn default() -> Self {
        Editor {
            lines: vec![String::new()],
            row: 0,
            col: 0,
        }
    }
}

fn byte_at(s: &str, col: usize) -> usize {
    s.char_indices().nth(col).map_or(s.len(), |(i, _)| i)
}

impl Editor {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// (row, column in chars).
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    pub fn is_empty(&self) -> bool {
        self.lines.len() == 1 && self.lines[0].is_empty()
    }

    /// Replaces the text; the cursor goes to its end.
    pub fn set_text(&mut self, text: &str) {
        self.lines = text.split('\n').map(|l| l.replace('\r', "")).collect();
        self.row = self.lines.len() - 1;
        self.col = self.lines[self.row].chars().count();
    }

    pub fn clear(&mut self) {
        *self = Editor::default();
    }

    pub fn insert_char(&mut self, c: char) {
        if c == '\n' {
            return self.newline();
        }
        if c == '\r' {
            return;
        }
        let line = &mut self.lines[self.row];
        let at = byte_at(line, self.col);
        line.insert(at, c);
        self.col += 1;
    }

    /// Inserts pasted text; newlines split lines, tabs become spaces.
    pub fn insert_str(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '\t' => {
                    for _ in 0..4 {
                        self.insert_char(' ')
                    }
                }
                c if c == '\n' || !c.is_control() => self.insert_char(c),
                _ => {}
            }
        }
    }

    pub fn newline(&mut self) {
        let line = &mut self.lines[self.row];
        let at = byte_at(line, self.col);
        let rest = line.split_off(at);
        self.row += 1;
        self.col = 0;
        self.lines.insert(self.row, rest);
    }

    pub fn backspace(&mut self) {
        if self.col > 0 {
            let line = &mut self.lines[self.row];
            let at = byte_at(line, self.col - 1);
            line.remove(at);
            self.col -= 1;
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.col = self.lines[self.row].chars().count();
            self.lines[self.row].push_str(&line);
        }
    }

    pub fn delete(&mut self) {
        let len = self.lines[self.row].chars().count();
        if self.col < len {
            let line = &mut self.lines[self.row];
            let at = byte_at(line, self.col);
            line.remove(at);
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].push_str(&next);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        if self.col == 0 {
            return self.backspace();
        }
        let chars: Vec<char> = self.lines[self.row].chars().collect();
        let mut start = self.col;
        while start > 0 && chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let line: String = chars[..start].iter().chain(&chars[self.col..]).collect();
        self.lines[self.row] = line;
        self.col = start;
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U).
    pub fn kill_to_start(&mut self) {
        let line = &mut self.lines[self.row];
        let at = byte_at(line, self.col);
        line.replace_range(..at, "");
        self.col = 0;
    }

    pub fn left(&mut self) {
        if self.col > 0 {
            self.col -= 1;
        } else if self.row > 0 {
            self.row -= 1;
            self.col = self.lines[self.row].chars().count();
        }
    }

    pub fn right(&mut self) {
        if self.col < self.lines[self.row].chars().count() {
            self.col += 1;
        } else if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.col = 0;
        }
    }

    pub fn home(&mut self) {
        self.col = 0;
    }

    pub fn end(&mut self) {
        self.col = self.lines[self.row].chars().count();
    }

    /// Moves up a line; false when already on the first line.
    pub fn up(&mut self) -> bool {
        if self.row == 0 {
            return false;
        }
        self.row -= 1;
        self.col = self.col.min(self.lines[self.row].chars().count());
        true
    }

    /// Moves down a line; false when already on the last line.
    pub fn down(&mut self) -> bool {
        if self.row + 1 >= self.lines.len() {
            return false;
        }
        self.row += 1;
        self.col = self.col.min(self.lines[self.row].chars().count());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_newlines_and_backspace_across_lines() {
        let mut e = Editor::default();
        e.insert_str("héllo");
        e.newline();
        e.insert_str("wörld");
        assert_eq!(e.text(), "héllo\nwörld");
        assert_eq!(e.cursor(), (1, 5));
        e.home();
        e.backspace();
        assert_eq!(e.text(), "héllowörld");
        assert_eq!(e.cursor(), (0, 5));
        e.newline();
        assert_eq!(e.lines(), ["héllo", "wörld"]);
        e.up();
        e.end();
        e.delete();
        assert_eq!(e.text(), "héllowörld");
    }

    #[test]
    fn word_and_line_kills() {
        let mut e = Editor::default();
        e.insert_str("one two  three");
        e.delete_word();
        assert_eq!(e.text(), "one two  ");
        e.delete_word();
        assert_eq!(e.text(), "one ");
        e.insert_str("x");
        e.left();
        e.kill_to_start();
        assert_eq!(e.text(), "x");
        assert_eq!(e.cursor(), (0, 0));
    }

    #[test]
    fn paste_splits_lines_and_drops_controls() {
        let mut e = Editor::default();
        e.insert_str("a\r\nb\tc\x07");
        assert_eq!(e.lines(), ["a", "b    c"]);
        e.set_text("x\ny");
        assert_eq!(e.cursor(), (1, 1));
        assert!(e.up());
        assert!(!e.up());
        assert!(e.down());
        assert!(!e.down());
    }
}
