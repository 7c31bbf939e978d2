//! `bundle.toml`: what a bundle is, what it targets, and every file in it.
//!
//! ```toml
//! format = 1
//! name = "document-intake"
//! version = "0.1.0"
//! description = "OCR, classify, route for review, archive and notify."
//! authors = ["Plait <team@plait.dev>"]
//! license = "Apache-2.0"
//! readme = "README.md"
//!
//! [requires]
//! plait = "^0.1"
//! wit = "plait:step@0.2.0"
//!
//! [[workflows]]
//! name = "document-intake"
//! path = "workflow.yaml"
//! digest = "sha256:…"
//! size = 2817
//!
//! [[components]]
//! path = "components/ocr.wasm"
//! digest = "sha256:…"
//! size = 1802311
//!
//! [[assets]]
//! path = "models/ppocrv6-tiny-det/model.onnx"
//! digest = "sha256:…"
//! size = 1815332
//!
//! [[grants]]
//! workflow = "document-intake"
//! step = "archive"
//! dirs = ["/archive <- ./archive (read-write)"]
//!
//! [[compiled]]                    # `plait bundle compile --target …`
//! component = "components/ocr.wasm"
//! target = "aarch64-unknown-linux-gnu"
//! engine = "wasmtime-48.0.8-aarch64-unknown-linux-gnu-1f0c…"
//! path = "compiled/aarch64-unknown-linux-gnu/components/ocr.cwasm"
//! digest = "sha256:…"
//! size = 6291456
//! ```
//!
//! Every path is relative, `/`-separated, without `.` or `..` segments, and
//! names one file of the archive; no two entries name the same file.

use serde::{Deserialize, Serialize};

use super::{BundleError, FORMAT, MANIFEST_FILE, SIGNATURE_FILE, WIT_WORLD};
use crate::digest::Digest;

/// The manifest of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The bundle format ([`FORMAT`]).
    pub format: u32,
    /// The bundle's name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// Its version: semver (`1.4.0`, `0.2.0-rc.1`).
    pub version: String,
    /// What it does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Its license, as an SPDX expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The path of an asset that is its readme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readme: Option<String>,
    /// The hosts it runs on.
    pub requires: Requires,
    /// Its workflow files.
    pub workflows: Vec<WorkflowEntry>,
    /// Its components.
    #[serde(default)]
    pub components: Vec<FileEntry>,
    /// Every other file: models (`models/NAME/FILE`), the readme, data.
    #[serde(default)]
    pub assets: Vec<FileEntry>,
    /// What each step will be granted (as its workflow asks), for the
    /// operator to see before installing.
    #[serde(default)]
    pub grants: Vec<GrantEntry>,
    /// Code compiled ahead of time from its components, for hosts without
    /// a compiler (`plait bundle compile`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled: Vec<CompiledEntry>,
}

/// A component's code compiled ahead of time for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompiledEntry {
    /// The component it was compiled from (its path in the bundle).
    pub component: String,
    /// The target triple it runs on.
    pub target: String,
    /// The engine it runs on: `crate::engine::code_key` (wasmtime release,
    /// target, settings). A host uses it only where its own key matches.
    pub engine: String,
    /// Its path in the bundle.
    pub path: String,
    /// `sha256:<hex>` of its bytes.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// The hosts a bundle runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// A semver requirement on the Plait host's version (`^0.1`).
    pub plait: String,
    /// The WIT world its components are built against
    /// (`plait:step@0.2.0`).
    pub wit: String,
}

/// A workflow file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowEntry {
    /// The workflow's `name`, by which it is run once installed.
    pub name: String,
    /// Its path in the bundle.
    pub path: String,
    /// `sha256:<hex>` of its bytes.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// A file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the bundle.
    pub path: String,
    /// `sha256:<hex>` of its bytes.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// What one step asks to be granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    /// The workflow.
    pub workflow: String,
    /// The step.
    pub step: String,
    /// Folders: `GUEST <- HOST (read-only|read-write)`; a relative host
    /// folder is inside the installed bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
    /// Outbound HTTP rules: `scheme://host[:port]`, with `[METHODS]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Host secrets: `NAME`, or `NAME <- HOST_NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// A pinned file: what [`Manifest::files`] yields.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    /// Its path.
    pub path: &'a str,
    /// `sha256:<hex>`.
    pub digest: &'a str,
    /// Bytes.
    pub size: u64,
}

