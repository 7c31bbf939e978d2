//! The embedded run journal on sled.
//!
//! Trees: `runs` (run id → [`RunRecord`]), `steps` (`<run id>/<index>` →
//! [`StepRecord`]), `blobs` (digest → bytes), `logs`
//! (`<run id>/<index>/<attempt>`, or `<run id>/<index>/item<item>/<attempt>`
//! for an item of a fan-out → [`AttemptLogs`]), `signals` (`<run id>/<step
//! id>` → [`Signal`]) and `meta` (the format marker). Signals sent while
//! another process holds the store wait as files in its `inbox/` folder
//! until that process collects them. Records are JSON. Indexes are zero-padded so that a prefix scan
//! returns steps and attempts in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    Abandoned, AttemptLogs, AuditRecord, CacheEntry, Commit, Delivery, EventRecord,
    IdempotencyRecord, Lease, RunRecord, RunStore, Signal, StepRecord, StoreError, TriggerMark,
};

/// The value of `meta/format`; bump it when records change incompatibly.
const FORMAT: &str = "plait-journal/1";

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk before `commit` returns: flushed by sled and
    /// then `fdatasync`ed (log, blob files, their folder), so a step's
    /// output survives a power cut before the next step starts. Concurrent
    /// commits share syncs (group commit, see `sync.rs`). The default.
    #[default]
    Durable,
    /// Commits are flushed and synced together in the background every
    /// [`BATCH_INTERVAL_MS`]: fewer syncs, but a crash of the process or
    /// the machine can lose up to that window of commits (sled keeps
    /// unflushed writes in its own buffers). A lost commit means a step
    /// runs again on resume, never that a later step sees an output that is
    /// gone: sled's log is ordered, so a crash loses a suffix of commits.
    Batched,
}

/// sled's page cache. Its default (1 GiB) let a store holding a million runs
/// grow the host past 2 GiB of RSS in the benchmark; the executor reads
/// back little beyond the run in progress, so a small cache costs nothing.
const CACHE_BYTES: u64 = 64 << 20;

/// The flush interval of [`Durability::Batched`], in milliseconds.
pub const BATCH_INTERVAL_MS: u64 = 50;

/// A [`RunStore`] in an embedded sled database.
///
/// Commits are serialized by `commit_lock`, and every flush (a durable
/// commit's group sync, or batched mode's thread) runs under that same
/// lock rather than on sled's background flusher. The benchmark found why: with sled 0.34, a
/// transaction that must wait for log space while sled's flusher waits for
/// the transaction's lock deadlocks the store (64 concurrent runs in batched
/// mode hung). Flushes and transactions never overlap here.
pub struct SledStore {
    path: PathBuf,
    durability: Durability,
    commit_lock: Arc<Mutex<()>>,
    /// When the write in progress started (ms since the epoch), 0 when
    /// none is: what a watchdog reads to tell a stuck store from a busy one.
    writing_since_ms: Arc<std::sync::atomic::AtomicU64>,
    // Held for its Drop: stops the flush thread after a last flush.
    _flusher: Option<Flusher>,
    /// The files a sync must reach.
    disk: Arc<DiskFiles>,
    /// Durable mode's group commit.
    group: GroupSync,
    db: sled::Db,
    runs: sled::Tree,
    steps: sled::Tree,
    blobs: sled::Tree,
    logs: sled::Tree,
    signals: sled::Tree,
    idempotency: sled::Tree,
    cache: sled::Tree,
    leases: sled::Tree,
    audit: sled::Tree,
    /// Each run's events, keyed `RUN_ID/SEQ` (20 digits).
    events: sled::Tree,
    /// Webhook deliveries, keyed `RUN_ID/MESSAGE_ID`.
    webhooks: sled::Tree,
    /// Trigger marks (see [`TriggerMark`]).
    triggers: sled::Tree,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // sled flushes when its trees are dropped, after this body, and
        // that flush never returns if the disk refuses the write: mark it
        // as a write in progress (never cleared) so a watchdog can tell.
        self.writing_since_ms
            .store(crate::clock::now_ms().max(1), Ordering::Release);
    }
}

/// Marks a write in progress for as long as it lives.
struct WriteMark<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> WriteMark<'a> {
    fn new(since: &'a std::sync::atomic::AtomicU64) -> WriteMark<'a> {
        since.store(crate::clock::now_ms().max(1), Ordering::Release);
        WriteMark(since)
    }
}

impl Drop for WriteMark<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// See [`SledStore::write_watch`].
#[derive(Clone)]
pub struct WriteWatch(Arc<std::sync::atomic::AtomicU64>);

