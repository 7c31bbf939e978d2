//! Code compiled ahead of time: `plait bundle compile`, and taking that code
//! on a host (which is how an edge build, without a compiler, runs at all).
//!
//! `compile` compiles every component of a bundle for a target triple
//! and pins the artifacts in the manifest as `[[compiled]]` entries, keyed
//! by [`crate::engine::code_key`]: the wasmtime release, the target and the
//! engine settings that change code. The artifacts are files of the bundle
//! like any other, so the signature covers them and [`super::open`]
//! checks their digests.
//!
//! [`import`] hands a host the code whose key matches its engine exactly.
//! Compiled code is native code: it is taken only from a bundle signed by
//! a publisher in the trust store (never from one taken with
//! `--allow-unsigned` or `--allow-untrusted`), and wasmtime checks each
//! artifact's header (release, target, CPU features, settings) before it
//! is used. Code for other engines is ignored; a host that cannot compile
//! and finds no code of its own gets a clear error when the component is
//! loaded.

use super::manifest::CompiledEntry;
use super::{BundleError, Manifest};
use crate::engine::Engine;

/// The folder of a bundle holding compiled code, one subfolder per target.
pub const COMPILED_DIR: &str = "compiled";

/// Adds code compiled for `target` to a bundle's files, replacing code it
/// held for the same engine: the new manifest and files, ready for
/// [`super::archive::write`] (unsigned: the manifest changed, so the
/// bundle must be signed again).
#[cfg(feature = "compiler")]
pub fn compile(
    bundle: &super::Bundle,
    target: &str,
) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    // Every engine Plait creates meters fuel (`EngineOptions::for_policy`).
    let fuel = true;
    let key = crate::engine::code_key(target, fuel);
    let mut manifest = bundle.manifest.clone();
    let replaced: Vec<String> = manifest
        .compiled
        .iter()
        .filter(|entry| entry.engine == key)
        .map(|entry| entry.path.clone())
        .collect();
    manifest.compiled.retain(|entry| entry.engine != key);
    let mut files: Vec<(String, Vec<u8>)> = bundle
        .files
        .iter()
        .filter(|(path, _)| !replaced.contains(path))
        .cloned()
        .collect();
    for component in &bundle.manifest.components {
        let bytes = bundle
            .file(&component.path)
            .ok_or_else(|| BundleError::Manifest(format!("`{}` is missing", component.path)))?;
        let code = crate::engine::compile_for(target, fuel, bytes).map_err(|error| {
            BundleError::Compile(format!(
                "`{}` does not compile for `{target}`: {}",
                component.path,
                crate::errors::error_chain(&error)
            ))
        })?;
        let stem = component
            .path
            .strip_suffix(".wasm")
            .unwrap_or(&component.path);
        let path = format!("{COMPILED_DIR}/{target}/{stem}.cwasm");
        manifest.compiled.push(CompiledEntry {
            component: component.path.clone(),
            target: target.to_owned(),
            engine: key.clone(),
            path: path.clone(),
            digest: crate::digest::digest(&code),
            size: code.len() as u64,
        });
        files.push((path, code));
    }
    manifest
        .compiled
        .sort_by(|a, b| (&a.target, &a.path).cmp(&(&b.target, &b.path)));
    let manifest_bytes = manifest.to_toml().into_bytes();
    Manifest::parse(&manifest_bytes)?;
    let mut entries = vec![(super::MANIFEST_FILE.to_owned(), manifest_bytes)];
    entries.extend(files);
    Ok(entries)
}

/// What [`import`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Artifacts taken.
    pub taken: usize,
    /// Artifacts for this engine left alone because the bundle is not
    /// signed by a trusted publisher.
    pub untrusted: usize,
    /// The engines the bundle has code for.
    pub engines: Vec<String>,
}

/// Gives `engine` the code of `manifest` compiled for it, read with `read`
/// (a path in the bundle to its bytes, already checked against the
/// manifest's digests); `trusted` says the bundle is signed by a publisher
/// in the trust store. Code already at hand is not read again.
///
/// An artifact wasmtime refuses (made by another release, for CPU features
/// this machine lacks) is an error on a host without a compiler; a host
/// with one compiles the component instead and says so in the log.
pub fn import(
    engine: &Engine,
    manifest: &Manifest,
    trusted: bool,
    read: impl Fn(&str) -> Result<Vec<u8>, BundleError>,
) -> Result<Imported, BundleError> {
    let mut imported = Imported::default();
    for entry in &manifest.compiled {
        if !imported.engines.contains(&entry.engine) {
            imported.engines.push(entry.engine.clone());
        }
        if entry.engine != engine.code_key() {
            continue;
        }
        if !trusted {
            imported.untrusted += 1;
            continue;
        }
        let digest = component_digest(manifest, entry)?;
        if engine.has_compiled(digest) {
            continue;
        }
        let bytes = read(&entry.path)?;
        // SAFETY: the bytes are pinned by a manifest whose signature, by a
        // publisher in the trust store, was checked (`trusted`).
        match unsafe { engine.import_compiled(digest, &bytes) } {
            Ok(()) => imported.taken += 1,
            Err(error) if crate::engine::HAS_COMPILER => {
                tracing::warn!(
                    path = %entry.path,
                    error = format!("{error:#}"),
                    "compiled code in the bundle does not run here; compiling the component instead"
                );
            }
            Err(error) => {
                return Err(BundleError::Compile(format!(
                    "the compiled code `{}` of `{}` does not run on this host: {error:#}; compile the bundle again with the same plait release as this one (`plait bundle compile BUNDLE --target {}`)",
                    entry.path,
                    manifest.id(),
                    entry.target
                )));
            }
        }
    }
    Ok(imported)
}

fn component_digest<'a>(
    manifest: &'a Manifest,
    entry: &CompiledEntry,
) -> Result<&'a str, BundleError> {
    manifest
        .components
        .iter()
        .find(|component| component.path == entry.component)
        .map(|component| component.digest.as_str())
        .ok_or_else(|| {
            BundleError::Manifest(format!(
                "compiled code `{}` is for `{}`, which is not among the components",
                entry.path, entry.component
            ))
        })
}
