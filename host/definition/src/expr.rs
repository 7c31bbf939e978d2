//! `${ ... }` expressions: a strict subset of jq path syntax.
//!
//! Expressions only select: `.input` and `.steps.ID.output` followed by
//! `.key`, `["key"]` and `[N]` accessors, the run metadata `.run.id` and
//! `.run.workflow`, and blob references `.blobs.NAME`,
//! `.steps.ID.blobs.NAME` and the blob sets `.blobs`, `.steps.ID.blobs`.
//! Everything accepted here means the same in jq, so a later version can
//! hand expressions to a jq implementation without breaking definitions
//! (except that keys and step ids may contain `-`, which jq would need
//! quoted).
//!
//! A string is an expression only when it is wholly one `${ ... }`; any
//! other string, even one containing `${`, is literal text.

use std::fmt;

use serde_json::Value;

use super::StepId;

/// One step along a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Accessor {
    /// `.key` or `["key"]`: an object member.
    Key(String),
    /// `[N]`: an array element.
    Index(usize),
}

/// An expression that selects a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JsonRef {
    /// `.input...`: the workflow input document, then a path into it.
    Input(Vec<Accessor>),
    /// `.steps.ID.output...`: an earlier step's output, then a path into it.
    StepOutput {
        /// The step whose output is read.
        step: StepId,
        /// The path into that output.
        path: Vec<Accessor>,
    },
    /// `.run.id`: the run's identifier, a string.
    RunId,
    /// `.run.workflow`: the workflow's name, a string.
    WorkflowName,
}

/// Where blobs come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobSource {
    /// The blobs attached to the run (`--file NAME=PATH`): `.blobs`.
    WorkflowInput,
    /// The blobs an earlier step output: `.steps.ID.blobs`.
    Step(StepId),
}

/// One named blob from a source: `.blobs.NAME` or `.steps.ID.blobs.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobRef {
    /// Where the blob comes from.
    pub source: BlobSource,
    /// Its name in that source.
    pub name: String,
}

/// A parsed `${ ... }` expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expression {
    /// Selects JSON; allowed in `input:` and `output:`.
    Json(JsonRef),
    /// Selects one blob; allowed as a value of a `blobs:` mapping.
    Blob(BlobRef),
    /// Selects every blob of a source; allowed as the whole `blobs:` value.
    BlobSet(BlobSource),
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something specific to say.
    pub help: Option<String>,
}

impl Expression {
    /// Parses `text` when it is wholly one `${ ... }` expression.
    ///
    /// Returns `Ok(None)` for literal text: a string that does not start with
    /// `${` and end with `}`, or in which the first `${ ... }` closes before
    /// the end (`"${ .a } and ${ .b }"`), since interpolation is not
    /// supported and such text is taken as written.
    ///
    /// # Errors
    /// When `text` is shaped like an expression but its path is invalid.
    pub fn parse(text: &str) -> Result<Option<Expression>, ExprError> {
        match body(text) {
            Some(body) => Cursor { text: body, pos: 0 }.expression().map(Some),
            None => Ok(None),
        }
    }

    /// The step this expression reads from, if any.
    #[must_use]
    pub fn step(&self) -> Option<&StepId> {
        match self {
            Expression::Json(json) => json.step(),
            Expression::Blob(blob) => blob.source.step(),
            Expression::BlobSet(source) => source.step(),
        }
    }
}

impl JsonRef {
    /// The step this expression reads from, if any.
    #[must_use]
    pub fn step(&self) -> Option<&StepId> {
        match self {
            JsonRef::StepOutput { step, .. } => Some(step),
            _ => None,
        }
    }
}

impl BlobSource {
    /// The step the blobs come from, if any.
    #[must_use]
    pub fn step(&self) -> Option<&StepId> {
        match self {
            BlobSource::Step(step) => Some(step),
            BlobSource::WorkflowInput => None,
        }
    }
}

/// The text between `${` and the final `}`, if the whole string is one
/// expression. Braces are counted outside jq strings, so `${ {a: .x} }` is
/// one expression, while in `${ .a } and ${ .b }` the first expression
/// closes before the end and the string is literal text.
pub(crate) fn body(text: &str) -> Option<&str> {
    let body = text.strip_prefix("${")?.strip_suffix('}')?;
    let mut in_string = false;
    let mut escaped = false;
    let mut depth = 0usize;
    for c in body.chars() {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (_, '"') => in_string = !in_string,
            (false, '{') => depth += 1,
            (false, '}') if depth == 0 => return None,
            (false, '}') => depth -= 1,
            _ => {}
        }
    }
    Some(body)
}

