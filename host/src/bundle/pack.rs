//! `plait bundle pack`: a template folder into a bundle.
//!
//! The folder holds a workflow file (`workflow.yaml`), or several named by
//! an optional source `bundle.toml`:
//!
//! ```toml
//! name = "document-intake"        # default: the (first) workflow's name
//! version = "0.1.0"               # default: the (first) workflow's version
//! description = "..."             # default: the workflow's description
//! authors = ["Plait <team@plait.dev>"]
//! license = "Apache-2.0"
//! workflows = ["workflow.yaml"]   # default: the folder's workflow file
//! assets = ["samples"]            # more files or folders to carry; default: none
//! plait = "^0.1"                  # the hosts it runs on; default: this host's ^MAJOR.MINOR
//! ```
//!
//! Everything a workflow runs comes along: each step's component (wherever
//! `uses:` points) as `components/<file name>`, each model its steps are
//! granted as `models/<name>/...` (from the workflow's own `models/`
//! folder, else the model store), the `classify` plugin when a step is
//! `type: ai_inference`, and `README.md`. The workflow file is carried with
//! each `uses:` value rewritten to the component's place in the bundle and
//! nothing else changed, so an unpacked bundle is a workflow folder that
//! runs as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::manifest::{FileEntry, GrantEntry, Manifest, Requires, WorkflowEntry, check_path};
use super::{BundleError, FORMAT, MANIFEST_FILE, WIT_WORLD};
use crate::definition::{Definition, StepKind};
use crate::digest::Digest;

/// The source `bundle.toml` of a template folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    license: Option<String>,
    workflows: Option<Vec<String>>,
    #[serde(default)]
    assets: Vec<String>,
    plait: Option<String>,
}

/// A packed bundle.
#[derive(Debug)]
pub struct Packed {
    /// Its manifest.
    pub manifest: Manifest,
    /// The archive's bytes.
    pub bytes: Vec<u8>,
}

