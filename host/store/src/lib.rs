//! The run journal: runs, step states and outputs, blobs and step logs.
//!
//! The executor talks to a [`RunStore`]; [`SledStore`] is the embedded
//! implementation. Every [`Commit`] is atomic (all of its records land, or
//! none) and durable before `commit` returns, which is what makes a finished
//! step's output the truth that a resume builds on.

pub mod check;
pub mod gc;
mod records;
pub mod remote;
mod sled_store;

pub use records::{
    Abandoned, AttemptRecord, AuditAction, AuditRecord, BlobRef, CacheEntry, CacheHit,
    CancelRequest, Delivery, DeliveryAttempt, EventRecord, IdempotencyRecord, ItemRecord, Lease,
    RunRecord, RunStatus, Signal, StepRecord, StepStatus, TriggerMark, WorkflowRef,
};
pub use sled_store::{
    BATCH_INTERVAL_MS, Durability, SledStore, WalError, WriteWatch, inbox_dir, post_signal,
};

// The shared vocabulary, under the names this crate's modules use.
pub(crate) use plait_types::{clock, digest, errors, files, ids, logs, step, trace};

use crate::logs::StepLogs;

/// Errors of the run journal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error(
        "the store at `{path}` is in use by another plait process; wait for it to finish \
         or use another store with `--store DIR`"
    )]
    Locked {
        /// The store directory.
        path: std::path::PathBuf,
    },
    /// Another plait process holds the store, and said which: this
    /// process may read it through that one (see [`remote`]) but not
    /// write to it.
    #[error(
        "the store at `{path}` is in use by {holder}, which lets other processes read it but not \
         change it; wait for that process to finish or stop it, then try again (or use another \
         store with `--store DIR`)"
    )]
    Held {
        /// The store directory.
        path: std::path::PathBuf,
        /// The process holding it, as it names itself.
        holder: String,
    },
    /// The process holding the store could not answer a read.
    #[error("the plait process holding the store at `{path}` could not answer: {message}")]
    Remote {
        /// The store directory.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The directory holds something that is not a Plait journal, or one of
    /// an unknown format version.
    #[error(
        "`{path}` is not a Plait store of a format this version understands ({found}); nothing was changed"
    )]
    Foreign {
        /// The store directory.
        path: std::path::PathBuf,
        /// What was found instead.
        found: String,
    },
    /// The database failed.
    #[error("the store at `{path}` failed")]
    Database {
        /// The store directory.
        path: std::path::PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The write-ahead log of `durable` mode failed, or is damaged.
    #[error("the store at `{path}` failed")]
    Log {
        /// The store directory.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: WalError,
    },
    /// A record could not be decoded (the store is damaged).
    #[error("a record under `{key}` in the store is damaged")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// An idempotency key is already taken (by a run started at the same
    /// moment); read it with [`RunStore::idempotency`].
    #[error("idempotency key `{0}` is already taken")]
    KeyTaken(String),
    /// Another executor holds the run's lease.
    #[error(
        "run `{run_id}` is being executed by another host (lease held by `{holder}` until {until_ms} ms since the epoch); \
         wait for it to finish, or for its lease to lapse if that host died"
    )]
    LeaseHeld {
        /// The run.
        run_id: String,
        /// Who holds it.
        holder: String,
        /// When it lapses.
        until_ms: u64,
    },
    /// A commit by a writer that no longer holds the run's lease.
    #[error(
        "the lease on run `{0}` was lost (another host took the run over); nothing was written"
    )]
    Fenced(String),
    /// No run has this id.
    #[error("no run with id `{0}` in this store; `plait runs list` shows the runs it holds")]
    UnknownRun(String),
}

/// The lease a commit is made under: the run, and the holder and token
/// of the lease the writer took. A writer whose lease lapsed and was taken
/// over carries an older token, so its late commit is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    /// The run the lease is on.
    pub run_id: &'a str,
    /// The holder the writer took it as.
    pub holder: &'a str,
    /// The token it got.
    pub token: u64,
}

