//! [`Runtime`]: Plait embedded in another Rust program.
//!
//! A device that runs workflows as part of its own program, rather than
//! through the `plait` command, opens a runtime over a folder (the same
//! layout as a Plait home: the run journal, the compiled-component cache,
//! installed bundles) and runs workflows in-process, with the same sandbox,
//! journal and idempotency as the CLI:
//!
//! ```no_run
//! # async fn device() -> Result<(), plait::RuntimeError> {
//! let runtime = plait::Runtime::open("/var/lib/gateway/plait").await?;
//! // A workflow file, or the workflow of an installed bundle (`NAME[@VERSION]`).
//! let intake = runtime.load("document-intake").await?;
//! let report = runtime
//!     .run_keyed(&intake, serde_json::json!({}), Vec::new(), "scan-0042")
//!     .await?;
//! println!("{:?}: {:?}", report.run.status, report.run.output);
//! # Ok(()) }
//! ```
//!
//! `host/examples/embed.rs` is a complete program. Runs interrupted by a
//! crash are continued with [`Runtime::resume_all`].
//!
//! A workflow's expressions that are more than a plain path run in worker
//! processes ([`crate::expressions`]): the embedding program calls
//! [`crate::expressions::serve_worker_if_requested`] first thing in `main`,
//! or names a `plait` binary with
//! [`crate::expressions::set_worker_program`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::definition::Definition;
use crate::engine::{Engine, EngineOptions};
use crate::executor::{Executor, ExecutorError, RunReport, StartRequest};
use crate::home::Home;
use crate::plan::Plan;
use crate::policy::Policy;
use crate::step::Blob;
use crate::store::{RunStatus, RunStore, SledStore};

