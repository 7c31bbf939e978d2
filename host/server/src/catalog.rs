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
//!
//! Plans are built concurrently, each on a task of its own, and a workflow
//! is served as soon as its own plan is ready: a component whose
//! `describe()` loops (until its timeout) delays only the workflows that
//! use it, never the server's start or the other workflows. A request for
//! a workflow still loading waits for that one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plait::definition::{DEFINITION_FILE_NAMES, Definition};
use plait::engine::Engine;
use plait::plan::Plan;
use plait::policy::Policy;

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
    bundles: Option<plait::bundle::install::Registry>,
    state: Arc<std::sync::Mutex<State>>,
    /// Woken whenever a plan is built.
    built: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct State {
    scanned: Option<Instant>,
    /// By path.
    entries: BTreeMap<PathBuf, Entry>,
    /// Plans being built, by path, with the workflow's name once its
    /// definition is read.
    loading: BTreeMap<PathBuf, Option<String>>,
}

impl Catalog {
    /// The workflows in `dir`, planned with `engine` under `policy`.
    pub fn new(dir: &Path, engine: Engine, policy: Policy) -> Catalog {
        Catalog {
            dir: dir.to_owned(),
            engine,
            policy,
            bundles: None,
            state: Arc::default(),
            built: Arc::default(),
        }
    }

    /// Also serves the workflows of the bundles installed in `registry`.
    pub fn with_bundles(mut self, registry: plait::bundle::install::Registry) -> Catalog {
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

    /// Every entry whose plan is built (or failed), by path, after looking
    /// at the folder again if due. Workflows still loading are not in it.
    pub async fn entries(&self) -> Vec<Entry> {
        let mut state = self.state.lock().expect("not poisoned");
        if state.scanned.is_none_or(|at| at.elapsed() >= RESCAN) {
            self.rescan(&mut state);
        }
        state.entries.values().cloned().collect()
    }

    /// The paths whose plans are still being built.
    pub fn loading(&self) -> Vec<PathBuf> {
        let state = self.state.lock().expect("not poisoned");
        state.loading.keys().cloned().collect()
    }

    /// Whether a plan that may be the workflow `name` (its definition
    /// names it, or is not read yet) is still being built.
    pub fn is_loading(&self, name: &str) -> bool {
        let state = self.state.lock().expect("not poisoned");
        state
            .loading
            .values()
            .any(|loading| loading.as_deref().is_none_or(|loading| loading == name))
    }

    /// Waits until no plan is being built, or `timeout` has passed.
    pub async fn settle(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let built = self.built.notified();
            tokio::pin!(built);
            built.as_mut().enable();
            let _ = self.entries().await;
            if self.loading().is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, built).await.is_err() {
                return;
            }
        }
    }

    /// The plan of the workflow named `name`: `Ok(None)` if none is,
    /// `Err` with why if its file does not check out.
    pub async fn plan(&self, name: &str) -> Result<Option<Arc<Plan>>, String> {
        let (name, version) = match name.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (name, None),
        };
        loop {
            let built = self.built.notified();
            tokio::pin!(built);
            built.as_mut().enable();
            if let Some(found) = self.lookup(name, version).await? {
                return Ok(Some(found));
            }
            // Not built yet: wait if its plan (or one whose name is not
            // known yet) is still being built.
            if !self.is_loading(name) {
                return self.lookup_broken(name).await;
            }
            built.await;
        }
    }

    async fn lookup(&self, name: &str, version: Option<&str>) -> Result<Option<Arc<Plan>>, String> {
        let entries = self.entries().await;
        let mut best: Option<(Option<semver::Version>, Arc<Plan>)> = None;
        for entry in entries {
            if let Ok(plan) = entry.plan
                && plan.definition.name == name
            {
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
        }
        Ok(best.map(|(_, plan)| plan))
    }

    /// Why the workflow `name` is not served, when a broken file is most
    /// likely it.
    async fn lookup_broken(&self, name: &str) -> Result<Option<Arc<Plan>>, String> {
        let entries = self.entries().await;
        let mut broken = None;
        for entry in entries {
            if let Err(error) = entry.plan {
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
        match broken {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }

    fn rescan(&self, state: &mut State) {
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
            if state.loading.contains_key(&path) {
                continue;
            }
            state.loading.insert(path.clone(), None);
            let (engine, policy) = (self.engine.clone(), self.policy.clone());
            let (state, built) = (self.state.clone(), self.built.clone());
            let version = versions.get(&path).cloned();
            tokio::spawn(async move {
                let mut entry = build(&engine, &policy, &path, &state).await;
                entry.bundle_version = version;
                if let Err(error) = &entry.plan {
                    tracing::warn!(target: "plait::server", path = %path.display(), error = %error, "a workflow in the workflows folder does not check out");
                }
                let mut state = state.lock().expect("not poisoned");
                state.loading.remove(&path);
                state.entries.insert(path, entry);
                drop(state);
                built.notify_waiters();
            });
        }
    }
}

/// Builds the entry of `path`, noting its workflow's name in `state` as
/// soon as the definition is read.
async fn build(
    engine: &Engine,
    policy: &Policy,
    path: &Path,
    state: &std::sync::Mutex<State>,
) -> Entry {
    {
        let file = Definition::locate(path).unwrap_or_else(|_| path.to_owned());
        let mut files = vec![file];
        let plan = match Definition::load(path) {
            Err(error) => Err(error.to_string()),
            Ok(definition) => {
                if let Some(loading) = state.lock().expect("not poisoned").loading.get_mut(path) {
                    *loading = Some(definition.name.clone());
                }
                match Plan::build_with(engine, definition, policy).await {
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