impl<'a> Fence<'a> {
    /// The fence of `lease` on run `run_id`.
    #[must_use]
    pub fn of(run_id: &'a str, lease: &'a Lease) -> Fence<'a> {
        Fence {
            run_id,
            holder: &lease.holder,
            token: lease.token,
        }
    }
}

/// One atomic change to the journal.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// The run record to write.
    pub run: Option<&'a RunRecord>,
    /// Step records to write.
    pub steps: Vec<&'a StepRecord>,
    /// New blob contents, by digest. Blobs are content-addressed, so writing
    /// one that exists is a no-op.
    pub blobs: Vec<(&'a str, &'a [u8])>,
    /// The logs of one attempt.
    pub logs: Option<LogsEntry<'a>>,
    /// A signal delivered to a `wait` step.
    pub signal: Option<&'a Signal>,
    /// An idempotency key to claim for a new run; the commit fails with
    /// [`StoreError::KeyTaken`] (and writes nothing) if it is taken.
    pub idempotency: Option<(&'a str, &'a IdempotencyRecord)>,
    /// A step output to keep in the cross-run step cache, by key.
    pub cache: Option<(&'a str, &'a CacheEntry)>,
    /// The lease the writer holds. The commit fails with
    /// [`StoreError::Fenced`] (and writes nothing) unless that lease is
    /// still the run's.
    pub fence: Option<Fence<'a>>,
    /// An audit log entry, written with the rest.
    pub audit: Option<&'a AuditRecord>,
}

/// The logs of one attempt of one step (or of one item of a fan-out).
#[derive(Debug, Clone, Copy)]
pub struct LogsEntry<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The step's index in the definition.
    pub index: u32,
    /// The item of a `for_each` step.
    pub item: Option<u32>,
    /// The attempt number.
    pub attempt: u32,
    /// What it logged.
    pub logs: &'a StepLogs,
}

/// The logs of one attempt of one step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttemptLogs {
    /// The attempt number.
    pub attempt: u32,
    /// The item of a `for_each` step the attempt ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// What the attempt logged and printed.
    #[serde(flatten)]
    pub logs: StepLogs,
}

/// Commits `commit` and waits, without holding the thread, until it is
/// durable: [`RunStore::commit`] for async callers, whose task waits for
/// another caller's group sync rather than blocking a runtime worker.
pub async fn commit_async(store: &dyn RunStore, commit: Commit<'_>) -> Result<(), StoreError> {
    match store.commit_pending(commit)? {
        Some(ticket) => durable(store, ticket).await,
        None => Ok(()),
    }
}

/// Waits until a ticket of [`RunStore::commit_pending`] is durable.
pub async fn durable(store: &dyn RunStore, ticket: u64) -> Result<(), StoreError> {
    std::future::poll_fn(|cx| store.poll_durable(ticket, cx)).await
}