/// Why the runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The home folder cannot be used, or a workflow is neither a file
    /// nor an installed one. (The home's policy, engine and bundle errors
    /// arrive as [`RuntimeError::Policy`], [`RuntimeError::Engine`] and
    /// [`RuntimeError::Bundle`].)
    #[error(transparent)]
    Home(crate::home::HomeError),
    /// The policy file is invalid.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A workflow file cannot be read or does not check out.
    #[error(transparent)]
    Load(#[from] crate::definition::LoadError),
    /// A workflow does not check out against its components or the policy.
    #[error(transparent)]
    Plan(#[from] crate::definition::DefinitionErrors),
    /// A stored run's workflow cannot be planned again.
    #[error(transparent)]
    RunPlan(#[from] crate::plan::RunPlanError),
    /// The installed bundles cannot be read.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// The run was refused or failed to execute.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

impl From<crate::home::HomeError> for RuntimeError {
    fn from(error: crate::home::HomeError) -> RuntimeError {
        use crate::home::HomeError;
        match error {
            HomeError::Policy(error) => RuntimeError::Policy(error),
            HomeError::Engine(error) => RuntimeError::Engine(error),
            HomeError::Bundle(error) => RuntimeError::Bundle(error),
            other => RuntimeError::Home(other),
        }
    }
}

/// How to open a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    home: PathBuf,
    policy: Option<Policy>,
    concurrency: Option<usize>,
}

impl RuntimeBuilder {
    /// Runs under `policy` instead of the folder's `plait.toml` (or the
    /// defaults when it has none).
    pub fn policy(mut self, policy: Policy) -> RuntimeBuilder {
        self.policy = Some(policy);
        self
    }

    /// At most `steps` steps at once, over every run [default: the
    /// policy's `[runtime] concurrency`].
    pub fn concurrency(mut self, steps: usize) -> RuntimeBuilder {
        self.concurrency = Some(steps.max(1));
        self
    }

    /// Opens the journal (which one process holds at a time) and starts
    /// the engine.
    pub async fn build(self) -> Result<Runtime, RuntimeError> {
        let home = Home::at(self.home)?;
        let policy = match self.policy {
            Some(policy) => policy,
            None => home.policy(None)?,
        };
        let journal = home.journal_dir();
        let store: Arc<dyn RunStore> = Arc::new(SledStore::open(&journal)?);
        // Other processes (`plait runs list`) read the journal through
        // this one while it holds it; without a socket they only cannot.
        let served = crate::store::remote::serve(Arc::downgrade(&store), &journal)
            .ok()
            .map(Arc::new);
        let engine = home.engine(&policy)?;
        let executor = Executor::with_concurrency(
            store.clone(),
            self.concurrency.unwrap_or(policy.concurrency),
        );
        Ok(Runtime {
            home,
            policy,
            engine,
            executor,
            _served: served,
        })
    }
}

/// Plait in-process: loads workflows, runs them durably, continues what a
/// crash interrupted.
#[derive(Clone)]
pub struct Runtime {
    home: Home,
    policy: Policy,
    engine: Engine,
    executor: Executor,
    // Held for its Drop: the journal's socket goes with the last clone.
    _served: Option<Arc<crate::store::remote::Served>>,
}

impl Runtime {
    /// How to open a runtime over folder `home`.
    pub fn builder(home: impl Into<PathBuf>) -> RuntimeBuilder {
        RuntimeBuilder {
            home: home.into(),
            policy: None,
            concurrency: None,
        }
    }

    /// Opens a runtime over folder `home` with its `plait.toml` (or the
    /// default policy).
    pub async fn open(home: impl Into<PathBuf>) -> Result<Runtime, RuntimeError> {
        Runtime::builder(home).build().await
    }

    /// Its folder.
    pub fn home(&self) -> &Path {
        self.home.dir()
    }

    /// The policy it runs under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The journal.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        self.executor.store()
    }

    /// Loads and checks a workflow: a file (or a folder holding one), else
    /// the workflow of an installed bundle, `NAME` (its highest version) or
    /// `NAME@VERSION`. Every component is compiled (or taken from the
    /// cache) and every step checked against the policy.
    pub async fn load(&self, workflow: impl AsRef<str>) -> Result<Arc<Plan>, RuntimeError> {
        let path = self.home.workflow_path(Path::new(workflow.as_ref()))?;
        let definition = Definition::load(&path)?;
        Ok(Arc::new(
            Plan::build_with(&self.engine, definition, &self.policy).await?,
        ))
    }

    /// Runs `plan` with `input` and `blobs` until it ends (or waits for a
    /// signal).
    pub async fn run(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
    ) -> Result<RunReport, RuntimeError> {
        Ok(self
            .executor
            .start(plan, StartRequest::new(input).blobs(blobs))
            .await?)
    }

    /// Like [`Runtime::run`], at most once per `key`: the same key and
    /// request give back (and continue) the first run.
    pub async fn run_keyed(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: &str,
    ) -> Result<RunReport, RuntimeError> {
        Ok(self
            .executor
            .start(
                plan,
                StartRequest::new(input)
                    .blobs(blobs)
                    .idempotency_key(Some(key)),
            )
            .await?)
    }

    /// Continues run `run_id` from its first unfinished step, with the
    /// definition and components it started with.
    pub async fn resume(&self, run_id: &str) -> Result<RunReport, RuntimeError> {
        let run = self
            .store()
            .run(run_id)?
            .ok_or_else(|| crate::store::StoreError::UnknownRun(run_id.to_owned()))?;
        let plan = Plan::of_run(&self.engine, &self.policy, self.store().as_ref(), &run).await?;
        Ok(self.executor.resume(&plan, run_id).await?)
    }

    /// Continues every run a crash left running (or queued); returns their
    /// reports. Runs waiting for a signal or a timer are left waiting.
    pub async fn resume_all(&self) -> Result<Vec<RunReport>, RuntimeError> {
        let mut reports = Vec::new();
        for run in self.store().runs()? {
            if matches!(run.status, RunStatus::Running | RunStatus::Queued) {
                reports.push(self.resume(&run.id).await?);
            }
        }
        Ok(reports)
    }
}

/// The engine options for running workflows under `policy`, caching
/// compiled components in `cache_dir`: memories reserved up to the largest
/// memory limit the policy allows, and instance slots for the steps it lets
/// run at once.
pub fn engine_options(policy: &Policy, cache_dir: Option<PathBuf>) -> EngineOptions {
    let defaults = EngineOptions::default();
    let largest = policy
        .max
        .memory
        .unwrap_or(0)
        .max(policy.defaults.memory)
        .max(defaults.max_memory_bytes as u64);
    EngineOptions {
        cache_dir,
        max_memory_bytes: usize::try_from(largest).unwrap_or(usize::MAX),
        needed_instances: u32::try_from(policy.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(4),
        ..defaults
    }
}
