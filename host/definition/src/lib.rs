//! Workflow definition files: parsing and validation, independent of the runtime.
//!
//! A workflow definition is a YAML (or JSON) file that names a workflow and
//! lists the steps to chain:
//!
//! ```yaml
//! name: chain
//! steps:
//!   - id: normalize
//!     uses: ../plugins/normalize_text.wasm
//!     input: { text: "${ .input.text }" }
//!   - id: stats
//!     uses: ../plugins/text_stats.wasm
//! output: ${ .steps.stats.output }
//! ```
//!
//! [`Definition::load`] reads such a file and checks everything that can be
//! checked without running anything: structure, names, expressions, and
//! that expressions only read steps that run earlier. Every problem is
//! reported at once, each with its line and column ([`DefinitionErrors`]).
//! The executor only ever sees the validated [`Definition`]; components are
//! not loaded here, so whether `uses:` exists is the engine's concern.

pub mod schema;

mod error;
mod expr;
mod flow;
pub mod format;
mod jq;
mod template;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

// The shared vocabulary, under the names this crate's modules use.
pub(crate) use plait_types::{files, grants, limits, paths};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use error::{DefinitionError, DefinitionErrors, SourceFile, Span};
pub use expr::{BlobRef, BlobSource, ExprError, Expression};
pub use flow::{Backoff, OnError, RetryPolicy, RetrySettings, StepCache, StepKind};
pub use jq::{
    EVAL_DEADLINE, Jq, JqError, JqEvalError, MAX_DEPTH, MAX_ITEMS, MAX_RESULT_BYTES, PathPart,
    follow,
};
pub use template::{BlobMapping, Template};
pub use validate::{LOCAL_MODEL, PLUGINS_ENV, reference_plugin, topological as topological_order};

/// The file names [`Definition::load`] looks for in a directory, in order.
pub const DEFINITION_FILE_NAMES: [&str; 3] = ["workflow.yaml", "workflow.yml", "workflow.json"];

/// The longest workflow name or step id accepted.
pub const MAX_NAME_LEN: usize = 64;

/// A validated workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The workflow's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// The workflow's version as written; `0.0.0` when absent.
    pub version: String,
    /// What the workflow does, for people.
    pub description: Option<String>,
    /// A JSON Schema for the workflow input (a JSON object), as written;
    /// validation checked that it compiles, and the runtime's plan holds
    /// it compiled.
    pub input_schema: Option<Value>,
    /// Limits for every step that does not set its own (`limits:`).
    pub limits: limits::LimitSettings,
    /// The steps, in file order; never empty. They run as their `needs`
    /// allow (see [`StepDefinition::needs`]).
    pub steps: Vec<StepDefinition>,
    /// What the run outputs; `None` means the output of the final step
    /// ([`Definition::output_step`]).
    pub output: Option<Template>,
    /// The whole run's wall-clock limit (`timeout:`), from its start.
    pub timeout: Option<std::time::Duration>,
    /// How many steps of one run may run at once (`concurrency:`).
    pub concurrency: u32,
    /// The file the definition came from, for reporting errors found later.
    pub source: SourceFile,
}

/// One validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDefinition {
    /// The step's id, unique in the workflow.
    pub id: StepId,
    /// The component to run: the `uses:` path joined to the definition
    /// file's directory. Not checked for existence.
    pub uses: PathBuf,
    /// Where `uses:` is written, to report problems with the component.
    pub uses_span: Span,
    /// The step's input. `None`: the previous step's output (the workflow
    /// input for the first step).
    pub input: Option<Template>,
    /// The step's blobs. `None`: the previous step's blobs (the workflow
    /// input blobs for the first step).
    pub blobs: Option<BlobMapping>,
    /// Configuration values, as text (`true` is `"true"`, `5` is `"5"`).
    pub config: BTreeMap<String, String>,
    /// Where each `config:` key is written (keys a shorthand such as
    /// `type: ai_inference` adds have none).
    pub config_spans: BTreeMap<String, Span>,
    /// The step's own limits, over the workflow's.
    pub limits: limits::LimitSettings,
    /// Directories, outbound HTTP and secrets granted to the step.
    pub grants: grants::StepGrants,
    /// Where the step is written (its first key).
    pub span: Span,
    /// What the step does: run its component, wait for a signal, or sleep.
    pub kind: StepKind,
    /// The steps that must finish first. Written as `needs:`; when no step
    /// of the workflow has `needs:`, each step needs the one before it (a
    /// pipeline).
    pub needs: Vec<StepId>,
    /// `if:`: run only when this yields `true`; otherwise skipped.
    pub condition: Option<Jq>,
    /// `for_each:`: run once per item of the array this yields.
    pub for_each: Option<Jq>,
    /// How many items of a `for_each` run at once.
    pub max_concurrency: u32,
    /// Retries of a failed attempt (the step's `retry:` over the
    /// workflow's).
    pub retry: RetryPolicy,
    /// What a failure does to the run.
    pub on_error: OnError,
    /// Whether this step only runs as another step's fallback.
    pub fallback_of: Option<StepId>,
    /// `cache:`: reuse outputs across runs for the same component, config
    /// and input.
    pub cache: Option<StepCache>,
}