impl WriteWatch {
    /// How long the write in progress has been going, if one is.
    pub fn stuck_for(&self) -> Option<std::time::Duration> {
        let since = self.0.load(Ordering::Acquire);
        (since != 0)
            .then(|| std::time::Duration::from_millis(crate::clock::now_ms().saturating_sub(since)))
    }
}

/// Why a commit transaction aborted.
enum Abort {
    KeyTaken,
    Fenced,
}

impl SledStore {
    /// Opens (creating if needed) the journal in directory `path`, in
    /// [`Durability::Durable`] mode.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(path, Durability::Durable)
    }

    /// Opens the journal with the given durability.
    pub fn open_with(path: &Path, durability: Durability) -> Result<SledStore, StoreError> {
        let database = |source| StoreError::Database {
            path: path.to_owned(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()
            .map_err(|error| match error {
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: path.to_owned(),
                    }
                }
                other => database(other),
            })?;
        let meta = db.open_tree("meta").map_err(database)?;
        match meta.get("format").map_err(database)? {
            Some(format) if format.as_ref() == FORMAT.as_bytes() => {}
            Some(format) => {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                    found: format!("format `{}`", String::from_utf8_lossy(&format)),
                });
            }
            None => {
                // A new database has only sled's default tree; anything else
                // means somebody else's sled database.
                let names = db.tree_names();
                let others: Vec<String> = names
                    .iter()
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .filter(|name| name != "__sled__default" && name != "meta")
                    .collect();
                if !others.is_empty() || !db.is_empty() {
                    return Err(StoreError::Foreign {
                        path: path.to_owned(),
                        found: format!("a sled database with trees {}", others.join(", ")),
                    });
                }
                meta.insert("format", FORMAT).map_err(database)?;
                db.flush().map_err(database)?;
            }
        }
        let disk = Arc::new(DiskFiles::open(path).map_err(|error| database(error.into()))?);
        disk.sync_log().map_err(|error| database(error.into()))?;
        let commit_lock = Arc::new(Mutex::new(()));
        // sled lets one process open the store, so every lease in it was
        // held by a process that is gone: they lapse now, and this host
        // takes those runs over at once rather than after a TTL. Tokens are
        // kept, so they keep increasing; so is whether each was released,
        // which tells a run whose host died from one set aside.
        let leases = db.open_tree("leases").map_err(database)?;
        for entry in leases.iter() {
            let (key, value) = entry.map_err(database)?;
            if let Ok(mut lease) = serde_json::from_slice::<Lease>(&value)
                && lease.expires_at_ms != 0
            {
                lease.expires_at_ms = 0;
                leases.insert(key, encode(&lease)).map_err(database)?;
            }
        }
        Ok(SledStore {
            leases,
            runs: db.open_tree("runs").map_err(database)?,
            steps: db.open_tree("steps").map_err(database)?,
            blobs: db.open_tree("blobs").map_err(database)?,
            logs: db.open_tree("logs").map_err(database)?,
            signals: db.open_tree("signals").map_err(database)?,
            idempotency: db.open_tree("idempotency").map_err(database)?,
            cache: db.open_tree("cache").map_err(database)?,
            audit: db.open_tree("audit").map_err(database)?,
            events: db.open_tree("events").map_err(database)?,
            webhooks: db.open_tree("webhooks").map_err(database)?,
            triggers: db.open_tree("triggers").map_err(database)?,
            path: path.to_owned(),
            durability,
            _flusher: (durability == Durability::Batched)
                .then(|| Flusher::spawn(db.clone(), commit_lock.clone(), disk.clone())),
            disk,
            group: GroupSync::new(),
            commit_lock,
            writing_since_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            db,
        })
    }

    /// Every cache entry with its key.
    pub(crate) fn cache_entries(&self) -> Result<Vec<(String, CacheEntry)>, StoreError> {
        self.cache
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    decode(&key, &value)?,
                ))
            })
            .collect()
    }

    /// Every blob's digest and size.
    pub(crate) fn blob_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.blobs
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    value.len() as u64,
                ))
            })
            .collect()
    }

    /// Removes a run and everything recorded under it: steps, logs,
    /// signals, its lease and the idempotency keys that name it.
    pub(crate) fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = format!("{run_id}/");
        for tree in [
            &self.steps,
            &self.logs,
            &self.signals,
            &self.events,
            &self.webhooks,
        ] {
            for key in tree.scan_prefix(&prefix).keys() {
                let key = key.map_err(|error| self.database(error))?;
                tree.remove(key).map_err(|error| self.database(error))?;
            }
        }
        for entry in self.idempotency.iter() {
            let (key, value) = entry.map_err(|error| self.database(error))?;
            if decode::<IdempotencyRecord>(&key, &value)?.run_id == run_id {
                self.idempotency
                    .remove(key)
                    .map_err(|error| self.database(error))?;
            }
        }
        self.leases
            .remove(run_id)
            .map_err(|error| self.database(error))?;
        // The run record last: an interrupted collection leaves a run whose
        // leftovers the next one finds again.
        self.runs
            .remove(run_id)
            .map_err(|error| self.database(error))?;
        Ok(())
    }

    /// Removes cache entries.
    pub(crate) fn delete_cache_entries(&self, keys: &[String]) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            self.cache
                .remove(key)
                .map_err(|error| self.database(error))?;
        }
        Ok(())
    }

    /// Removes blobs.
    pub(crate) fn delete_blobs(&self, digests: &[String]) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        for digest in digests {
            self.blobs
                .remove(digest)
                .map_err(|error| self.database(error))?;
        }
        Ok(())
    }

    /// How long the write in progress has been going, if one is. sled does
    /// not return from a write that the disk refuses (full, or past a file
    /// size limit): a watchdog uses this to stop the process with a clear
    /// error instead of hanging. The journal stays sound either way.
    pub fn stuck_for(&self) -> Option<std::time::Duration> {
        let since = self.writing_since_ms.load(Ordering::Acquire);
        (since != 0)
            .then(|| std::time::Duration::from_millis(crate::clock::now_ms().saturating_sub(since)))
    }

    /// A handle to [`SledStore::stuck_for`] that outlives borrows of the
    /// store, for a watchdog thread.
    pub fn write_watch(&self) -> WriteWatch {
        WriteWatch(self.writing_since_ms.clone())
    }

    /// A value of the `meta` tree.
    pub(crate) fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let meta = self
            .db
            .open_tree("meta")
            .map_err(|error| self.database(error))?;
        Ok(meta
            .get(key)
            .map_err(|error| self.database(error))?
            .map(|value| value.to_vec()))
    }

    /// Sets a value of the `meta` tree.
    pub(crate) fn meta_set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let meta = self
            .db
            .open_tree("meta")
            .map_err(|error| self.database(error))?;
        meta.insert(key, value)
            .map_err(|error| self.database(error))?;
        Ok(())
    }

    /// Flushes and syncs everything to disk, whatever the durability.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.sync_to_disk().map(|_| ())
    }

    /// Returns once the write that took `ticket` is on disk, sharing the
    /// sync with every commit waiting alongside it.
    pub(super) fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        self.group.wait(ticket, || self.sync_to_disk())
    }

    /// How many syncs durable commits have run: fewer than commits when
    /// they group.
    pub fn syncs(&self) -> u64 {
        self.group.syncs()
    }

    /// One sync: sled's flush and the new blob files under the commit lock
    /// (no transaction may run during sled's flush, and no blob is then
    /// half-written), then `fdatasync` of the log outside it, so commits
    /// apply meanwhile. Returns the last ticket it covers.
    fn sync_to_disk(&self) -> Result<u64, StoreError> {
        let io = |error: std::io::Error| self.database(error.into());
        let covered = {
            let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
            let _writing = WriteMark::new(&self.writing_since_ms);
            let covered = self.group.issued();
            self.db.flush().map_err(|error| self.database(error))?;
            self.disk.sync_blobs().map_err(io)?;
            covered
        };
        let _writing = WriteMark::new(&self.writing_since_ms);
        self.disk.sync_log().map_err(io)?;
        Ok(covered)
    }

    fn database(&self, source: sled::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }
}

/// The batched-mode flush thread: flushes and syncs every
/// [`BATCH_INTERVAL_MS`] under the commit lock, and once more when the
/// store is dropped.
struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn spawn(db: sled::Db, lock: Arc<Mutex<()>>, disk: Arc<DiskFiles>) -> Flusher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plait-journal-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(BATCH_INTERVAL_MS));
                    let stopping = flag.load(Ordering::Acquire);
                    let flushed = {
                        let _serialized = lock.lock().unwrap_or_else(|p| p.into_inner());
                        db.flush()
                            .map(|_| ())
                            .and_then(|()| disk.sync_blobs().map_err(sled::Error::from))
                    };
                    if let Err(error) = flushed.and_then(|()| disk.sync_log().map_err(sled::Error::from)) {
                        tracing::error!(target: "plait::store::sled_store", error = %error, "flushing the run journal failed");
                    }
                    if stopping {
                        break;
                    }
                }
            })
            .expect("spawning the journal flush thread");
        Flusher {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

mod inbox;
mod journal;
mod keys;
mod sync;
#[cfg(test)]
mod tests;

pub use inbox::{inbox_dir, post_signal};
use keys::{decode, encode, logs_key, signal_key, step_key};
use sync::{DiskFiles, GroupSync};