/// `[A-Za-z_][A-Za-z0-9_-]*`: a key that needs no brackets.
fn is_key_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(is_key_start) && chars.all(is_key_char)
}

const ROOTS: [&str; 4] = ["input", "steps", "run", "blobs"];

const PATH_HELP: &str = "expressions are paths such as `${ .input.key }`, `${ .input[\"a key\"] }`, `${ .steps.ID.output[0] }`";

/// A recursive-descent parser over the expression body.
struct Cursor<'t> {
    text: &'t str,
    pos: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t']);
        self.pos = self.text.len() - trimmed.len();
    }

    /// `[A-Za-z_][A-Za-z0-9_-]*` at the cursor, or `""`.
    fn ident(&mut self) -> &str {
        let start = self.pos;
        if self.peek().is_some_and(is_key_start) {
            let len = self
                .rest()
                .find(|c: char| !is_key_char(c))
                .unwrap_or(self.rest().len());
            self.pos += len;
        }
        &self.text[start..self.pos]
    }

    /// What the cursor is looking at, for "found ..." in messages.
    fn found(&self) -> String {
        let rest = self.rest().trim_end();
        if rest.is_empty() {
            return "the end of the expression".to_owned();
        }
        // Spaces are invisible between backticks; name them.
        if rest.starts_with([' ', '\t']) {
            return "a space".to_owned();
        }
        let shown: String = rest.chars().take(16).collect();
        let ellipsis = if shown.len() < rest.len() { "..." } else { "" };
        format!("`{shown}{ellipsis}`")
    }

    fn error(&self, message: impl Into<String>, help: Option<String>) -> ExprError {
        ExprError {
            message: message.into(),
            help,
        }
    }

    fn expression(mut self) -> Result<Expression, ExprError> {
        self.skip_spaces();
        if self.rest().trim_end().is_empty() {
            return Err(self.error(
                "the expression is empty",
                Some(format!(
                    "write a path, for example `${{ .input }}`; {PATH_HELP}"
                )),
            ));
        }
        if !self.eat('.') {
            let word = self.ident().to_owned();
            let help = if ROOTS.contains(&word.as_str()) {
                let rest = self.rest().trim_end();
                format!("did you mean `${{ .{word}{rest} }}`?")
            } else {
                PATH_HELP.to_owned()
            };
            self.pos = 0;
            self.skip_spaces();
            return Err(self.error(
                format!("a path must start with `.`, found {}", self.found()),
                Some(help),
            ));
        }
        let root = self.ident().to_owned();
        let expression = match root.as_str() {
            "input" => Expression::Json(JsonRef::Input(self.accessors()?)),
            "steps" => self.step_expression()?,
            "run" => self.run_expression()?,
            "blobs" => match self.blob_name()? {
                Some(name) => Expression::Blob(BlobRef {
                    source: BlobSource::WorkflowInput,
                    name,
                }),
                None => Expression::BlobSet(BlobSource::WorkflowInput),
            },
            "" => return Err(self.after_dot_error()),
            other => {
                let suggestion = super::error::closest(other, ROOTS)
                    .map(|root| format!("did you mean `.{root}`? "))
                    .unwrap_or_default();
                return Err(self.error(
                    format!("unknown root `.{other}`"),
                    Some(format!(
                        "{suggestion}a path starts with `.input`, `.steps`, `.run` or `.blobs`"
                    )),
                ));
            }
        };
        self.skip_spaces();
        if !self.rest().is_empty() {
            return Err(self.error(
                format!("unexpected {} after the path", self.found()),
                Some(
                    "only paths are supported: no spaces inside a path, no operators, pipes or functions"
                        .to_owned(),
                ),
            ));
        }
        Ok(expression)
    }

    /// The error for a `.` not followed by a key.
    fn after_dot_error(&self) -> ExprError {
        match self.peek() {
            Some('.') => self.error(
                "recursive descent `..` is not supported",
                Some("write out each key, for example `.input.a.b`".to_owned()),
            ),
            Some('[') => self.error(
                "`.[` is not supported",
                Some("write `[\"key\"]` or `[N]` directly after a path, for example `.input[0]`".to_owned()),
            ),
            _ => self.error(
                format!("expected a key after `.`, found {}", self.found()),
                Some(
                    "a key after `.` is letters, digits, `_` and `-`; write other keys as `[\"my key\"]`"
                        .to_owned(),
                ),
            ),
        }
    }

    /// `.steps.ID.output...`, `.steps.ID.blobs[.NAME]`.
    fn step_expression(&mut self) -> Result<Expression, ExprError> {
        if !self.eat('.') {
            return Err(self.error(
                format!("expected `.ID` after `.steps`, found {}", self.found()),
                Some("refer to a step as `.steps.ID.output` or `.steps.ID.blobs`".to_owned()),
            ));
        }
        let id = self.ident().to_owned();
        if id.is_empty() {
            return Err(self.after_dot_error());
        }
        let step = StepId::new(&id).map_err(|error| self.error(error.to_string(), None))?;
        if !self.eat('.') {
            return Err(self.error(
                format!(
                    "expected `.output` or `.blobs` after `.steps.{id}`, found {}",
                    self.found()
                ),
                None,
            ));
        }
        match self.ident().to_owned().as_str() {
            "output" => Ok(Expression::Json(JsonRef::StepOutput {
                step,
                path: self.accessors()?,
            })),
            "blobs" => Ok(match self.blob_name()? {
                Some(name) => Expression::Blob(BlobRef {
                    source: BlobSource::Step(step),
                    name,
                }),
                None => Expression::BlobSet(BlobSource::Step(step)),
            }),
            "" => Err(self.after_dot_error()),
            other => {
                let suggestion = super::error::closest(other, ["output", "blobs"])
                    .map(|field| format!("did you mean `.{field}`? "))
                    .unwrap_or_default();
                Err(self.error(
                    format!("unknown step field `.{other}`"),
                    Some(format!("{suggestion}a step has `.output` and `.blobs`")),
                ))
            }
        }
    }

    /// `.run.id`, `.run.workflow`.
    fn run_expression(&mut self) -> Result<Expression, ExprError> {
        let help = Some("run metadata is `.run.id` or `.run.workflow`".to_owned());
        if !self.eat('.') {
            return Err(self.error(
                format!(
                    "expected `.id` or `.workflow` after `.run`, found {}",
                    self.found()
                ),
                help,
            ));
        }
        match self.ident() {
            "id" => Ok(Expression::Json(JsonRef::RunId)),
            "workflow" => Ok(Expression::Json(JsonRef::WorkflowName)),
            "" => Err(self.after_dot_error()),
            other => {
                let message = format!("unknown run field `.{other}`");
                Err(self.error(message, help))
            }
        }
    }

    /// An optional `.NAME` or `["NAME"]` after `.blobs`; nothing further.
    fn blob_name(&mut self) -> Result<Option<String>, ExprError> {
        let name = match self.peek() {
            Some('.') => {
                self.pos += 1;
                let name = self.ident().to_owned();
                if name.is_empty() {
                    return Err(self.after_dot_error());
                }
                name
            }
            Some('[') => match self.bracket()? {
                Accessor::Key(name) => name,
                Accessor::Index(_) => {
                    return Err(self.error(
                        "blobs are selected by name, not by index",
                        Some("write `.blobs.NAME` or `.blobs[\"NAME\"]`".to_owned()),
                    ));
                }
            },
            _ => return Ok(None),
        };
        if matches!(self.peek(), Some('.' | '[')) {
            return Err(self.error(
                format!("unexpected {} after blob `{name}`", self.found()),
                Some("a blob is binary data: there is no path into it".to_owned()),
            ));
        }
        Ok(Some(name))
    }

    /// Zero or more `.key`, `["key"]`, `[N]`.
    fn accessors(&mut self) -> Result<Vec<Accessor>, ExprError> {
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    let key = self.ident().to_owned();
                    if key.is_empty() {
                        return Err(self.after_dot_error());
                    }
                    path.push(Accessor::Key(key));
                }
                Some('[') => path.push(self.bracket()?),
                _ => return Ok(path),
            }
        }
    }

    /// `["key"]` or `[N]`.
    fn bracket(&mut self) -> Result<Accessor, ExprError> {
        self.pos += 1;
        let accessor = match self.peek() {
            Some('"') => Accessor::Key(self.string()?),
            Some(c) if c.is_ascii_digit() => {
                let len = self
                    .rest()
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(self.rest().len());
                let digits = &self.rest()[..len];
                let index = digits
                    .parse::<usize>()
                    .map_err(|_| self.error(format!("index `{digits}` is too large"), None))?;
                self.pos += len;
                Accessor::Index(index)
            }
            Some('-') => {
                return Err(self.error(
                    "negative indices are not supported",
                    Some(
                        "index from the start of the array: `[0]` is the first element".to_owned(),
                    ),
                ));
            }
            Some(']') => {
                return Err(self.error(
                    "`[]` (iterating over every element) is not supported",
                    Some("select one element with `[N]`".to_owned()),
                ));
            }
            None => return Err(self.unclosed_bracket()),
            Some(_) => {
                return Err(self.error(
                    format!(
                        "expected a quoted key or an index inside `[...]`, found {}",
                        self.found()
                    ),
                    Some("write `[\"key\"]` or `[N]`".to_owned()),
                ));
            }
        };
        if !self.eat(']') {
            return Err(self.unclosed_bracket());
        }
        Ok(accessor)
    }

    fn unclosed_bracket(&self) -> ExprError {
        self.error(
            format!("unclosed `[`: expected `]`, found {}", self.found()),
            Some("write `[\"key\"]` or `[N]`".to_owned()),
        )
    }

    /// A JSON string literal; jq's `\(...)` interpolation is not supported.
    fn string(&mut self) -> Result<String, ExprError> {
        let rest = self.rest();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err(self.error(
                "unterminated string: expected a closing `\"`",
                Some("write a quoted key as `[\"key\"]`".to_owned()),
            ));
        };
        let literal = &rest[..=end];
        if literal.contains("\\(") {
            return Err(self.error("string interpolation `\\(...)` is not supported", None));
        }
        let key: String = serde_json::from_str(literal)
            .map_err(|error| self.error(format!("invalid string {literal}: {error}"), None))?;
        self.pos += end + 1;
        Ok(key)
    }
}

