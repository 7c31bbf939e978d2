//! The Plait home as the CLI opens it: the library's [`plait::home::Home`]
//! (the one layout), plus what only a command does with it: find the
//! default folder, hold the journal with a watchdog and serve it to other
//! commands, and turn a missing workflow into a usage error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use plait::engine::Engine;
use plait::home::HomeError;
use plait::policy::Policy;
use plait::store::remote::{RemoteStore, Served};
use plait::store::{RunStore, SledStore, StoreError};

/// The resolved home directory: the library's layout
/// ([`plait::home::Home`], which it derefs to) with the CLI's ways of
/// opening it.
pub struct Home {
    home: plait::home::Home,
}

impl std::ops::Deref for Home {
    type Target = plait::home::Home;

    fn deref(&self) -> &plait::home::Home {
        &self.home
    }
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
        Ok(Home {
            home: plait::home::Home::at(dir).map_err(unwrap)?,
        })
    }

    /// The host policy: `explicit` (from `--policy`/`PLAIT_POLICY`), else
    /// `plait.toml` in the home if it exists, else the defaults.
    pub fn policy(&self, explicit: Option<PathBuf>) -> anyhow::Result<Policy> {
        self.home.policy(explicit.as_deref()).map_err(unwrap)
    }

    /// The API token hashes (`plait token`).
    #[cfg(feature = "server")]
    pub fn tokens_file(&self) -> PathBuf {
        self.dir().join(plait_server::auth::TOKENS_FILE)
    }

    /// The webhook signing secret (`plait webhooks secret`).
    #[cfg(feature = "server")]
    pub fn webhook_secret_file(&self) -> PathBuf {
        self.dir().join("webhook-secret")
    }

    /// The workflow file `given` names: itself when it exists, else the
    /// workflow of an installed bundle (`NAME` or `NAME@VERSION`); a name
    /// that is neither is a usage error.
    pub fn workflow_path(&self, given: &Path) -> anyhow::Result<PathBuf> {
        match self.home.workflow_path(given) {
            Ok(path) => Ok(path),
            Err(error @ HomeError::NoSuchWorkflow(_)) => {
                Err(super::UsageError(error.to_string()).into())
            }
            Err(error) => Err(unwrap(error)),
        }
    }

    /// Creates the engine (see [`plait::home::Home::engine`]).
    pub fn engine(&self, policy: &Policy) -> anyhow::Result<Engine> {
        self.home.engine(policy).map_err(unwrap)
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
}

/// The error a home passed on, as itself: the exit code and the help the
/// CLI gives depend on what it is (a policy error is a usage error).
fn unwrap(error: HomeError) -> anyhow::Error {
    match error {
        HomeError::Policy(error) => error.into(),
        HomeError::Engine(error) => error.into(),
        HomeError::Bundle(error) => error.into(),
        other => other.into(),
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
