//! `plait run`'s input: JSON inline, from a file or stdin, and blobs from
//! files (`--blob NAME=@FILE`).

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use plait::step::Blob;

use crate::UsageError;

/// What an `--input` value is: `-` is stdin, `@PATH` a file, a value that
/// starts like a JSON document (`{`, `[`, `"`, a number, `true`, `false`,
/// `null`) is that JSON, anything else a file path. A file whose name
/// looks like JSON is given as `@NAME` or `./NAME`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InputArg<'a> {
    Stdin,
    Inline(&'a str),
    File(&'a str),
}

impl<'a> InputArg<'a> {
    pub(super) fn of(value: &'a str) -> InputArg<'a> {
        if value == "-" {
            return InputArg::Stdin;
        }
        if let Some(path) = value.strip_prefix('@') {
            return InputArg::File(path);
        }
        let text = value.trim();
        let looks_like_json = text.starts_with(['{', '[', '"'])
            || matches!(text, "true" | "false" | "null")
            || (text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
                && serde_json::from_str::<serde_json::Number>(text).is_ok());
        if looks_like_json {
            InputArg::Inline(value)
        } else {
            InputArg::File(value)
        }
    }

    /// The file it names, if it names one.
    pub(super) fn file(&self) -> Option<&'a str> {
        match self {
            InputArg::File(path) => Some(path),
            _ => None,
        }
    }
}

/// Reads `--input`: inline JSON, a JSON file, `-` for stdin, or `{}` when
/// absent (see [`InputArg`]).
pub(super) fn read_input(input: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let input = input.map(InputArg::of);
    let (text, source) = match input {
        None => return Ok(serde_json::json!({})),
        Some(InputArg::Inline(text)) => (text.to_owned(), "the command line".to_owned()),
        Some(InputArg::Stdin) => {
            let mut text = String::new();
            std::io::stdin()
                .take(plait::files::Kind::Input.cap())
                .read_to_string(&mut text)
                .context("reading the input from stdin")?;
            (text, "stdin".to_owned())
        }
        Some(InputArg::File(path)) => (
            plait::files::read_to_string(Path::new(path), plait::files::Kind::Input).map_err(
                |error| UsageError(format!("could not read input file `{path}`: {error}")),
            )?,
            format!("`{path}`"),
        ),
    };
    plait::json::from_str(&text).map_err(|error| {
        UsageError(format!(
            "the input from {source} is not valid JSON: {error}; `--input` takes inline JSON (`--input '{{\"text\": \"hi\"}}'`), a JSON file, `@FILE` or `-` for stdin"
        ))
        .into()
    })
}

/// Reads one `--file NAME=PATH`.
pub(super) fn read_blob(argument: &str) -> anyhow::Result<Blob> {
    let (name, path) = argument
        .split_once('=')
        .filter(|(name, path)| !name.is_empty() && !path.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "`--file {argument}` must be `NAME=PATH`, for example `--file document=scan.png`"
            ))
        })?;
    let data = plait::files::read(Path::new(path), plait::files::Kind::Input)
        .map_err(|error| UsageError(format!("could not read `--file {name}={path}`: {error}")))?;
    Ok(Blob {
        name: name.to_owned(),
        media_type: plait::step::media_type_of(Path::new(path)).to_owned(),
        data,
    })
}