/// Writes a path in the canonical form: `.key` when possible, `["key"]`
/// otherwise, `[N]` for indices.
fn write_path(f: &mut fmt::Formatter<'_>, path: &[Accessor]) -> fmt::Result {
    for accessor in path {
        match accessor {
            Accessor::Key(key) if is_plain_key(key) => write!(f, ".{key}")?,
            Accessor::Key(key) => write!(f, "[{}]", Value::String(key.clone()))?,
            Accessor::Index(index) => write!(f, "[{index}]")?,
        }
    }
    Ok(())
}

impl fmt::Display for JsonRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonRef::Input(path) => {
                f.write_str(".input")?;
                write_path(f, path)
            }
            JsonRef::StepOutput { step, path } => {
                write!(f, ".steps.{step}.output")?;
                write_path(f, path)
            }
            JsonRef::RunId => f.write_str(".run.id"),
            JsonRef::WorkflowName => f.write_str(".run.workflow"),
        }
    }
}

impl fmt::Display for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobSource::WorkflowInput => f.write_str(".blobs"),
            BlobSource::Step(step) => write!(f, ".steps.{step}.blobs"),
        }
    }
}

impl fmt::Display for BlobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        write_path(f, &[Accessor::Key(self.name.clone())])
    }
}

/// Displays as the canonical `${ PATH }` text.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expression::Json(json) => write!(f, "${{ {json} }}"),
            Expression::Blob(blob) => write!(f, "${{ {blob} }}"),
            Expression::BlobSet(source) => write!(f, "${{ {source} }}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Expression {
        Expression::parse(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .unwrap_or_else(|| panic!("{text}: not an expression"))
    }

    fn error(text: &str) -> ExprError {
        match Expression::parse(text) {
            Err(error) => error,
            Ok(parsed) => panic!("{text}: parsed as {parsed:?}"),
        }
    }

    fn step(id: &str) -> StepId {
        StepId::new(id).unwrap()
    }

    #[test]
    fn parses_input_paths() {
        assert_eq!(
            parse("${ .input }"),
            Expression::Json(JsonRef::Input(vec![]))
        );
        assert_eq!(parse("${.input}"), Expression::Json(JsonRef::Input(vec![])));
        assert_eq!(
            parse("${  .input.a_b-c[\"x y\"][3]  }"),
            Expression::Json(JsonRef::Input(vec![
                Accessor::Key("a_b-c".into()),
                Accessor::Key("x y".into()),
                Accessor::Index(3),
            ]))
        );
        assert_eq!(
            parse(r#"${ .input["a\"}\u00e9"] }"#),
            Expression::Json(JsonRef::Input(vec![Accessor::Key("a\"}é".into())]))
        );
    }

    #[test]
    fn parses_steps_run_and_blobs() {
        assert_eq!(
            parse("${ .steps.read-file.output.meta[0] }"),
            Expression::Json(JsonRef::StepOutput {
                step: step("read-file"),
                path: vec![Accessor::Key("meta".into()), Accessor::Index(0)],
            })
        );
        assert_eq!(parse("${ .run.id }"), Expression::Json(JsonRef::RunId));
        assert_eq!(
            parse("${ .run.workflow }"),
            Expression::Json(JsonRef::WorkflowName)
        );
        assert_eq!(
            parse("${ .blobs }"),
            Expression::BlobSet(BlobSource::WorkflowInput)
        );
        assert_eq!(
            parse("${ .blobs.doc }"),
            Expression::Blob(BlobRef {
                source: BlobSource::WorkflowInput,
                name: "doc".into()
            })
        );
        assert_eq!(
            parse("${ .steps.a.blobs }"),
            Expression::BlobSet(BlobSource::Step(step("a")))
        );
        assert_eq!(
            parse("${ .steps.a.blobs[\"my file\"] }"),
            Expression::Blob(BlobRef {
                source: BlobSource::Step(step("a")),
                name: "my file".into()
            })
        );
    }

    #[test]
    fn literal_text_is_not_an_expression() {
        for text in [
            "plain",
            "${ .input } and ${ .input }",
            "${ .input }}",
            " ${ .input }",
            "${ .input } ",
            "cost: ${ .input.x }",
            "$ { .input }",
            "${ .input",
        ] {
            assert_eq!(Expression::parse(text), Ok(None), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        let cases = [
            ("${ }", "the expression is empty"),
            (
                "${ input.x }",
                "a path must start with `.`, found `input.x`",
            ),
            ("${ .input..x }", "recursive descent `..` is not supported"),
            ("${ .input.[0] }", "`.[` is not supported"),
            (
                "${ .input[0 }",
                "unclosed `[`: expected `]`, found the end of the expression",
            ),
            (
                "${ .input[\"a }",
                "unterminated string: expected a closing `\"`",
            ),
            ("${ .input[-1] }", "negative indices are not supported"),
            (
                "${ .input[] }",
                "`[]` (iterating over every element) is not supported",
            ),
            (
                "${ .input[x] }",
                "expected a quoted key or an index inside `[...]`, found `x]`",
            ),
            (
                "${ .input | length }",
                "unexpected `| length` after the path",
            ),
            ("${ .input. x }", "expected a key after `.`, found a space"),
            ("${ .inptu }", "unknown root `.inptu`"),
            (
                "${ .steps.a }",
                "expected `.output` or `.blobs` after `.steps.a`, found the end of the expression",
            ),
            ("${ .steps.a.ouput }", "unknown step field `.ouput`"),
            (
                "${ .steps.A.output }",
                "invalid step id `A`: it must start with a lowercase letter",
            ),
            ("${ .run.user }", "unknown run field `.user`"),
            ("${ .blobs.doc.x }", "unexpected `.x` after blob `doc`"),
            ("${ .blobs[0] }", "blobs are selected by name, not by index"),
            (
                "${ .input[\"\\(x)\"] }",
                "string interpolation `\\(...)` is not supported",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error(text).message, message, "{text}");
        }
        assert_eq!(
            error("${ input.x }").help.as_deref(),
            Some("did you mean `${ .input.x }`?")
        );
        assert_eq!(
            error("${ .inptu }").help.as_deref(),
            Some(
                "did you mean `.input`? a path starts with `.input`, `.steps`, `.run` or `.blobs`"
            )
        );
    }

    #[test]
    fn displays_canonically() {
        for (text, shown) in [
            ("${.input.a[\"b c\"][2]}", "${ .input.a[\"b c\"][2] }"),
            ("${ .input[\"plain\"] }", "${ .input.plain }"),
            ("${ .steps.x.output }", "${ .steps.x.output }"),
            (
                "${ .steps.x.blobs[\"a b\"] }",
                "${ .steps.x.blobs[\"a b\"] }",
            ),
            ("${ .blobs }", "${ .blobs }"),
            ("${ .run.workflow }", "${ .run.workflow }"),
        ] {
            assert_eq!(parse(text).to_string(), shown);
            // The canonical form parses back to the same expression.
            assert_eq!(parse(shown), parse(text));
        }
    }
}
