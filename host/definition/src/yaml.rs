//! A YAML document tree whose every node knows where it came from.
//!
//! yaml-rust2's ready-made `Yaml` tree drops positions and silently keeps the
//! last of duplicate keys, so this module builds its own tree from the
//! parser's marked events. Scalars keep their text, style and tag; typing
//! them (null, boolean, number, string) follows the YAML 1.2 core schema and
//! happens on demand, because some fields (`config:` values, `version:`) want
//! the text as written rather than a typed value.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::{Map, Number, Value};
use yaml_rust2::Event;
use yaml_rust2::parser::{Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{Diagnostics, Span};

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// Aliases copy their anchor's node; this bounds the total number of nodes so
/// that a few nested aliases cannot expand into billions ("billion laughs").
const MAX_NODES: usize = 100_000;

/// The YAML 1.2 core schema tag prefix, which `!!` expands to.
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// One node of the document.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) span: Span,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    /// Entries in file order, keys unique (a duplicate is reported and dropped).
    Mapping(Vec<(Node, Node)>),
}

/// A scalar as written: its text after YAML unescaping, its style and tag.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub(crate) value: String,
    pub(crate) style: TScalarStyle,
    pub(crate) tag: Option<ScalarTag>,
}

/// The core schema tags a scalar may carry to force its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarTag {
    Str,
    Int,
    Float,
    Bool,
    Null,
}

/// A scalar's value under the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Typed {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
}

impl Scalar {
    /// Types the scalar: quoted, block and `!!str` scalars are strings, plain
    /// ones are resolved by their text. Errors describe a value JSON cannot
    /// hold (`.inf`, `.nan`) or text that contradicts its tag.
    pub(crate) fn typed(&self) -> Result<Typed, String> {
        let text = self.value.as_str();
        let plain = self.style == TScalarStyle::Plain;
        match self.tag {
            Some(ScalarTag::Str) => Ok(Typed::String(self.value.clone())),
            None if !plain => Ok(Typed::String(self.value.clone())),
            None => resolve_plain(text),
            Some(tag) => {
                let resolved = resolve_plain(text)?;
                let matches = matches!(
                    (tag, &resolved),
                    (ScalarTag::Null, Typed::Null)
                        | (ScalarTag::Bool, Typed::Bool(_))
                        | (ScalarTag::Int, Typed::Number(_))
                        | (ScalarTag::Float, Typed::Number(_))
                );
                let integral = !matches!(&resolved, Typed::Number(n) if n.is_f64());
                if !matches || (tag == ScalarTag::Int && !integral) {
                    let name = match tag {
                        ScalarTag::Null => "null",
                        ScalarTag::Bool => "bool",
                        ScalarTag::Int => "int",
                        ScalarTag::Float => "float",
                        ScalarTag::Str => "str",
                    };
                    return Err(format!("`{text}` is not a valid `!!{name}`"));
                }
                if tag == ScalarTag::Float
                    && let Typed::Number(n) = &resolved
                    && !n.is_f64()
                {
                    // `!!float 1` is the float 1.0, not the integer 1.
                    let float = n.as_f64().and_then(Number::from_f64);
                    return Ok(float.map_or(resolved, Typed::Number));
                }
                Ok(resolved)
            }
        }
    }

    /// Whether this is the empty plain scalar YAML produces for a missing
    /// value (`key:` with nothing after it).
    pub(crate) fn is_empty_plain(&self) -> bool {
        self.value.is_empty() && self.style == TScalarStyle::Plain && self.tag.is_none()
    }
}

/// Resolves an untagged plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Result<Typed, String> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Typed::Null),
        "true" | "True" | "TRUE" => return Ok(Typed::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Typed::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "`{text}` is not a number JSON can hold; quote it to use it as a string"
            ));
        }
        _ => {}
    }
    if let Some(number) = resolve_integer(text) {
        return Ok(Typed::Number(number));
    }
    if is_float(text) {
        return match text.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(number) => Ok(Typed::Number(number)),
            None => Err(format!(
                "`{text}` is out of range for a JSON number; quote it to use it as a string"
            )),
        };
    }
    Ok(Typed::String(text.to_owned()))
}

