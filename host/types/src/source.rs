//! Places in a source file (a workflow definition, a policy): the span
//! an error points at and the text it quotes.

use std::fmt;
use std::path::PathBuf;

/// A position in a definition file, with the length of the text it covers.
///
/// `line` and `column` are 1-based and count characters, not bytes. `len` is
/// how many characters the caret line underlines (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// The 1-based line number.
    pub line: usize,
    /// The 1-based column, in characters.
    pub column: usize,
    /// The number of characters the span covers on its line (at least 1).
    pub len: usize,
}

impl Span {
    /// A span of `len` characters starting at `line`:`column` (both 1-based).
    #[must_use]
    pub fn new(line: usize, column: usize, len: usize) -> Self {
        Self {
            line,
            column,
            len: len.max(1),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The text of a definition file and the path it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path shown in diagnostics, as the user gave it.
    pub path: PathBuf,
    /// The whole text of the file (a leading byte order mark removed).
    pub text: String,
}

impl SourceFile {
    /// Wraps `text` read from `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The text of the 1-based line `line`, without its line break.
    ///
    /// A file ending in a line break has one more, empty, line: YAML parsers
    /// report end-of-file errors there.
    #[must_use]
    pub fn line(&self, line: usize) -> Option<&str> {
        let text = self.text.split('\n').nth(line.checked_sub(1)?)?;
        Some(text.strip_suffix('\r').unwrap_or(text))
    }
}
