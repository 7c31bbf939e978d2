//! Installed bundles: where they live, how they are found, removed.
//!
//! Under the Plait home's `bundles/` folder:
//!
//! ```text
//! bundles/blobs/sha256/<hex>          every file once, by digest, read-only
//! bundles/<name>/<version>/           one installed version: its files
//!                                     (hard links to the blobs), bundle.toml,
//!                                     bundle.sig, installed.json
//! ```
//!
//! A version's folder is a workflow folder like any other: its workflow
//! files name their components by relative path, and a relative folder
//! grant (`./archive`) is a folder inside it. Versions live side by side;
//! `plait run NAME` takes the highest, `NAME@VERSION` that one. Runs pin
//! their definition and components in the store (as every run does), so a
//! run goes on with the version it started with whatever is installed
//! later. A version is installed whole or not at all: it is assembled in a
//! staging folder and renamed into place.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Bundle, BundleError, MANIFEST_FILE, Manifest, SIGNATURE_FILE};

/// What is recorded of an installation (`installed.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallInfo {
    /// When (ms since the epoch).
    pub installed_at_ms: u64,
    /// Who (`user:NAME`).
    pub actor: String,
    /// The signing key's id, if signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The trust store's name for that key, if it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The grants accepted, as the manifest lists them.
    #[serde(default)]
    pub accepted_grants: bool,
}

/// The name of the installation record in a version's folder.
pub const INSTALL_FILE: &str = "installed.json";

/// One installed version.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its folder.
    pub dir: PathBuf,
    /// How it was installed.
    pub info: Option<InstallInfo>,
}

impl Installed {
    /// The path of its workflow named `name`.
    pub fn workflow(&self, name: &str) -> Option<PathBuf> {
        self.manifest
            .workflows
            .iter()
            .find(|workflow| workflow.name == name)
            .map(|workflow| self.dir.join(&workflow.path))
    }

    /// Gives `engine` this version's code compiled for it (if `trusted`:
    /// its signer is in the trust store), re-checking each file's digest:
    /// how an installed bundle runs on a host without a compiler after its
    /// code cache was cleared.
    pub fn import_compiled(
        &self,
        engine: &crate::engine::Engine,
        trusted: bool,
    ) -> Result<super::compiled::Imported, BundleError> {
        super::compiled::import(engine, &self.manifest, trusted, |path| {
            let file = self.dir.join(path);
            let bytes = crate::files::read(&file, crate::files::Kind::Bundle)
                .map_err(BundleError::io("reading", &file))?;
            let pinned = self
                .manifest
                .compiled
                .iter()
                .find(|entry| entry.path == path)
                .map(|entry| entry.digest.as_str());
            let digest = crate::digest::digest(&bytes);
            if pinned != Some(digest.as_str()) {
                return Err(BundleError::Tampered {
                    path: file.display().to_string(),
                    expected: pinned.unwrap_or("nothing").to_owned(),
                    found: digest.to_string(),
                });
            }
            Ok(bytes)
        })
    }
}

