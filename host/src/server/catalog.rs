//! The workflows a server serves: every definition in its workflows folder,
//! by the `name` each declares, and every workflow of the installed
//! bundles (`NAME` for the highest version, `NAME@VERSION` for one; a
//! workflow of the folder with the same name comes first).
//!
//! The folder holds workflow files (`*.yaml`, `*.yml`, `*.json`) and
//! folders holding a `workflow.yaml`. It is looked at again at most once a
//! second when a request needs it: a new or edited file is served without a
//! restart, and a file that stops validating keeps being reported (and its
//! last good plan is not used: a broken edit must be noticed, not hidden).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::definition::{DEFINITION_FILE_NAMES, Definition};
use crate::engine::Engine;
use crate::plan::Plan;
use crate::policy::Policy;

/// How often the folder is looked at again, at most.
const RESCAN: Duration = Duration::from_secs(1);

/// One served workflow.
#[derive(Clone)]
pub struct Entry {
    /// Its definition file (or folder).
    pub path: PathBuf,
    /// What was found there: a plan, or why there is none.
    pub plan: Result<Arc<Plan>, String>,
    /// The version of the installed bundle it comes from, if it does.
    pub bundle_version: Option<String>,
    /// The files' modification times and sizes when it was built.
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
}

/// The served workflows.
pub struct Catalog {
    dir: PathBuf,
    engine: Engine,
    policy: Policy,
    bundles: Option<crate::bundle::install::Registry>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    scanned: Option<Instant>,
    /// By path.
    entries: BTreeMap<PathBuf, Entry>,
}

impl Catalog {
    /// The workflows in `dir`, planned with `engine` under `policy`.
    pub fn new(dir: &Path, engine: Engine, policy: Policy) -> Catalog {
        Catalog {
            dir: dir.to_owned(),
            engine,
            policy,
            bundles: None,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Also serves the workflows of the bundles installed in `registry`.
    pub fn with_bundles(mut self, registry: crate::bundle::install::Registry) -> Catalog {
        self.bundles = Some(registry);
        self
    }

    /// The folder served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine plans are built with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The policy plans are built under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Every entry, by path, after looking at the folder again if due.
    pub async fn entries(&self) -> Vec<Entry> {
        let mut state = self.state.lock().await;
        if state.scanned.is_none_or(|at| at.elapsed() >= RESCAN) {
            self.rescan(&mut state).await;
        }
        state.entries.values().cloned().collect()
    }

    /// The plan of the workflow named `name`: `Ok(None)` if none is,
    /// `Err` with why if its file does not check out.
    pub async fn plan(&self, name: &str) -> Result<Option<Arc<Plan>>, String> {
        let (name, version) = match name.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (name, None),
        };
        let entries = self.entries().await;
        let mut broken = None;
        let mut best: Option<(Option<semver::Version>, Arc<Plan>)> = None;
        for entry in entries {
            match entry.plan {
                Ok(plan) if plan.definition.name == name => {
                    match (&entry.bundle_version, version) {
                        // The folder's own workflow, asked for by name.
                        (None, None) => return Ok(Some(plan)),
                        (None, Some(_)) => {}
                        (Some(found), Some(wanted)) if found == wanted => return Ok(Some(plan)),
                        (Some(_), Some(_)) => {}
                        (Some(found), None) => {
                            let found = semver::Version::parse(found).ok();
                            if best.as_ref().is_none_or(|(best, _)| found > *best) {
                                best = Some((found, plan));
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    // A broken file named like the workflow is most likely
                    // the one asked for.
                    let stem = entry
                        .path
                        .file_stem()
                        .and_then(|stem| stem.to_str())
                        .unwrap_or_default()
                        .to_owned();
                    if stem == name || entry.path.ends_with(name) {
                        broken = Some(format!("`{}`: {error}", entry.path.display()));
                    }
                }
            }
        }
        if let Some((_, plan)) = best {
            return Ok(Some(plan));
        }
        match broken {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }

    async fn rescan(&self, state: &mut State) {
        state.scanned = Some(Instant::now());
        let mut found = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    if path.is_dir() {
                        if DEFINITION_FILE_NAMES
                            .iter()
                            .any(|file| path.join(file).is_file())
                        {
                            found.push(path);
                        }
                    } else if [".yaml", ".yml", ".json"]
                        .iter()
                        .any(|extension| name.ends_with(extension))
                    {
                        found.push(path);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(target: "plait::server", dir = %self.dir.display(), error = %error, "cannot read the workflows folder");
            }
        }
        let mut versions = std::collections::HashMap::new();
        if let Some(registry) = &self.bundles {
            match registry.list() {
                Ok(installed) => {
                    for bundle in installed {
                        for workflow in &bundle.manifest.workflows {
                            let path = bundle.dir.join(&workflow.path);
                            versions.insert(path.clone(), bundle.manifest.version.clone());
                            found.push(path);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "plait::server", error = %error, "cannot list the installed bundles");
                }
            }
        }
        state.entries.retain(|path, _| found.contains(path));
        for path in found {
            if let Some(entry) = state.entries.get(&path)
                && fingerprint_of(&entry.fingerprint) == entry.fingerprint
            {
                continue;
            }
            let mut entry = self.build(&path).await;
            entry.bundle_version = versions.get(&path).cloned();
            if let Err(error) = &entry.plan {
                tracing::warn!(target: "plait::server", path = %path.display(), error = %error, "a workflow in the workflows folder does not check out");
            }
            state.entries.insert(path, entry);
        }
    }

    async fn build(&self, path: &Path) -> Entry {
        let file = Definition::locate(path).unwrap_or_else(|_| path.to_owned());
        let mut files = vec![file];
        let plan = match Definition::load(path) {
            Err(error) => Err(error.to_string()),
            Ok(definition) => {
                match Plan::build_with(&self.engine, definition, &self.policy).await {
                    Err(errors) => Err(errors.to_string()),
                    Ok(plan) => {
                        files.extend(
                            plan.steps
                                .iter()
                                .filter_map(|step| step.component.as_ref())
                                .map(|component| component.path.clone()),
                        );
                        Ok(Arc::new(plan))
                    }
                }
            }
        };
        let fingerprint: Vec<_> = files.into_iter().map(|file| (file, None, 0)).collect();
        Entry {
            path: path.to_owned(),
            plan,
            bundle_version: None,
            fingerprint: fingerprint_of(&fingerprint),
        }
    }
}

/// The current modification times and sizes of the files in `previous`.
fn fingerprint_of(
    previous: &[(PathBuf, Option<SystemTime>, u64)],
) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    previous
        .iter()
        .map(|(path, _, _)| {
            let metadata = std::fs::metadata(path).ok();
            (
                path.clone(),
                metadata.as_ref().and_then(|m| m.modified().ok()),
                metadata.map_or(0, |m| m.len()),
            )
        })
        .collect()
}