/// Packs template folder `dir`; models not carried by the folder come
/// from `model_store`.
pub fn pack(dir: &Path, model_store: &Path) -> Result<Packed, BundleError> {
    let fail = |message: String| BundleError::Pack {
        dir: dir.to_owned(),
        message,
    };
    let dir = std::path::absolute(dir).map_err(BundleError::io("resolving", dir))?;
    let source: Source =
        match crate::files::read_to_string(&dir.join(MANIFEST_FILE), crate::files::Kind::Config) {
            Ok(text) => toml::from_str(&text).map_err(|error| {
                fail(format!(
                    "its `{MANIFEST_FILE}` does not parse: {}",
                    error.to_string().trim_end()
                ))
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Source::default(),
            Err(error) => return Err(BundleError::io("reading", dir.join(MANIFEST_FILE))(error)),
        };
    let workflow_files: Vec<PathBuf> = match &source.workflows {
        Some(files) => files.iter().map(|file| dir.join(file)).collect(),
        None => vec![Definition::locate(&dir).map_err(|error| fail(error.to_string()))?],
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut workflows = Vec::new();
    let mut components: BTreeMap<Digest, String> = BTreeMap::new(); // digest -> bundle path
    let mut grants = Vec::new();
    let mut models: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut definitions = Vec::new();
    for file in &workflow_files {
        let definition = Definition::load(file).map_err(|error| fail(error.to_string()))?;
        let text = definition.source.text.clone();
        let file_name = file
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| fail(format!("`{}` has no usable file name", file.display())))?
            .to_owned();
        let workflow_dir = file.parent().unwrap_or(&dir).to_owned();
        let mut rewrites: Vec<(crate::definition::Span, String)> = Vec::new();
        for step in &definition.steps {
            if !matches!(step.kind, StepKind::Component) {
                continue;
            }
            let bytes =
                crate::files::read(&step.uses, crate::files::Kind::Component).map_err(|error| {
                    fail(format!(
                        "step `{}` uses `{}`, which cannot be read ({error}); build it first",
                        step.id,
                        step.uses.display()
                    ))
                })?;
            if !bytes.starts_with(b"\0asm") {
                return Err(fail(format!(
                    "step `{}` uses `{}`, which is not a WebAssembly component",
                    step.id,
                    step.uses.display()
                )));
            }
            let digest = crate::digest::digest(&bytes);
            let path = match components.get(&digest) {
                Some(path) => path.clone(),
                None => {
                    let name = step
                        .uses
                        .file_name()
                        .and_then(|name| name.to_str())
                        .unwrap_or("component.wasm");
                    let mut path = format!("components/{name}");
                    if files.contains_key(&path) {
                        // Another component has this file name.
                        let stem = name.trim_end_matches(".wasm");
                        path = format!("components/{stem}-{}.wasm", &digest[7..15]);
                    }
                    files.insert(path.clone(), bytes);
                    components.insert(digest, path.clone());
                    path
                }
            };
            // `type: ai_inference` names no file: its plugin is found as
            // `components/classify.wasm` beside the workflow.
            if scalar_at(&text, step.uses_span).is_some_and(|s| s == "ai_inference") {
                if path != "components/classify.wasm" {
                    return Err(fail(format!(
                        "step `{}` is `type: ai_inference`, whose plugin must be `components/classify.wasm`, but another component has that name",
                        step.id
                    )));
                }
            } else {
                rewrites.push((step.uses_span, path));
            }
            for model in &step.grants.models {
                let folder = crate::inference::find_model_for(file, model_store, &model.name)
                    .map_err(|message| fail(format!("step `{}`: {message}", step.id)))?;
                models.insert(model.name.clone(), folder);
            }
            let entry = grant_entry(&definition.name, step, &workflow_dir);
            if !(entry.dirs.is_empty()
                && entry.http.is_empty()
                && entry.secrets.is_empty()
                && entry.models.is_empty())
            {
                grants.push(entry);
            }
        }
        let rewritten = rewrite(&text, &mut rewrites)
            .map_err(|message| fail(format!("`{}`: {message}", file.display())))?;
        if files.contains_key(&file_name) {
            return Err(fail(format!("two workflow files are named `{file_name}`")));
        }
        workflows.push(WorkflowEntry {
            name: definition.name.clone(),
            path: file_name.clone(),
            digest: crate::digest::digest(rewritten.as_bytes()),
            size: rewritten.len() as u64,
        });
        files.insert(file_name, rewritten.into_bytes());
        definitions.push(definition);
    }
    for (name, folder) in &models {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
            .map_err(BundleError::io("reading the model", folder))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .collect();
        entries.sort();
        for path in entries {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let bytes = crate::files::read(&path, crate::files::Kind::Bundle)
                .map_err(BundleError::io("reading", &path))?;
            files.insert(format!("models/{name}/{file}"), bytes);
        }
    }
    let mut readme = None;
    if dir.join("README.md").is_file() {
        let bytes = crate::files::read(&dir.join("README.md"), crate::files::Kind::Config)
            .map_err(BundleError::io("reading", dir.join("README.md")))?;
        files.insert("README.md".to_owned(), bytes);
        readme = Some("README.md".to_owned());
    }
    for asset in &source.assets {
        add_asset(&dir, &dir.join(asset), &mut files).map_err(&fail)?;
    }
    let first = definitions
        .first()
        .ok_or_else(|| fail("it names no workflow".to_owned()))?;
    let host =
        semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver");
    let workflow_paths: Vec<String> = workflows.iter().map(|w| w.path.clone()).collect();
    let entry = |path: &String, bytes: &Vec<u8>| FileEntry {
        path: path.clone(),
        digest: crate::digest::digest(bytes),
        size: bytes.len() as u64,
    };
    let manifest = Manifest {
        format: FORMAT,
        name: source.name.clone().unwrap_or_else(|| first.name.clone()),
        version: source
            .version
            .clone()
            .unwrap_or_else(|| first.version.clone()),
        description: source
            .description
            .clone()
            .or_else(|| first.description.clone()),
        authors: source.authors.clone(),
        license: source.license.clone(),
        readme,
        requires: Requires {
            plait: source
                .plait
                .clone()
                .unwrap_or_else(|| format!("^{}.{}", host.major, host.minor)),
            wit: WIT_WORLD.to_owned(),
        },
        workflows,
        components: files
            .iter()
            .filter(|(path, _)| path.starts_with("components/"))
            .map(|(path, bytes)| entry(path, bytes))
            .collect(),
        assets: files
            .iter()
            .filter(|(path, _)| !path.starts_with("components/") && !workflow_paths.contains(path))
            .map(|(path, bytes)| entry(path, bytes))
            .collect(),
        grants,
        compiled: Vec::new(),
    };
    // What a reader checks, checked before anything is written.
    let text = manifest.to_toml();
    Manifest::parse(text.as_bytes()).map_err(|error| fail(error.to_string()))?;
    let mut entries: Vec<(String, Vec<u8>)> = files.into_iter().collect();
    entries.push((MANIFEST_FILE.to_owned(), text.into_bytes()));
    let bytes = super::archive::write(&entries)?;
    Ok(Packed { manifest, bytes })
}

/// Adds file or folder `path` (inside `dir`) to `files`.
fn add_asset(dir: &Path, path: &Path, files: &mut BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let metadata = std::fs::symlink_metadata(path)
        .map_err(|error| format!("asset `{}` cannot be read: {error}", path.display()))?;
    if metadata.is_dir() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|error| format!("asset `{}` cannot be read: {error}", path.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .collect();
        children.sort();
        for child in children {
            add_asset(dir, &child, files)?;
        }
        return Ok(());
    }
    if !metadata.is_file() {
        return Err(format!(
            "asset `{}` is not a plain file (links are not carried)",
            path.display()
        ));
    }
    let relative = path
        .strip_prefix(dir)
        .map_err(|_| format!("asset `{}` is outside the template folder", path.display()))?;
    let relative = relative
        .to_str()
        .ok_or_else(|| format!("asset `{}` has a name that is not UTF-8", path.display()))?
        .replace(std::path::MAIN_SEPARATOR, "/");
    check_path(&relative)?;
    if files.contains_key(&relative) {
        return Err(format!("asset `{relative}` is already in the bundle"));
    }
    let bytes = crate::files::read(path, crate::files::Kind::Bundle)
        .map_err(|error| format!("asset `{}`: {error}", path.display()))?;
    files.insert(relative, bytes);
    Ok(())
}

/// What one step asks for, as the manifest shows it.
fn grant_entry(workflow: &str, step: &crate::definition::StepDefinition, dir: &Path) -> GrantEntry {
    let grants = &step.grants;
    GrantEntry {
        workflow: workflow.to_owned(),
        step: step.id.to_string(),
        dirs: grants
            .dirs
            .iter()
            .map(|grant| {
                let host = match grant.host.strip_prefix(dir) {
                    Ok(relative) if relative.as_os_str().is_empty() => ".".to_owned(),
                    Ok(relative) => format!("./{}", relative.display()),
                    Err(_) => grant.host.display().to_string(),
                };
                format!(
                    "{} <- {host} ({})",
                    grant.guest,
                    if grant.writable {
                        "read-write"
                    } else {
                        "read-only"
                    }
                )
            })
            .collect(),
        http: grants
            .http
            .iter()
            .map(|grant| {
                let rule = &grant.rule;
                let port = rule
                    .port
                    .map_or_else(|| ":*".to_owned(), |port| format!(":{port}"));
                match &rule.methods {
                    Some(methods) => format!(
                        "{}://{}{port} [{}]",
                        rule.scheme,
                        rule.host,
                        methods.join(", ")
                    ),
                    None => format!("{}://{}{port}", rule.scheme, rule.host),
                }
            })
            .collect(),
        secrets: grants
            .secrets
            .iter()
            .map(|grant| {
                if grant.name == grant.source {
                    grant.name.clone()
                } else {
                    format!("{} <- {}", grant.name, grant.source)
                }
            })
            .collect(),
        models: grants
            .models
            .iter()
            .map(|grant| grant.name.clone())
            .collect(),
    }
}

/// The scalar written at `span` (its quotes removed).
fn scalar_at(text: &str, span: crate::definition::Span) -> Option<String> {
    let line = text.lines().nth(span.line.checked_sub(1)?)?;
    let written: String = line
        .chars()
        .skip(span.column.checked_sub(1)?)
        .take(span.len)
        .collect();
    Some(written.trim_matches(['"', '\'']).to_owned())
}

/// Replaces each span's text (a `uses:` scalar) with its new value, written
/// as a JSON string (valid YAML and JSON both).
fn rewrite(
    text: &str,
    rewrites: &mut [(crate::definition::Span, String)],
) -> Result<String, String> {
    // From the end, so earlier positions stay valid.
    rewrites.sort_by_key(|(span, _)| std::cmp::Reverse((span.line, span.column)));
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    for (span, value) in rewrites.iter() {
        let line = lines
            .get_mut(span.line.wrapping_sub(1))
            .ok_or_else(|| format!("line {} is out of the file", span.line))?;
        let chars: Vec<char> = line.chars().collect();
        let start = span.column.saturating_sub(1);
        let end = start + span.len;
        if end > chars.len() {
            return Err(format!(
                "the `uses:` value at line {} could not be rewritten; write it on one line",
                span.line
            ));
        }
        let replacement = serde_json::to_string(value).expect("a string serializes");
        let mut new: String = chars[..start].iter().collect();
        new.push_str(&replacement);
        new.extend(&chars[end..]);
        *line = new;
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_values_are_rewritten_in_place_and_nothing_else() {
        let text = "steps:\n  - id: a\n    uses: ../../x/ocr.wasm   # the OCR\n  - { id: b, uses: \"../y/z.wasm\" }\n";
        let mut rewrites = vec![
            (
                crate::definition::Span::new(3, 11, 16),
                "components/ocr.wasm".to_owned(),
            ),
            (
                crate::definition::Span::new(4, 20, 13),
                "components/z.wasm".to_owned(),
            ),
        ];
        assert_eq!(
            rewrite(text, &mut rewrites).unwrap(),
            "steps:\n  - id: a\n    uses: \"components/ocr.wasm\"   # the OCR\n  - { id: b, uses: \"components/z.wasm\" }\n"
        );
        assert_eq!(
            scalar_at(text, crate::definition::Span::new(4, 20, 13)).as_deref(),
            Some("../y/z.wasm")
        );
    }
}
