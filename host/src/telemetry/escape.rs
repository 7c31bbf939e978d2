//! Text from guests and definitions, made safe to print on a terminal.
//!
//! A step's log message, a component's description or a name quoted in an
//! error can hold ESC and OSC sequences (clear the screen, retitle the
//! terminal), carriage returns and newlines (forge a host log line such as
//! `INFO plait::executor: run succeeded`), or bidirectional overrides that
//! reorder what the reader sees. [`terminal`] writes each such character
//! as a visible escape (`\u{1b}`, `\n`), so what reaches the terminal is
//! exactly one line of plain text. JSON output needs none of this: JSON
//! escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: a C0 or C1 control
/// character, DEL, or a bidirectional formatting character (the embeddings
/// and overrides U+202A–U+202E, the isolates U+2066–U+2069, and the marks
/// U+200E, U+200F and U+061C).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

/// `text` with every [unsafe](is_unsafe) character written as an escape:
/// `\n`, `\r`, `\t`, else `\u{hex}`. Borrowed when nothing needed escaping.
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// `text` escaped as [`terminal`] does, line by line: the newlines stay
/// (for a block the host laid out itself, like a rendered definition
/// error), every other unsafe character is escaped.
pub fn terminal_lines(text: &str) -> String {
    text.split('\n')
        .map(terminal)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A compact JSON document (as `serde_json::to_string` writes it: no raw
/// control characters outside strings) with the [unsafe](is_unsafe)
/// characters
/// serde_json leaves as they are (DEL, the C1 controls, bidi formatting)
/// written as `\uXXXX` escapes: the same JSON value, safe to print.
pub fn json(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        // Every unsafe character is in the Basic Multilingual Plane, and
        // compact JSON has none of them outside its strings.
        if is_unsafe(c) {
            let _ = write!(escaped, "\\u{:04x}", c as u32);
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(terminal("plain text, é ü 日本"), Cow::Borrowed(_)));
        assert_eq!(
            terminal("\u{1b}[2J\u{1b}]0;owned\u{7}done\r\n12:00 INFO x"),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}done\\r\\n12:00 INFO x"
        );
        assert_eq!(
            terminal("a\u{202E}b\u{2066}c\u{9b}d\u{7f}"),
            "a\\u{202e}b\\u{2066}c\\u{9b}d\\u{7f}"
        );
        assert_eq!(terminal_lines("one\u{1b}\ntwo\r"), "one\\u{1b}\ntwo\\r");
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_raw_and_stays_the_same_value() {
        let value = serde_json::json!({"m": "a\u{1b}b\u{202e}c\u{9b}d\u{7f}é"});
        let text = value.to_string();
        let escaped = json(&text);
        assert!(!escaped.chars().any(is_unsafe), "{escaped}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&escaped).unwrap(),
            value
        );
    }
}