/// The installed bundles of a Plait home.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Gives `engine` the code installed bundles carry for it, where it
    /// lacks it (its cache was cleared, or it is new): a host without a
    /// compiler has no other way to run them. Only from bundles whose
    /// signer is still in `trust`; failures are logged, and the component
    /// then fails to load with the reason.
    pub fn import_compiled(&self, engine: &crate::engine::Engine, trust: &super::keys::TrustStore) {
        let Ok(installed) = self.list() else {
            return;
        };
        if installed.iter().all(|b| b.manifest.compiled.is_empty()) {
            return;
        }
        let trusted: Vec<String> = trust
            .list()
            .unwrap_or_default()
            .iter()
            .map(|key| super::keys::key_id(&key.public_key))
            .collect();
        for bundle in installed {
            let signed_by_trusted = bundle
                .info
                .as_ref()
                .and_then(|info| info.signer.as_ref())
                .is_some_and(|id| trusted.contains(id));
            if let Err(error) = bundle.import_compiled(engine, signed_by_trusted) {
                tracing::warn!(
                    bundle = %bundle.manifest.id(),
                    error = %crate::errors::error_chain(&error),
                    "the bundle's compiled code was not taken"
                );
            }
        }
    }

    /// The registry in folder `root` (`bundles/` in the Plait home).
    pub fn at(root: &Path) -> Registry {
        Registry {
            root: root.to_owned(),
        }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every installed version, by name then version.
    pub fn list(&self) -> Result<Vec<Installed>, BundleError> {
        let mut installed = Vec::new();
        let names = match std::fs::read_dir(&self.root) {
            Ok(names) => names,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(installed),
            Err(error) => return Err(BundleError::io("listing", &self.root)(error)),
        };
        for name in names.filter_map(Result::ok) {
            let name_dir = name.path();
            let Some(file_name) = name_dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_name == "blobs" || file_name.starts_with('.') || !name_dir.is_dir() {
                continue;
            }
            let versions =
                std::fs::read_dir(&name_dir).map_err(BundleError::io("listing", &name_dir))?;
            for version in versions.filter_map(Result::ok) {
                let dir = version.path();
                let Ok(bytes) =
                    crate::files::read(&dir.join(MANIFEST_FILE), crate::files::Kind::Config)
                else {
                    continue;
                };
                let manifest = Manifest::parse(&bytes)?;
                let info = crate::files::read(&dir.join(INSTALL_FILE), crate::files::Kind::Config)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                installed.push(Installed {
                    manifest,
                    dir,
                    info,
                });
            }
        }
        installed.sort_by(|a, b| {
            (a.manifest.name.as_str(), semver_of(&a.manifest))
                .cmp(&(b.manifest.name.as_str(), semver_of(&b.manifest)))
        });
        Ok(installed)
    }

    /// Installed version `version` of bundle `name`.
    pub fn get(&self, name: &str, version: &str) -> Result<Option<Installed>, BundleError> {
        Ok(self.list()?.into_iter().find(|installed| {
            installed.manifest.name == name && installed.manifest.version == version
        }))
    }

    /// The workflow `name` (`NAME` or `NAME@VERSION`) of the installed
    /// bundles: with a version, of that bundle version; without, of the
    /// highest version that has it.
    pub fn find_workflow(
        &self,
        reference: &str,
    ) -> Result<Option<(Installed, PathBuf)>, BundleError> {
        let (name, version) = match reference.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (reference, None),
        };
        let mut found: Option<(Installed, PathBuf)> = None;
        for installed in self.list()? {
            if version.is_some_and(|version| installed.manifest.version != version) {
                continue;
            }
            if let Some(path) = installed.workflow(name) {
                // The list is in ascending version order: the last wins.
                found = Some((installed, path));
            }
        }
        Ok(found)
    }

    /// Assembles a verified bundle's folder aside: its files in the blob
    /// store, linked into a staging folder. Nothing is installed until
    /// [`Staged::commit`] (after the caller checked and precompiled its
    /// workflows there); a dropped [`Staged`] leaves nothing behind.
    pub fn stage(&self, bundle: &Bundle, info: &InstallInfo) -> Result<Staged, BundleError> {
        let manifest = &bundle.manifest;
        let target = self.root.join(&manifest.name).join(&manifest.version);
        if target.join(MANIFEST_FILE).exists() {
            let existing =
                crate::files::read(&target.join(MANIFEST_FILE), crate::files::Kind::Config)
                    .map_err(BundleError::io("reading", target.join(MANIFEST_FILE)))?;
            return Err(BundleError::Install(if existing == bundle.manifest_bytes {
                format!(
                    "`{}` is already installed, with the same contents",
                    manifest.id()
                )
            } else {
                format!(
                    "`{}` is already installed with other contents; a version names one set of files: remove it first (`plait bundle remove {}`), or install another version",
                    manifest.id(),
                    manifest.id()
                )
            }));
        }
        let blobs = self.root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(BundleError::io("creating", &blobs))?;
        let staged = Staged {
            dir: self.root.join(format!(".staging-{}", uuid::Uuid::now_v7())),
            target,
            committed: false,
        };
        let staging = staged.dir.clone();
        let result = (|| {
            for (path, bytes) in &bundle.files {
                let digest = crate::digest::digest(bytes);
                let blob = blobs.join(&digest[7..]);
                if !blob.exists() {
                    let temporary = blobs.join(format!(".{}.tmp", &digest[7..]));
                    std::fs::write(&temporary, bytes)
                        .map_err(BundleError::io("writing", &temporary))?;
                    set_read_only(&temporary)?;
                    std::fs::rename(&temporary, &blob)
                        .map_err(BundleError::io("storing", &blob))?;
                }
                let file = staging.join(path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(BundleError::io("creating", parent))?;
                }
                // One copy on disk however many versions share a file.
                if std::fs::hard_link(&blob, &file).is_err() {
                    std::fs::write(&file, bytes).map_err(BundleError::io("writing", &file))?;
                }
            }
            std::fs::write(staging.join(MANIFEST_FILE), &bundle.manifest_bytes)
                .map_err(BundleError::io("writing", staging.join(MANIFEST_FILE)))?;
            if let Some(signature) = &bundle.signature {
                std::fs::write(staging.join(SIGNATURE_FILE), signature)
                    .map_err(BundleError::io("writing", staging.join(SIGNATURE_FILE)))?;
            }
            std::fs::write(
                staging.join(INSTALL_FILE),
                serde_json::to_vec_pretty(info).expect("plain data"),
            )
            .map_err(BundleError::io("writing", staging.join(INSTALL_FILE)))
        })();
        // On an error the dropped `staged` removes what was assembled.
        result.map(|()| staged)
    }

    /// Removes version `version` of bundle `name`. Refused while a run
    /// `in_use` names is unfinished, and while its folder holds files the
    /// bundle did not bring (what its workflows wrote into a granted
    /// folder) unless `purge`. Blobs no other version uses go too.
    pub fn remove(
        &self,
        name: &str,
        version: &str,
        in_use: &[String],
        purge: bool,
    ) -> Result<Installed, BundleError> {
        let Some(installed) = self.get(name, version)? else {
            return Err(BundleError::Install(format!(
                "`{name}@{version}` is not installed; `plait bundle list` shows what is"
            )));
        };
        if !in_use.is_empty() {
            return Err(BundleError::Install(format!(
                "`{name}@{version}` is used by unfinished runs {}; let them finish (or `plait cancel` them) first",
                in_use.join(", ")
            )));
        }
        let mut written = Vec::new();
        collect_extra(&installed, &installed.dir, &mut written);
        if !written.is_empty() && !purge {
            return Err(BundleError::Install(format!(
                "`{name}@{version}` holds files its workflows wrote ({}); move them somewhere else, or pass `--purge` to delete them with it",
                written
                    .iter()
                    .take(5)
                    .map(|path| format!("`{}`", path.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let doomed = self
            .root
            .join(format!(".removing-{}", uuid::Uuid::now_v7()));
        std::fs::rename(&installed.dir, &doomed)
            .map_err(BundleError::io("removing", &installed.dir))?;
        std::fs::remove_dir_all(&doomed).map_err(BundleError::io("removing", &doomed))?;
        let name_dir = self.root.join(name);
        let _ = std::fs::remove_dir(&name_dir); // only if empty
        self.collect_blobs()?;
        Ok(installed)
    }

    /// Deletes the blobs no installed version pins.
    fn collect_blobs(&self) -> Result<(), BundleError> {
        let mut kept = std::collections::HashSet::new();
        for installed in self.list()? {
            for file in installed.manifest.files() {
                kept.insert(file.digest.trim_start_matches("sha256:").to_owned());
            }
        }
        let blobs = self.root.join("blobs").join("sha256");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !kept.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// A bundle's folder assembled aside, not yet installed.
#[derive(Debug)]
pub struct Staged {
    /// The staging folder.
    pub dir: PathBuf,
    /// Where it goes.
    pub target: PathBuf,
    committed: bool,
}

impl Staged {
    /// Moves the folder into place; returns where.
    pub fn commit(mut self) -> Result<PathBuf, BundleError> {
        if let Some(parent) = self.target.parent() {
            std::fs::create_dir_all(parent).map_err(BundleError::io("creating", parent))?;
        }
        std::fs::rename(&self.dir, &self.target)
            .map_err(BundleError::io("installing", &self.target))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Files under `dir` that are not the bundle's own.
fn collect_extra(installed: &Installed, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect_extra(installed, &path, out);
            continue;
        }
        let relative = path
            .strip_prefix(&installed.dir)
            .map(|p| p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
            .unwrap_or_default();
        let own = relative == MANIFEST_FILE
            || relative == SIGNATURE_FILE
            || relative == INSTALL_FILE
            || installed.manifest.files().any(|file| file.path == relative);
        if !own {
            out.push(path);
        }
    }
}

fn semver_of(manifest: &Manifest) -> semver::Version {
    semver::Version::parse(&manifest.version).unwrap_or(semver::Version::new(0, 0, 0))
}

fn set_read_only(path: &Path) -> Result<(), BundleError> {
    let mut permissions = std::fs::metadata(path)
        .map_err(BundleError::io("reading", path))?
        .permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(path, permissions).map_err(BundleError::io("protecting", path))
}

/// The grant kinds a bundle asks for that the policy does not restrict
/// (where it allows anything): each needs the operator's `--allow`. A kind
/// the policy restricts with an allow-list is accepted by that list, since
/// planning the workflow checks every grant against it.
pub fn unrestricted_grants(manifest: &Manifest, policy: &crate::policy::Policy) -> Vec<String> {
    let mut kinds = Vec::new();
    let asks = |pick: fn(&super::manifest::GrantEntry) -> bool| manifest.grants.iter().any(pick);
    if asks(|g| !g.dirs.is_empty()) && policy.dirs.is_none() {
        kinds.push("dirs".to_owned());
    }
    if asks(|g| !g.http.is_empty()) && policy.outbound_http.is_none() {
        kinds.push("http".to_owned());
    }
    if asks(|g| !g.secrets.is_empty()) && policy.secrets.is_none() {
        kinds.push("secrets".to_owned());
    }
    if asks(|g| !g.models.is_empty()) && policy.models.is_none() {
        kinds.push("models".to_owned());
    }
    kinds
}
