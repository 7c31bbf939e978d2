//! Diagnostics for workflow definitions: source positions, errors, and how they render.
//!
//! Every problem found in a definition becomes a [`DefinitionError`] that
//! points at a line and column of the file and renders like a compiler
//! diagnostic, with the offending source line and a caret underline. The
//! rendering is plain text and deterministic (no colors, no terminal
//! detection) so that it can be compared byte for byte in golden tests.

use std::fmt;
use std::path::{Path, PathBuf};

pub use plait_types::source::{SourceFile, Span};

/// One problem in a workflow definition, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file the problem is in, as shown to the user.
    pub file: PathBuf,
    /// Where in the file, when the problem has a position.
    pub span: Option<Span>,
    /// What is wrong, in one line.
    pub message: String,
    /// How to fix it, in one line, when there is something useful to say.
    pub help: Option<String>,
    /// The source line `span` points into, captured when the error is made
    /// so that the error renders on its own, without the file at hand.
    snippet: Option<String>,
}

impl DefinitionError {
    /// An error at `span` in `source`, rendered with the source line.
    ///
    /// The engine uses this for problems it finds after parsing, for example
    /// a step component that does not exist at `StepDefinition::uses_span`,
    /// so that they look the same as parse errors.
    #[must_use]
    pub fn at(
        source: &SourceFile,
        span: Span,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        Self {
            file: source.path.clone(),
            span: Some(span),
            message: message.into(),
            help,
            snippet: source.line(span.line).map(str::to_owned),
        }
    }

    /// An error about the file as a whole, with no position.
    #[must_use]
    pub fn in_file(
        file: impl Into<PathBuf>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        Self {
            file: file.into(),
            span: None,
            message: message.into(),
            help,
            snippet: None,
        }
    }

    /// The source line the error points into, if it has one.
    #[must_use]
    pub fn snippet(&self) -> Option<&str> {
        self.snippet.as_deref()
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = display_path(&self.file);
        write!(f, "error: {}", self.message)?;
        // The gutter is one column wider than the line number, as in the
        // layout rustc made familiar.
        let width = self.span.map_or(1, |span| span.line.to_string().len());
        let gutter = " ".repeat(width + 1);
        match self.span {
            Some(span) => {
                write!(f, "\n{gutter}--> {file}:{}:{}", span.line, span.column)?;
                if let Some(line) = &self.snippet {
                    write!(f, "\n{gutter} |")?;
                    write!(f, "\n{}", format!(" {} | {line}", span.line).trim_end())?;
                    write!(f, "\n{gutter} | {}", underline(line, span))?;
                }
            }
            None => write!(f, "\n{gutter}--> {file}")?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n{gutter}= help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionError {}

/// The caret line under `line`: the text before the span becomes blanks
/// (tabs kept, so the carets line up in a terminal), then one caret per
/// character of the span, at least one, never past the end of the line
/// unless the span starts there.
fn underline(line: &str, span: Span) -> String {
    let start = span.column.saturating_sub(1);
    let mut out: String = line
        .chars()
        .chain(std::iter::repeat(' '))
        .take(start)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let available = line.chars().count().saturating_sub(start);
    let carets = span.len.min(available).max(1);
    out.extend(std::iter::repeat_n('^', carets));
    out
}

/// Paths render with `/` on every platform so that golden files match.
fn display_path(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// Every problem found in one definition file.
///
/// Parsing does not stop at the first problem: the user sees them all at
/// once, in file order. Displays as one block per error, blank-line separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefinitionErrors {
    errors: Vec<DefinitionError>,
}

impl DefinitionErrors {
    /// A collection of `errors`, in the order given.
    #[must_use]
    pub fn new(errors: Vec<DefinitionError>) -> Self {
        Self { errors }
    }

    /// Adds one error.
    pub fn push(&mut self, error: DefinitionError) {
        self.errors.push(error);
    }

    /// How many errors there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, DefinitionError> {
        self.errors.iter()
    }

    /// The errors as a vector.
    #[must_use]
    pub fn into_vec(self) -> Vec<DefinitionError> {
        self.errors
    }

    /// Orders the errors by position (position-less ones first); stable, so
    /// errors at the same place keep the order they were found in.
    pub fn sort(&mut self) {
        self.errors.sort_by_key(|error| error.span);
    }
}

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

impl From<DefinitionError> for DefinitionErrors {
    fn from(error: DefinitionError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl From<Vec<DefinitionError>> for DefinitionErrors {
    fn from(errors: Vec<DefinitionError>) -> Self {
        Self { errors }
    }
}

impl IntoIterator for DefinitionErrors {
    type Item = DefinitionError;
    type IntoIter = std::vec::IntoIter<DefinitionError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a DefinitionErrors {
    type Item = &'a DefinitionError;
    type IntoIter = std::slice::Iter<'a, DefinitionError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Collects errors for one source file while it is parsed and validated.
pub(crate) struct Diagnostics<'s> {
    source: &'s SourceFile,
    errors: DefinitionErrors,
}

impl<'s> Diagnostics<'s> {
    pub(crate) fn new(source: &'s SourceFile) -> Self {
        Self {
            source,
            errors: DefinitionErrors::default(),
        }
    }

    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>, help: Option<String>) {
        self.errors
            .push(DefinitionError::at(self.source, span, message, help));
    }

    /// Records an error about the whole file.
    pub(crate) fn file_error(&mut self, message: impl Into<String>, help: Option<String>) {
        self.errors
            .push(DefinitionError::in_file(&self.source.path, message, help));
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The collected errors in file order.
    pub(crate) fn finish(self) -> DefinitionErrors {
        let mut errors = self.errors;
        errors.sort();
        errors
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a
/// plausible typo: a case-insensitive match, or an edit distance (counting a
/// swap of neighbours as one edit) of at most a third of the word's length.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .map(|candidate| {
            let distance = if candidate.eq_ignore_ascii_case(word) {
                0
            } else {
                edit_distance(word, candidate)
            };
            (distance, candidate)
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: Levenshtein plus adjacent swaps.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Formats a list of names for messages: `a, b, c`.
pub(crate) fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    names
        .into_iter()
        .map(|name| name.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}