/// The default number of a run's steps that run at once.
pub const DEFAULT_CONCURRENCY: u32 = 8;

/// The default number of a `for_each` step's items that run at once.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 4;

/// A step id: `[a-z][a-z0-9_-]*`, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(String);

/// Why a string is not a valid [`StepId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid step id `{id}`: {reason}")]
pub struct InvalidStepId {
    /// The rejected text.
    pub id: String,
    /// What is wrong with it.
    pub reason: String,
}

impl StepId {
    /// Validates `id` as a step id.
    ///
    /// # Errors
    /// When `id` is empty, too long, or has characters other than lowercase
    /// letters, digits, `-` and `_`, or does not start with a letter.
    pub fn new(id: &str) -> Result<Self, InvalidStepId> {
        match name_problem(id, "a lowercase letter", |c| c.is_ascii_lowercase()) {
            None => Ok(Self(id.to_owned())),
            Some(reason) => Err(InvalidStepId {
                id: id.to_owned(),
                reason,
            }),
        }
    }

    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StepId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What is wrong with a workflow name, if anything.
pub(crate) fn workflow_name_problem(name: &str) -> Option<String> {
    name_problem(name, "a lowercase letter or a digit", |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit()
    })
}

/// Shared rules of workflow names and step ids: a restricted first
/// character, then lowercase letters, digits, `-` and `_`.
fn name_problem(name: &str, first_rule: &str, first_ok: impl Fn(char) -> bool) -> Option<String> {
    let len = name.chars().count();
    let Some(first) = name.chars().next() else {
        return Some("it is empty".to_owned());
    };
    if !first_ok(first) {
        return Some(format!("it must start with {first_rule}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
    {
        return Some(format!(
            "{} is not allowed; use lowercase letters, digits, `-` and `_`",
            describe_char(bad)
        ));
    }
    (len > MAX_NAME_LEN)
        .then(|| format!("it is {len} characters long, more than the limit of {MAX_NAME_LEN}"))
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '`' => "a backtick".to_owned(),
        c if c.is_control() || c.is_whitespace() => format!("the character {}", c.escape_default()),
        c => format!("`{c}`"),
    }
}

/// Why [`Definition::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or directory could not be read.
    #[error("cannot read workflow definition `{}`", .path.display())]
    Read {
        /// What was being read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A directory was given and holds no definition file.
    #[error(
        "no workflow definition in directory `{}`: looked for {}",
        .dir.display(),
        .looked_for.join(", ")
    )]
    NotFoundInDirectory {
        /// The directory searched.
        dir: PathBuf,
        /// The file names looked for, in order.
        looked_for: Vec<String>,
    },
    /// The file was read but is not a valid definition.
    #[error("{0}")]
    Invalid(DefinitionErrors),
}

impl Definition {
    /// Reads and validates the definition at `path`: a file, or a directory
    /// holding one of [`DEFINITION_FILE_NAMES`].
    ///
    /// Relative `uses:` paths are resolved against the absolute directory of
    /// the file, so the result does not depend on a later working directory.
    ///
    /// # Errors
    /// [`LoadError::Read`] if the file cannot be read,
    /// [`LoadError::NotFoundInDirectory`] for a directory without a
    /// definition, [`LoadError::Invalid`] with every problem in the file.
    pub fn load(path: &Path) -> Result<Definition, LoadError> {
        let file = Self::locate(path)?;
        let bytes =
            files::read(&file, files::Kind::Definition).map_err(|source| LoadError::Read {
                path: file.clone(),
                source,
            })?;
        let base_dir = std::path::absolute(&file)
            .ok()
            .and_then(|absolute| absolute.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| parent_dir(&file));
        let definition = parse_bytes(&bytes, &file, &base_dir).map_err(LoadError::Invalid)?;
        tracing::debug!(target: "plait::definition",
            path = %file.display(),
            workflow = %definition.name,
            steps = definition.steps.len(),
            "loaded workflow definition"
        );
        Ok(definition)
    }

