//! The Plait home directory: the journal and the compiled-component cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use plait::engine::Engine;
use plait::policy::Policy;
use plait::store::remote::{RemoteStore, Served};
use plait::store::{RunStore, SledStore, StoreError};

/// The policy file looked for in the Plait home.
pub const POLICY_FILE: &str = "plait.toml";

/// The resolved home directory.
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `--store`/`PLAIT_HOME` if given, else `<data dir>/plait`.
    pub fn resolve(store: Option<PathBuf>) -> anyhow::Result<Home> {
        let dir = match store {
            Some(dir) => dir,
            None => dirs::data_dir().map(|dir| dir.join("plait")).context(
                "no data directory is known for this user; pass `--store DIR` or set PLAIT_HOME",
            )?,
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the Plait home `{}`", dir.display()))?;
        Ok(Home { dir })
    }

    /// The host policy: `explicit` (from `--policy`/`PLAIT_POLICY`), else
    /// `plait.toml` in the home if it exists, else the defaults.
    pub fn policy(&self, explicit: Option<PathBuf>) -> anyhow::Result<Policy> {
        let path = explicit.or_else(|| {
            let path = self.dir.join(POLICY_FILE);
            path.exists().then_some(path)
        });
        Ok(match path {
            Some(path) => Policy::load(&path)?,
            None => Policy::default(),
        })
    }

    /// Where each run's own log file goes (`RUN_ID.jsonl`).
    pub fn run_logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The API token hashes (`plait token`).
    #[cfg(feature = "server")]
    pub fn tokens_file(&self) -> PathBuf {
        self.dir.join(plait::server::auth::TOKENS_FILE)
    }

    /// The webhook signing secret (`plait webhooks secret`).
    #[cfg(feature = "server")]
    pub fn webhook_secret_file(&self) -> PathBuf {
        self.dir.join("webhook-secret")
    }

    /// The installed template bundles.
    pub fn bundles(&self) -> plait::bundle::install::Registry {
        plait::bundle::install::Registry::at(&self.dir.join("bundles"))
    }

    /// Where `plait key generate` puts keys.
    pub fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// The publisher keys the operator trusts.
    pub fn trust_store(&self) -> plait::bundle::keys::TrustStore {
        plait::bundle::keys::TrustStore::at(&self.dir.join(plait::bundle::keys::TRUST_FILE))
    }

    /// The workflow file `given` names: itself when it exists, else the
    /// workflow of an installed bundle (`NAME` or `NAME@VERSION`).
    pub fn workflow_path(&self, given: &Path) -> anyhow::Result<PathBuf> {
        if given.exists() {
            return Ok(given.to_owned());
        }
        let Some(text) = given.to_str() else {
            return Ok(given.to_owned());
        };
        let name = text.split('@').next().unwrap_or(text);
        if plait::bundle::manifest::check_name(name).is_err() {
            return Ok(given.to_owned());
        }
        match self.bundles().find_workflow(text)? {
            Some((_, path)) => Ok(path),
            None => Err(super::UsageError(format!(
                "`{text}` is neither a workflow file nor the workflow of an installed bundle; `plait bundle list` shows what is installed"
            ))
            .into()),
        }
    }

    /// The workflows `plait serve` serves unless told otherwise.
    #[cfg(feature = "server")]
    pub fn workflows_dir(&self) -> PathBuf {
        self.dir.join("workflows")
    }

    /// The run journal's folder.
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// Opens the run journal, with a watchdog: a write the disk never
    /// completes (a full disk, a file size limit) stops the process with
    /// a clear error after `$PLAIT_STORE_TIMEOUT` (default 60s) instead of
    /// hanging. Everything committed before stays; `plait resume` goes on
    /// once there is room.
    ///
    /// While this process holds it, the journal is served on its socket
    /// (see [`plait::store::remote`]), so that other plait commands can
    /// read it. When another process holds it, the error names that
    /// process.
    pub fn open_store(&self) -> anyhow::Result<Arc<SledStore>> {
        let path = self.journal_dir();
        let store = match SledStore::open(&path) {
            Ok(store) => Arc::new(store),
            Err(StoreError::Locked { path }) => {
                return Err(match RemoteStore::connect(&path) {
                    Ok(Some(remote)) => StoreError::Held {
                        path,
                        holder: remote.holder().to_string(),
                    },
                    _ => StoreError::Locked { path },
                }
                .into());
            }
            Err(error) => return Err(error.into()),
        };
        serve_socket(&store, &path);
        let deadline = std::env::var("PLAIT_STORE_TIMEOUT")
            .ok()
            .and_then(|text| humantime::parse_duration(text.trim()).ok())
            .unwrap_or(std::time::Duration::from_secs(60));
        let watch = store.write_watch();
        std::thread::Builder::new()
            .name("plait-store-watchdog".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    if watch.stuck_for().is_some_and(|stuck| stuck > deadline) {
                        eprintln!(
                            "error: the store at `{}` has not finished a write in {}: is the disk full, or a file size limit reached?\n  = help: nothing committed before is lost; free some space, then `plait resume --all` continues the runs",
                            path.display(),
                            humantime::format_duration(deadline)
                        );
                        std::process::exit(i32::from(super::EXIT_RUN_FAILED));
                    }
                }
            })?;
        Ok(store)
    }

    /// The run journal to read: opened here when no other process holds
    /// it, else read through the socket of the process that does (`plait
    /// serve`, a `plait run` waiting for a signal). Writes through the
    /// latter fail with [`StoreError::Held`], naming that process.
    pub fn open_store_or_remote(&self) -> anyhow::Result<Arc<dyn RunStore>> {
        // Between one process letting the journal go and the next taking
        // it, neither the lock nor the socket answers: try again briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match self.open_store() {
                Ok(store) => return Ok(store),
                Err(error) if !is_held(&error) => return Err(error),
                Err(error) => {
                    if let Some(remote) = RemoteStore::connect(&self.journal_dir())? {
                        return Ok(Arc::new(remote));
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(error);
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// [`Home::open_store`], or `None` when another plait process holds the
    /// store (its inbox then takes what is meant for it).
    pub fn open_store_unless_held(&self) -> anyhow::Result<Option<Arc<SledStore>>> {
        match self.open_store() {
            Ok(store) => Ok(Some(store)),
            Err(error) if is_held(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates the engine, caching compiled components under the home, or in
    /// `PLAIT_CACHE_DIR` when set (for example to share one cache between
    /// several homes).
    /// The engine reserves room for the largest memory `policy` lets a
    /// step have.
    pub fn engine(&self, policy: &Policy) -> anyhow::Result<Engine> {
        let cache = match std::env::var_os("PLAIT_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.dir.join("cache").join("components"),
        };
        let engine = Engine::new(&plait::runtime::engine_options(policy, Some(cache)))?;
        self.bundles().import_compiled(&engine, &self.trust_store());
        Ok(engine)
    }
}

/// Whether `error` says another process holds the store.
fn is_held(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<StoreError>(),
        Some(StoreError::Locked { .. } | StoreError::Held { .. })
    )
}

/// The sockets this process serves its journals on, by journal folder.
static SERVED: std::sync::Mutex<Vec<(PathBuf, Served)>> = std::sync::Mutex::new(Vec::new());

/// Serves `store` on its socket until [`close_sockets`]; a journal
/// opened again replaces its earlier socket. A socket that cannot be made
/// (a path too long for one) only means others cannot read the store
/// while this process holds it.
fn serve_socket(store: &Arc<SledStore>, journal: &Path) {
    let shared: Arc<dyn RunStore> = store.clone();
    match plait::store::remote::serve(Arc::downgrade(&shared), journal) {
        Ok(served) => {
            let mut all = SERVED.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|(path, _)| path != journal);
            all.push((journal.to_owned(), served));
        }
        Err(error) => tracing::debug!(
            journal = %journal.display(),
            %error,
            "the store is not served to other processes"
        ),
    }
}

/// Stops serving and removes the sockets of the journals this process
/// opened; called once the command is done.
pub fn close_sockets() {
    SERVED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}