impl Manifest {
    /// Parses and checks manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| BundleError::Manifest(format!("`{MANIFEST_FILE}` is not UTF-8 text")))?;
        let manifest: Manifest = toml::from_str(text).map_err(|error| {
            BundleError::Manifest(format!(
                "`{MANIFEST_FILE}` does not parse: {}",
                error.to_string().trim_end().replace('\n', "\n  ")
            ))
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The manifest as `bundle.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest is plain TOML data")
    }

    /// Every pinned file: workflows, components, assets.
    pub fn files(&self) -> impl Iterator<Item = Pinned<'_>> {
        self.workflows
            .iter()
            .map(|w| Pinned {
                path: &w.path,
                digest: &w.digest,
                size: w.size,
            })
            .chain(self.components.iter().chain(&self.assets).map(|f| Pinned {
                path: &f.path,
                digest: &f.digest,
                size: f.size,
            }))
            .chain(self.compiled.iter().map(|c| Pinned {
                path: &c.path,
                digest: &c.digest,
                size: c.size,
            }))
    }

    /// `NAME@VERSION`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    fn check(&self) -> Result<(), BundleError> {
        let fail = |message: String| Err(BundleError::Manifest(message));
        if self.format != FORMAT {
            return fail(format!(
                "it is bundle format {}, and this host reads format {FORMAT}; use a Plait that reads format {}",
                self.format, self.format
            ));
        }
        check_name(&self.name).map_err(BundleError::Manifest)?;
        semver::Version::parse(&self.version).map_err(|error| {
            BundleError::Manifest(format!(
                "`version = \"{}\"` is not a semantic version ({error}); write it like `1.4.0`",
                self.version
            ))
        })?;
        semver::VersionReq::parse(&self.requires.plait).map_err(|error| {
            BundleError::Manifest(format!(
                "`requires.plait = \"{}\"` is not a version requirement ({error}); write it like `^0.1`",
                self.requires.plait
            ))
        })?;
        if self.workflows.is_empty() {
            return fail("it lists no workflow".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        for file in self.files() {
            check_path(file.path).map_err(BundleError::Manifest)?;
            if !seen.insert(file.path) {
                return fail(format!("`{}` is listed twice", file.path));
            }
            let hex = file.digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return fail(format!(
                    "the digest of `{}` is `{}`, not `sha256:` and 64 lower-case hex digits",
                    file.path, file.digest
                ));
            }
        }
        for workflow in &self.workflows {
            check_name(&workflow.name).map_err(BundleError::Manifest)?;
        }
        for component in &self.components {
            if !component.path.ends_with(".wasm") {
                return fail(format!(
                    "component `{}` is not a `.wasm` file",
                    component.path
                ));
            }
        }
        let mut compiled = std::collections::HashSet::new();
        for entry in &self.compiled {
            if !self.components.iter().any(|c| c.path == entry.component) {
                return fail(format!(
                    "compiled code `{}` is for `{}`, which is not among the components",
                    entry.path, entry.component
                ));
            }
            if !entry.engine.contains(&entry.target) {
                return fail(format!(
                    "compiled code `{}` says target `{}` but engine `{}`",
                    entry.path, entry.target, entry.engine
                ));
            }
            if !compiled.insert((&entry.component, &entry.engine)) {
                return fail(format!(
                    "`{}` has code for `{}` twice",
                    entry.component, entry.engine
                ));
            }
        }
        if let Some(readme) = &self.readme
            && !self.assets.iter().any(|asset| asset.path == *readme)
        {
            return fail(format!("the readme `{readme}` is not among the assets"));
        }
        Ok(())
    }

    /// Refuses a bundle this host cannot run: another Plait version, or
    /// another WIT world.
    pub fn check_versions(&self) -> Result<(), BundleError> {
        let host =
            semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver");
        let required = semver::VersionReq::parse(&self.requires.plait)
            .map_err(|error| BundleError::Manifest(error.to_string()))?;
        if !required.matches(&host) {
            return Err(BundleError::Version(format!(
                "bundle `{}` needs Plait {}, and this is Plait {host}; install a Plait it supports, or a version of the bundle made for this one",
                self.id(),
                self.requires.plait
            )));
        }
        if self.requires.wit != WIT_WORLD {
            return Err(BundleError::Version(format!(
                "bundle `{}` is built for the WIT world `{}`, and this host runs `{WIT_WORLD}` components; rebuild its components against `{WIT_WORLD}`",
                self.id(),
                self.requires.wit
            )));
        }
        Ok(())
    }
}