/// Decimal, `0x` hexadecimal and `0o` octal integers; integers too large for
/// 64 bits become floats, as JSON parsers commonly do.
fn resolve_integer(text: &str) -> Option<Number> {
    let radix_digits = |prefix: &str, radix: u32| {
        let digits = text.strip_prefix(prefix)?;
        let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
        valid.then(|| u64::from_str_radix(digits, radix).ok().map(Number::from))?
    };
    if let Some(number) = radix_digits("0x", 16).or_else(|| radix_digits("0o", 8)) {
        return Some(number);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Number::from(n));
    }
    if let Ok(n) = text.trim_start_matches('+').parse::<u64>() {
        return Some(Number::from(n));
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema float.
fn is_float(text: &str) -> bool {
    let text = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(fraction) => {
            digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
        None => !whole.is_empty() && digits(whole),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

impl Node {
    /// "a mapping", "a string", ...: what the node is, for messages.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Sequence(_) => "a list",
            NodeKind::Mapping(_) => "a mapping",
            NodeKind::Scalar(scalar) => match scalar.typed() {
                Ok(Typed::Null) if scalar.is_empty_plain() => "nothing",
                Ok(Typed::Null) => "null",
                Ok(Typed::Bool(_)) => "a boolean",
                Ok(Typed::Number(_)) => "a number",
                Ok(Typed::String(_)) | Err(_) => "a string",
            },
        }
    }

    pub(crate) fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(scalar) => Some(scalar),
            _ => None,
        }
    }

    pub(crate) fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    /// Number of nodes in this subtree, for the alias expansion budget.
    fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar(_) => 1,
            NodeKind::Sequence(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Mapping(entries) => {
                1 + entries
                    .iter()
                    .map(|(key, value)| key.size() + value.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Converts a node to JSON with no expression handling: keys must be
/// scalars and scalars must be JSON-representable. Problems are reported and
/// yield `None`, after the whole subtree has been checked.
pub(crate) fn to_json(node: &Node, diag: &mut Diagnostics<'_>) -> Option<Value> {
    match &node.kind {
        NodeKind::Scalar(scalar) => match scalar.typed() {
            Ok(typed) => Some(typed.into_json()),
            Err(message) => {
                diag.error(node.span, message, None);
                None
            }
        },
        NodeKind::Sequence(items) => {
            let values: Vec<Option<Value>> = items.iter().map(|item| to_json(item, diag)).collect();
            values
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        }
        NodeKind::Mapping(entries) => {
            let mut map = Map::new();
            let mut ok = true;
            for (key, value) in entries {
                let key = key_text(key, diag);
                let value = to_json(value, diag);
                match (key, value) {
                    (Some(key), Some(value)) => {
                        map.insert(key.to_owned(), value);
                    }
                    _ => ok = false,
                }
            }
            ok.then_some(Value::Object(map))
        }
    }
}

/// The text of a mapping key, which must be a scalar; JSON object keys are
/// strings, so `1: x` gives the key `"1"`.
pub(crate) fn key_text<'n>(key: &'n Node, diag: &mut Diagnostics<'_>) -> Option<&'n str> {
    match key.as_scalar() {
        Some(scalar) => Some(&scalar.value),
        None => {
            diag.error(
                key.span,
                format!("mapping keys must be strings, found {}", key.describe()),
                None,
            );
            None
        }
    }
}

impl Typed {
    pub(crate) fn into_json(self) -> Value {
        match self {
            Typed::Null => Value::Null,
            Typed::Bool(b) => Value::Bool(b),
            Typed::Number(n) => Value::Number(n),
            Typed::String(s) => Value::String(s),
        }
    }
}

/// Parses `text` as a single YAML (or JSON) document.
///
/// Returns `None` when there is nothing to validate; the reason (a syntax
/// error, an empty file, a second document) has then been reported.
/// Duplicate keys and unsupported tags are reported but do not stop parsing.
pub(crate) fn parse(text: &str, diag: &mut Diagnostics<'_>) -> Option<Node> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        lines: text.split('\n').collect(),
        anchors: HashMap::new(),
        nodes: 0,
        diag,
    };
    builder.document().ok().flatten()
}

/// The parse was abandoned; the reason has been reported.
struct Stop;

struct Builder<'t, 'd, 's> {
    parser: Parser<std::str::Chars<'t>>,
    /// Source lines, to measure how much text a node covers.
    lines: Vec<&'t str>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    diag: &'d mut Diagnostics<'s>,
}

impl Builder<'_, '_, '_> {
    fn next(&mut self) -> Result<(Event, Marker), Stop> {
        self.parser.next_token().map_err(|error| {
            let mark = error.marker();
            let span = self.span_at(mark, 1);
            // `{`, `}`, `[`, `]` and `,` end a plain scalar inside a flow
            // collection, so an unquoted `${ ... }` there breaks the syntax.
            let line = self
                .lines
                .get(mark.line().wrapping_sub(1))
                .copied()
                .unwrap_or("");
            let help = if line.contains("${") && line.contains(['{', '[']) {
                "inside `{ ... }` and `[ ... ]`, quote expressions: `\"${ .input.x }\"`"
            } else {
                "check the indentation and quoting around this position"
            };
            self.diag.error(
                span,
                format!("invalid YAML: {}", error.info()),
                Some(help.to_owned()),
            );
            Stop
        })
    }

    /// The whole stream: exactly one document, or nothing at all.
    fn document(&mut self) -> Result<Option<Node>, Stop> {
        let mut root = None;
        loop {
            let (event, mark) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart if root.is_some() => {
                    let span = self.span_at(&mark, 3);
                    self.diag.error(
                        span,
                        "a workflow definition holds one YAML document, found a second one",
                        Some("remove the `---` separator and everything after it".to_owned()),
                    );
                    return Err(Stop);
                }
                Event::DocumentStart => {
                    let (event, mark) = self.next()?;
                    root = Some(self.node(event, mark, 0)?);
                }
                other => {
                    let span = self.span_at(&mark, 1);
                    self.diag.error(
                        span,
                        format!("invalid YAML: unexpected {}", event_name(&other)),
                        None,
                    );
                    return Err(Stop);
                }
            }
        }
        match root {
            Some(node) if !matches!(&node.kind, NodeKind::Scalar(s) if s.is_empty_plain()) => {
                Ok(Some(node))
            }
            _ => {
                self.diag.file_error(
                    "the workflow definition is empty",
                    Some("a workflow needs at least a `name` and a list of `steps`".to_owned()),
                );
                Ok(None)
            }
        }
    }

    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<Node, Stop> {
        if depth > MAX_DEPTH {
            let span = self.span_at(&mark, 1);
            self.diag.error(
                span,
                format!("the document is nested more than {MAX_DEPTH} levels deep"),
                None,
            );
            return Err(Stop);
        }
        self.nodes += 1;
        let (node, anchor) = match event {
            Event::Scalar(value, style, anchor, tag) => {
                let span = self.scalar_span(&mark, &value, style);
                let tag = self.scalar_tag(tag.as_ref(), span);
                let kind = NodeKind::Scalar(Scalar { value, style, tag });
                (Node { kind, span }, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                let span = self.collection_span(&mark);
                self.collection_tag(tag.as_ref(), "seq", span);
                let mut items = Vec::new();
                loop {
                    let (event, mark) = self.next()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(event, mark, depth + 1)?);
                }
                let kind = NodeKind::Sequence(items);
                (Node { kind, span }, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                let mut span = self.collection_span(&mark);
                self.collection_tag(tag.as_ref(), "map", span);
                let entries = self.mapping_entries(depth)?;
                // A block mapping's start event is marked after its first key;
                // the first key is the better place to point at.
                if let Some((key, _)) = entries.first()
                    && (key.span.line, key.span.column) < (span.line, span.column)
                {
                    span = key.span;
                }
                let kind = NodeKind::Mapping(entries);
                (Node { kind, span }, anchor)
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    let span = self.span_at(&mark, 1);
                    self.diag
                        .error(span, "invalid YAML: alias to an unknown anchor", None);
                    return Err(Stop);
                };
                self.nodes += node.size();
                (node, 0)
            }
            other => {
                let span = self.span_at(&mark, 1);
                self.diag.error(
                    span,
                    format!("invalid YAML: unexpected {}", event_name(&other)),
                    None,
                );
                return Err(Stop);
            }
        };
        if self.nodes > MAX_NODES {
            self.diag.error(
                node.span,
                format!("the document expands to more than {MAX_NODES} values"),
                Some(
                    "aliases (`*name`) copy their anchor's value each time they are used"
                        .to_owned(),
                ),
            );
            return Err(Stop);
        }
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn mapping_entries(&mut self, depth: usize) -> Result<Vec<(Node, Node)>, Stop> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut seen: HashMap<String, Span> = HashMap::new();
        loop {
            let (event, mark) = self.next()?;
            if event == Event::MappingEnd {
                return Ok(entries);
            }
            let key = self.node(event, mark, depth + 1)?;
            let (event, mark) = self.next()?;
            let mut value = self.node(event, mark, depth + 1)?;
            // A missing value is marked where the next token starts, often on
            // a later line; its key is where the user will look.
            if matches!(&value.kind, NodeKind::Scalar(s) if s.is_empty_plain()) {
                value.span = key.span;
            }
            let NodeKind::Scalar(scalar) = &key.kind else {
                entries.push((key, value));
                continue;
            };
            match seen.entry(scalar.value.clone()) {
                Entry::Occupied(first) => {
                    self.diag.error(
                        key.span,
                        format!("duplicate key `{}`", scalar.value),
                        Some(format!(
                            "`{}` is already set at line {}; keep one of them",
                            scalar.value,
                            first.get().line
                        )),
                    );
                }
                Entry::Vacant(slot) => {
                    slot.insert(key.span);
                    entries.push((key, value));
                }
            }
        }
    }

    /// Maps a scalar's tag to a core schema type, reporting anything else.
    fn scalar_tag(&mut self, tag: Option<&Tag>, span: Span) -> Option<ScalarTag> {
        let full = full_tag(tag?);
        let known = match full.strip_prefix(CORE_TAG_PREFIX) {
            Some("str") => Some(ScalarTag::Str),
            Some("int") => Some(ScalarTag::Int),
            Some("float") => Some(ScalarTag::Float),
            Some("bool") => Some(ScalarTag::Bool),
            Some("null") => Some(ScalarTag::Null),
            // The non-specific tag `!` means "not a plain scalar": a string.
            _ if full == "!" => Some(ScalarTag::Str),
            _ => None,
        };
        if known.is_none() {
            self.unsupported_tag(&full, span);
        }
        known
    }

    fn collection_tag(&mut self, tag: Option<&Tag>, expected: &str, span: Span) {
        if let Some(tag) = tag {
            let full = full_tag(tag);
            if full.strip_prefix(CORE_TAG_PREFIX) != Some(expected) && full != "!" {
                self.unsupported_tag(&full, span);
            }
        }
    }

    fn unsupported_tag(&mut self, full: &str, span: Span) {
        let shown = match full.strip_prefix(CORE_TAG_PREFIX) {
            Some(suffix) => format!("!!{suffix}"),
            None => full.to_owned(),
        };
        self.diag.error(
            span,
            format!("unsupported YAML tag `{shown}`"),
            Some(
                "only `!!str`, `!!int`, `!!float`, `!!bool` and `!!null` are understood".to_owned(),
            ),
        );
    }

    /// The source line a marker is on, from its column (0-based) onwards.
    fn rest_of_line(&self, mark: &Marker) -> &str {
        let line = self
            .lines
            .get(mark.line().wrapping_sub(1))
            .copied()
            .unwrap_or("");
        let line = line.strip_suffix('\r').unwrap_or(line);
        line.char_indices()
            .nth(mark.col())
            .map_or("", |(i, _)| &line[i..])
    }

    fn span_at(&self, mark: &Marker, len: usize) -> Span {
        // At the end of a file that does not end in a line break, the
        // parser's errors are on the line after the last: point at the
        // end of the last line instead, so the error quotes it.
        if mark.line() > self.lines.len() {
            let last = self.lines.last().copied().unwrap_or("");
            let last = last.strip_suffix('\r').unwrap_or(last);
            return Span::new(self.lines.len().max(1), last.chars().count() + 1, len);
        }
        Span::new(mark.line(), mark.col() + 1, len)
    }

    /// A scalar's span covers its text as written on its first line,
    /// including quotes, so the caret underlines exactly the value.
    fn scalar_span(&self, mark: &Marker, value: &str, style: TScalarStyle) -> Span {
        let rest = self.rest_of_line(mark);
        let len = match style {
            TScalarStyle::Plain if rest.starts_with(value) => Some(value.chars().count()),
            TScalarStyle::DoubleQuoted => quoted_len(rest, '"'),
            TScalarStyle::SingleQuoted => quoted_len(rest, '\''),
            _ => None,
        };
        let len = len.unwrap_or_else(|| rest.trim_end().chars().count());
        self.span_at(mark, len)
    }

    /// A flow collection's span covers it up to its closing bracket when
    /// that is on the same line; otherwise just its first character.
    fn collection_span(&self, mark: &Marker) -> Span {
        let rest = self.rest_of_line(mark);
        let len = if rest.starts_with(['[', '{']) {
            flow_len(rest).unwrap_or(1)
        } else {
            1
        };
        self.span_at(mark, len)
    }
}

fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

/// Length in characters of the quoted scalar at the start of `text`,
/// closing quote included, if it closes on this line.
fn quoted_len(text: &str, quote: char) -> Option<usize> {
    let mut chars = text.chars().enumerate().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            c if c == quote => {
                // In single quotes, `''` is an escaped quote.
                if quote == '\'' && chars.peek().is_some_and(|&(_, next)| next == '\'') {
                    chars.next();
                } else {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Length in characters of the flow collection at the start of `text`, up
/// to its matching closing bracket, if that is on this line.
fn flow_len(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut chars = text.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            '"' | '\'' => {
                let rest: String = text.chars().skip(i).collect();
                let len = quoted_len(&rest, c)?;
                for _ in 1..len {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    None
}

/// A YAML event as a person would name it, for "unexpected ..." errors.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Nothing => "nothing",
        Event::StreamStart => "start of the stream",
        Event::StreamEnd => "end of the file",
        Event::DocumentStart => "start of a document (`---`)",
        Event::DocumentEnd => "end of a document",
        Event::Alias(_) => "alias (`*name`)",
        Event::Scalar(..) => "value",
        Event::SequenceStart(..) => "start of a list",
        Event::SequenceEnd => "end of a list",
        Event::MappingStart(..) => "start of a mapping",
        Event::MappingEnd => "end of a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;

    fn typed(text: &str) -> Result<Typed, String> {
        Scalar {
            value: text.to_owned(),
            style: TScalarStyle::Plain,
            tag: None,
        }
        .typed()
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(typed("~"), Ok(Typed::Null));
        assert_eq!(typed("True"), Ok(Typed::Bool(true)));
        assert_eq!(typed("yes"), Ok(Typed::String("yes".into())));
        assert_eq!(typed("42"), Ok(Typed::Number(42.into())));
        assert_eq!(typed("-7"), Ok(Typed::Number((-7).into())));
        assert_eq!(typed("0x1f"), Ok(Typed::Number(31.into())));
        assert_eq!(
            typed("1.5"),
            Ok(Typed::Number(Number::from_f64(1.5).unwrap()))
        );
        assert_eq!(
            typed("1e3"),
            Ok(Typed::Number(Number::from_f64(1000.0).unwrap()))
        );
        assert_eq!(typed("0.1.0"), Ok(Typed::String("0.1.0".into())));
        assert_eq!(typed("."), Ok(Typed::String(".".into())));
        assert!(typed(".inf").is_err());
    }

    #[test]
    fn an_error_at_the_end_of_a_file_without_a_final_line_break_quotes_its_last_line() {
        // Found by the fuzz suite: the error pointed at line 5 of a file
        // of 4 lines, and quoted nothing.
        let text = "name: fuzz\nsteps:\n  - id: a\n    o";
        let source = SourceFile::new("t.yaml", text);
        let mut diag = Diagnostics::new(&source);
        assert!(parse(text, &mut diag).is_none());
        let errors = diag.finish();
        let error = errors.iter().next().unwrap();
        assert_eq!(error.span, Some(Span::new(4, 6, 1)), "{errors}");
        assert_eq!(error.snippet(), Some("    o"));
        assert!(errors.to_string().contains("--> t.yaml:4:6"), "{errors}");
    }

    #[test]
    fn spans_cover_the_written_text() {
        let text = "a: \"x\\\"y\"  # c\nb: [1, [2]] # c\nc: plain words\nd: 'it''s'\n";
        let source = SourceFile::new("t.yaml", text);
        let mut diag = Diagnostics::new(&source);
        let root = parse(text, &mut diag).unwrap();
        let spans: Vec<Span> = root
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(_, value)| value.span)
            .collect();
        assert_eq!(
            spans,
            [
                Span::new(1, 4, 6),
                Span::new(2, 4, 8),
                Span::new(3, 4, 11),
                Span::new(4, 4, 7)
            ]
        );
        assert!(!diag.has_errors());
    }
}