/// Storage for runs, behind which another backend (Postgres) can sit
/// without the executor changing.
pub trait RunStore: Send + Sync {
    /// Applies `commit` atomically and durably.
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError>;
    /// Applies `commit` atomically, as [`RunStore::commit`] does, and
    /// returns before it is durable: a ticket to wait for with
    /// [`RunStore::poll_durable`] (or [`commit_async`]), or `None` when
    /// the commit is as durable as it will get already. Readers see the
    /// commit at once; nothing may act on it (start the next step, answer
    /// a caller) before the ticket is durable. Stores without a cheaper
    /// path commit in full here.
    fn commit_pending(&self, commit: Commit<'_>) -> Result<Option<u64>, StoreError> {
        self.commit(commit).map(|()| None)
    }
    /// Whether a ticket of [`RunStore::commit_pending`] is on disk: `Ready`
    /// once it is (the store may run the sync on the calling thread to get
    /// there), `Pending` while another caller's sync that will cover it
    /// runs, with `cx`'s waker woken when that sync ends. Tickets are
    /// ordered: one durable means every earlier one is.
    fn poll_durable(
        &self,
        ticket: u64,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), StoreError>> {
        let _ = (ticket, cx);
        std::task::Poll::Ready(Ok(()))
    }
    /// The run with this id.
    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// The run's steps, in definition order.
    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError>;
    /// Every run, oldest first.
    fn runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// Up to `limit` runs whose id starts with `prefix`, newest first:
    /// what a shortened run id may mean.
    fn runs_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_page(None, limit, &|run| run.id.starts_with(prefix))
    }
    /// A blob's bytes by digest.
    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether the blob store holds `digest`.
    fn has_blob(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.blob(digest)?.is_some())
    }
    /// Every attempt's logs of one step.
    fn logs(&self, run_id: &str, step_index: u32) -> Result<Vec<AttemptLogs>, StoreError>;
    /// The signal delivered to step `step_id` of a run, if any.
    fn signal(&self, run_id: &str, step_id: &str) -> Result<Option<Signal>, StoreError>;
    /// The request to cancel run `run_id`, if one was made.
    fn cancel_request(&self, run_id: &str) -> Result<Option<CancelRequest>, StoreError> {
        Ok(self
            .signal(run_id, Signal::CANCEL)?
            .as_ref()
            .and_then(CancelRequest::from_signal))
    }
    /// Takes the lease on run `run_id` for `holder` for `ttl_ms`, with a
    /// token above every earlier one. Fails with [`StoreError::LeaseHeld`]
    /// while another holder's lease has not lapsed.
    fn acquire_lease(&self, run_id: &str, holder: &str, ttl_ms: u64) -> Result<Lease, StoreError>;
    /// Extends a held lease; [`StoreError::Fenced`] if it was lost.
    fn renew_lease(&self, run_id: &str, lease: &Lease, ttl_ms: u64) -> Result<Lease, StoreError>;
    /// Gives a held lease up (a lost one is left alone).
    fn release_lease(&self, run_id: &str, lease: &Lease) -> Result<(), StoreError>;
    /// The run's lease as stored, to tell a run a live host executes from
    /// one whose host is gone. `None` when the run never had one, or when
    /// the backend cannot say.
    fn lease(&self, run_id: &str) -> Result<Option<Lease>, StoreError> {
        let _ = run_id;
        Ok(None)
    }
    /// The run an idempotency key started, if any.
    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// A step cache entry by key.
    fn cached(&self, key: &str) -> Result<Option<CacheEntry>, StoreError>;
    /// Moves signals other processes left for this store into it (see
    /// [`post_signal`]) and returns the ones that were new. A store that
    /// cannot be shared between processes has nothing to collect.
    fn collect_inbox(&self) -> Result<Vec<Signal>, StoreError> {
        Ok(Vec::new())
    }
    /// The audit log, oldest first.
    fn audit_log(&self) -> Result<Vec<AuditRecord>, StoreError>;
    /// Appends `event` to run `run_id`'s event log and returns its
    /// sequence number. Durable with the next commit (or when the store
    /// closes): an event never costs a sync of its own, and a crash can
    /// lose only events, never the run state they report.
    fn append_event(&self, run_id: &str, event: &serde_json::Value) -> Result<u64, StoreError>;
    /// Writes a webhook delivery (new, or with another attempt), durably.
    fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError>;
    /// Run `run_id`'s webhook deliveries, oldest first.
    fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Every delivery still `pending`.
    fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError>;
    /// Run `run_id`'s events after sequence number `after`, oldest first.
    fn events(&self, run_id: &str, after: Option<u64>) -> Result<Vec<EventRecord>, StoreError>;
    /// Up to `limit` runs that `keep` accepts, created before run `before`
    /// (all runs when `None`), newest first: a page of a run listing.
    fn runs_page(
        &self,
        before: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&RunRecord) -> bool,
    ) -> Result<Vec<RunRecord>, StoreError>;
    /// A trigger's mark under `key` (`cron/NAME`, `watch/NAME/FILE/DIGEST`).
    /// Marks are not runs: garbage collection leaves them, so a trigger
    /// does not start again what it started before the run was collected.
    fn trigger_mark(&self, key: &str) -> Result<Option<TriggerMark>, StoreError>;
    /// Writes a trigger's mark, durably.
    fn put_trigger_mark(&self, key: &str, mark: &TriggerMark) -> Result<(), StoreError>;
    /// The store's size on disk, when the backend knows it.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}