/// Checks a bundle or workflow name.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a bundle name: use 1 to 64 lower-case letters, digits, `-` and `_`"
        ))
    }
}

/// Checks a path inside a bundle: relative, `/`-separated, each segment a
/// plain name, and not one of the bundle's own files.
pub fn check_path(path: &str) -> Result<(), String> {
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment
                .chars()
                .any(|c| c.is_control() || c == '\\' || c == ':')
    };
    if path.is_empty() || path.len() > 255 || path.starts_with('/') || !path.split('/').all(plain) {
        return Err(format!(
            "`{path}` is not a bundle path: it must be relative, `/`-separated, at most 255 bytes, without `.`, `..`, empty segments, `\\`, `:` or control characters"
        ));
    }
    if path == MANIFEST_FILE || path == SIGNATURE_FILE {
        return Err(format!(
            "`{path}` is the bundle's own file, not a pinned one"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "demo".into(),
            version: "1.2.3".into(),
            description: Some("A demo".into()),
            authors: vec!["A <a@example.com>".into()],
            license: Some("MIT".into()),
            readme: None,
            requires: Requires {
                plait: "^0.1".into(),
                wit: WIT_WORLD.into(),
            },
            workflows: vec![WorkflowEntry {
                name: "demo".into(),
                path: "workflow.yaml".into(),
                digest: Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
                size: 10,
            }],
            components: vec![FileEntry {
                path: "components/echo.wasm".into(),
                digest: Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
                size: 20,
            }],
            assets: Vec::new(),
            grants: vec![GrantEntry {
                workflow: "demo".into(),
                step: "save".into(),
                dirs: vec!["/out <- ./out (read-write)".into()],
                http: Vec::new(),
                secrets: Vec::new(),
                models: Vec::new(),
            }],
            compiled: Vec::new(),
        }
    }

    #[test]
    fn a_manifest_round_trips_through_toml() {
        let manifest = manifest();
        let text = manifest.to_toml();
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), manifest);
        assert!(text.starts_with("format = 1\nname = \"demo\""), "{text}");
    }

    #[test]
    fn a_malformed_digest_is_refused_when_the_manifest_is_parsed() {
        let text = manifest().to_toml();
        let good = format!("sha256:{}", "b".repeat(64));
        assert!(text.contains(&good), "{text}");
        for bad in ["sha256:bbbb", "md5:0123", "sha256:../../etc/passwd"] {
            let error = Manifest::parse(text.replace(&good, bad).as_bytes()).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("does not parse") && message.contains("is not a content digest"),
                "{message}"
            );
        }
    }

    #[test]
    fn unsafe_paths_and_bad_fields_are_refused() {
        for path in [
            "../etc/passwd",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "C:\\x",
            "bundle.toml",
            "",
        ] {
            assert!(check_path(path).is_err(), "{path}");
        }
        assert!(check_path("models/det/model.onnx").is_ok());
        let mut bad = manifest();
        bad.components[0].path = "workflow.yaml".into();
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        let mut bad = manifest();
        bad.version = "one".into();
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("semantic version")
        );
        let mut bad = manifest();
        bad.format = 9;
        assert!(bad.check().unwrap_err().to_string().contains("format 9"));
        let mut old = manifest();
        old.requires.plait = ">=9".into();
        assert!(
            old.check_versions()
                .unwrap_err()
                .to_string()
                .contains("needs Plait >=9")
        );
        let mut other = manifest();
        other.requires.wit = "plait:step@0.1.0".into();
        assert!(
            other
                .check_versions()
                .unwrap_err()
                .to_string()
                .contains("rebuild")
        );
    }
}