    /// The definition file `path` designates: `path` itself, or for a
    /// directory the first of [`DEFINITION_FILE_NAMES`] inside it.
    ///
    /// # Errors
    /// As for [`Definition::load`], except [`LoadError::Invalid`].
    pub fn locate(path: &Path) -> Result<PathBuf, LoadError> {
        let metadata = std::fs::metadata(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !metadata.is_dir() {
            return Ok(path.to_path_buf());
        }
        let mut found = DEFINITION_FILE_NAMES
            .iter()
            .map(|name| path.join(name))
            .filter(|candidate| candidate.is_file());
        let first = found.next().ok_or_else(|| LoadError::NotFoundInDirectory {
            dir: path.to_path_buf(),
            looked_for: DEFINITION_FILE_NAMES.map(str::to_owned).to_vec(),
        })?;
        if let Some(ignored) = found.next() {
            tracing::warn!(target: "plait::definition",
                used = %first.display(),
                ignored = %ignored.display(),
                "several workflow definition files in one directory"
            );
        }
        Ok(first)
    }

    /// Validates definition `text`, reported as coming from `path`, with
    /// relative `uses:` paths joined to `path`'s directory.
    ///
    /// # Errors
    /// Every problem in the text.
    pub fn parse(text: &str, path: &Path) -> Result<Definition, DefinitionErrors> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        parse_source(SourceFile::new(path, text), &parent_dir(path))
    }

    /// The step with id `id`.
    #[must_use]
    pub fn step(&self, id: &str) -> Option<&StepDefinition> {
        self.steps.iter().find(|step| step.id.as_str() == id)
    }

    /// The names of the workflow input blobs the definition refers to by
    /// name (`${ .blobs.NAME }`), sorted, each once: a run needs each of
    /// them attached. Whole-set references (`${ .blobs }`) and the first
    /// step's default take whatever is attached and need no particular name.
    #[must_use]
    pub fn input_blob_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .steps
            .iter()
            .filter_map(|step| match &step.blobs {
                Some(BlobMapping::Named(named)) => Some(named.values()),
                _ => None,
            })
            .flatten()
            .filter(|blob| blob.source == BlobSource::WorkflowInput)
            .map(|blob| blob.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// An error at `span` in this definition's file, rendered like the
    /// parser's own (for example at a step's `uses_span`).
    #[must_use]
    pub fn error_at(
        &self,
        span: Span,
        message: impl Into<String>,
        help: Option<String>,
    ) -> DefinitionError {
        DefinitionError::at(&self.source, span, message, help)
    }
}

/// The directory relative paths in the file at `path` are relative to.
fn parent_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Decodes the file (UTF-8, an optional byte order mark) and validates it.
pub(crate) fn parse_bytes(
    bytes: &[u8],
    path: &Path,
    base_dir: &Path,
) -> Result<Definition, DefinitionErrors> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_source(SourceFile::new(path, text), base_dir),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            // `valid` is the UTF-8 prefix before the bad byte, so this borrows
            // it as is; it only serves to count lines and columns.
            let before = String::from_utf8_lossy(valid);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            let source = SourceFile::new(path, String::from_utf8_lossy(bytes));
            let byte = bytes[error.valid_up_to()];
            Err(DefinitionError::at(
                &source,
                Span::new(line, column, 1),
                format!("the file is not valid UTF-8 (byte 0x{byte:02X})"),
                Some("save the workflow definition as UTF-8".to_owned()),
            )
            .into())
        }
    }
}

fn parse_source(source: SourceFile, base_dir: &Path) -> Result<Definition, DefinitionErrors> {
    let mut diag = error::Diagnostics::new(&source);
    let root = yaml::parse(&source.text, &mut diag);
    let parts = root.and_then(|root| validate::definition(&root, base_dir, &mut diag));
    match parts {
        Some(parts) if !diag.has_errors() => Ok(Definition {
            name: parts.name,
            version: parts.version,
            description: parts.description,
            input_schema: parts.input_schema,
            limits: parts.limits,
            steps: parts.steps,
            output: parts.output,
            timeout: parts.timeout,
            concurrency: parts.concurrency,
            source,
        }),
        _ => Err(diag.finish()),
    }
}
