//! The embedded run journal on sled.
//!
//! Trees: `runs` (run id → [`RunRecord`]), `steps` (`<run id>/<index>` →
//! [`StepRecord`]), `blobs` (digest → bytes), `logs`
//! (`<run id>/<index>/<attempt>`, or `<run id>/<index>/item<item>/<attempt>`
//! for an item of a fan-out → [`AttemptLogs`]), `signals` (`<run id>/<step
//! id>` → [`Signal`]) and `meta` (the format marker). Signals sent while
//! another process holds the store wait as files in its `inbox/` folder
//! until that process collects them. In durable mode every write is also
//! logged in `wal/` (see `wal.rs`), which is what a commit waits for.
//! Records are JSON. Indexes are zero-padded so that a prefix scan
//! returns steps and attempts in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Abandoned, AttemptLogs, AuditRecord, CacheEntry, Commit, Delivery, EventRecord,
    IdempotencyRecord, Lease, RunRecord, RunStore, Signal, StepRecord, StoreError, TriggerMark,
};

/// The value of `meta/format`; bump it when records change incompatibly.
/// Format 2 added the write-ahead log (`wal.rs`): a Plait that reads only
/// format 1 would open the store without replaying it, so it is refused.
const FORMAT: &str = "plait-journal/2";

/// The format before the write-ahead log, which this version upgrades in
/// place (nothing in sled's trees changed).
const FORMAT_1: &str = "plait-journal/1";

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk before `commit` returns: its writes are
    /// appended to the store's write-ahead log and `fdatasync`ed (see
    /// `wal.rs`), so a step's output survives a power cut before the next
    /// step starts. Concurrent commits share syncs (group commit, see
    /// `sync.rs`); sled's own files are synced at checkpoints. The default.
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

/// A [`RunStore`] in an embedded sled database, with a write-ahead log of
/// its own in durable mode (`wal.rs`).
///
/// Writes are serialized by `commit_lock`, and every sled flush (a
/// checkpoint, or batched mode's thread) runs under that same lock rather
/// than on sled's background flusher. The benchmark found why: with sled 0.34, a
/// transaction that must wait for log space while sled's flusher waits for
/// the transaction's lock deadlocked the store (64 concurrent runs in batched
/// mode hung). The journal no longer uses sled transactions at all
/// (`journal.rs` says why), and a flush still never runs between two writes
/// of one commit.
pub struct SledStore {
    path: PathBuf,
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
    /// Durable mode's write-ahead log; `None` in batched mode.
    wal: Option<Wal>,
    db: sled::Db,
    /// The format marker and the last logged frame sled's files hold.
    meta: sled::Tree,
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
        // A last checkpoint, so that the next open has no log to replay;
        // if it fails the log stays, and the next open replays it.
        if self.wal.is_some()
            && let Err(error) = self.checkpoint(true)
        {
            tracing::warn!(target: "plait::store::sled_store", %error, "the journal's last checkpoint failed; its write-ahead log is replayed when it is opened again");
        }
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
            Some(format) if format.as_ref() == FORMAT_1.as_bytes() => {
                meta.insert("format", FORMAT).map_err(database)?;
                db.flush().map_err(database)?;
            }
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
        let log_error = |source| StoreError::Log {
            path: path.to_owned(),
            source,
        };
        let seq = replay_log(&db, &meta, path).map_err(|error| match error {
            Replay::Log(error) => log_error(error),
            Replay::Database(error) => database(error),
        })?;
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
        // What the replay and the lapsed leases changed reaches sled's own
        // files before a new log starts and the old ones go.
        let wal = match durability {
            Durability::Durable => {
                db.flush().map_err(database)?;
                disk.sync_blobs().map_err(|error| database(error.into()))?;
                disk.sync_log().map_err(|error| database(error.into()))?;
                let wal =
                    Wal::create(&wal::dir(path), seq).map_err(|error| log_error(error.into()))?;
                wal.restart(false)
                    .map_err(|error| log_error(error.into()))?;
                Some(wal)
            }
            Durability::Batched => {
                if !wal::segments(&wal::dir(path))
                    .map_err(|error| log_error(error.into()))?
                    .is_empty()
                {
                    db.flush().map_err(database)?;
                    disk.sync_blobs().map_err(|error| database(error.into()))?;
                    disk.sync_log().map_err(|error| database(error.into()))?;
                    std::fs::remove_dir_all(wal::dir(path))
                        .map_err(|error| log_error(error.into()))?;
                }
                None
            }
        };
        Ok(SledStore {
            wal,
            meta,
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
        let mut writes = Writes::default();
        let prefix = format!("{run_id}/");
        for (name, tree) in [
            ("steps", &self.steps),
            ("logs", &self.logs),
            ("signals", &self.signals),
            ("events", &self.events),
            ("webhooks", &self.webhooks),
        ] {
            for key in tree.scan_prefix(&prefix).keys() {
                let key = key.map_err(|error| self.database(error))?;
                tree.remove(&key).map_err(|error| self.database(error))?;
                writes.remove(name, &key);
            }
        }
        for entry in self.idempotency.iter() {
            let (key, value) = entry.map_err(|error| self.database(error))?;
            if decode::<IdempotencyRecord>(&key, &value)?.run_id == run_id {
                self.idempotency
                    .remove(&key)
                    .map_err(|error| self.database(error))?;
                writes.remove("idempotency", &key);
            }
        }
        self.leases
            .remove(run_id)
            .map_err(|error| self.database(error))?;
        writes.remove("leases", run_id.as_bytes());
        // The run record last: an interrupted collection leaves a run whose
        // leftovers the next one finds again.
        self.runs
            .remove(run_id)
            .map_err(|error| self.database(error))?;
        writes.remove("runs", run_id.as_bytes());
        self.log(&writes, false);
        Ok(())
    }

    /// Removes cache entries.
    pub(crate) fn delete_cache_entries(&self, keys: &[String]) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut writes = Writes::default();
        for key in keys {
            self.cache
                .remove(key)
                .map_err(|error| self.database(error))?;
            writes.remove("cache", key.as_bytes());
        }
        self.log(&writes, false);
        Ok(())
    }

    /// Removes blobs.
    pub(crate) fn delete_blobs(&self, digests: &[String]) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut writes = Writes::default();
        for digest in digests {
            self.blobs
                .remove(digest)
                .map_err(|error| self.database(error))?;
            writes.remove("blobs", digest.as_bytes());
        }
        self.log(&writes, false);
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
        Ok(self
            .meta
            .get(key)
            .map_err(|error| self.database(error))?
            .map(|value| value.to_vec()))
    }

    /// Sets a value of the `meta` tree.
    pub(crate) fn meta_set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.meta
            .insert(key, value)
            .map_err(|error| self.database(error))?;
        let mut writes = Writes::default();
        writes.put("meta", key.as_bytes(), value);
        self.log(&writes, false);
        Ok(())
    }

    /// Flushes and syncs everything to disk, whatever the durability: in
    /// durable mode a checkpoint.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self.wal {
            Some(_) => self.checkpoint(false).map(|_| ()),
            None => self.sync_to_disk().map(|_| ()),
        }
    }

    /// Logs `writes`, just applied to sled under the commit lock (which the
    /// caller holds), as the next frame. With `durable`, returns the ticket
    /// to wait on; otherwise the frame rides on the next sync. Does nothing
    /// in batched mode.
    fn log(&self, writes: &Writes, durable: bool) -> Option<u64> {
        let wal = self.wal.as_ref()?;
        if writes.is_empty() && !durable {
            return None;
        }
        let mut ticket = None;
        wal.append(writes, || {
            if durable {
                ticket = Some(self.group.ticket());
            }
        });
        ticket
    }

    /// sled's files brought up to every write applied so far (flush, then
    /// `fdatasync` of its log, blob files and their folder, under the
    /// commit lock so that no commit is half applied when sled flushes), then
    /// a fresh write-ahead log (none with `last`). Returns the last ticket
    /// it covers: all of them.
    fn checkpoint(&self, last: bool) -> Result<u64, StoreError> {
        let io = |error: std::io::Error| self.database(error.into());
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        let covered = self.group.issued();
        self.db.flush().map_err(|error| self.database(error))?;
        self.disk.sync_blobs().map_err(io)?;
        self.disk.sync_log().map_err(io)?;
        if let Some(wal) = &self.wal {
            wal.restart(last)
                .map_err(|error| self.log_error(error.into()))?;
        }
        Ok(covered)
    }

    fn log_error(&self, source: WalError) -> StoreError {
        StoreError::Log {
            path: self.path.clone(),
            source,
        }
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

    /// One sync. Durable mode: the write-ahead log's waiting frames written
    /// and `fdatasync`ed, and a checkpoint when the log has grown past
    /// [`wal::CHECKPOINT_BYTES`]. Batched mode's flush: sled's flush and
    /// the new blob files under the commit lock (no commit is half applied
    /// during sled's flush, and no blob is then half-written), then
    /// `fdatasync` of sled's log outside it, so commits apply meanwhile.
    /// Returns the last ticket it covers.
    fn sync_to_disk(&self) -> Result<u64, StoreError> {
        if let Some(wal) = &self.wal {
            let _writing = WriteMark::new(&self.writing_since_ms);
            let (covered, full) = wal
                .sync(|| self.group.issued())
                .map_err(|error| self.log_error(error))?;
            return if full {
                self.checkpoint(false)
            } else {
                Ok(covered)
            };
        }
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

/// Why the log could not be replayed.
enum Replay {
    Log(WalError),
    Database(sled::Error),
}

impl From<std::io::Error> for Replay {
    fn from(error: std::io::Error) -> Replay {
        Replay::Log(error.into())
    }
}

/// Applies the frames of the write-ahead log that sled's own files do not
/// hold yet, in order (see `wal.rs`), and returns the last sequence number
/// the log or sled holds, after which new frames are numbered.
fn replay_log(db: &sled::Db, meta: &sled::Tree, path: &Path) -> Result<u64, Replay> {
    let applied = match meta.get(wal::APPLIED_KEY).map_err(Replay::Database)? {
        Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8])),
        None => 0,
    };
    let mut last = applied;
    let mut trees: std::collections::HashMap<String, sled::Tree> = Default::default();
    let mut tree = |name: &str| -> std::io::Result<sled::Tree> {
        if let Some(tree) = trees.get(name) {
            return Ok(tree.clone());
        }
        let tree = db.open_tree(name).map_err(std::io::Error::other)?;
        trees.insert(name.to_owned(), tree.clone());
        Ok(tree)
    };
    for file in wal::segments(&wal::dir(path))? {
        let bytes = std::fs::read(&file)?;
        let replayed = wal::replay(&file, &bytes, applied, |write| {
            match write {
                wal::Write::Put {
                    tree: name,
                    key,
                    value,
                } => {
                    tree(name)?
                        .insert(key, value)
                        .map_err(std::io::Error::other)?;
                }
                wal::Write::Remove { tree: name, key } => {
                    tree(name)?.remove(key).map_err(std::io::Error::other)?;
                }
            }
            Ok(())
        })
        .map_err(Replay::Log)?;
        if replayed.frames > 0 || replayed.torn_bytes > 0 {
            tracing::info!(target: "plait::store::sled_store", file = %file.display(), frames = replayed.frames, skipped = replayed.skipped, torn_bytes = replayed.torn_bytes, "replayed the journal's write-ahead log");
        }
        last = last.max(replayed.last_seq);
    }
    if last > applied {
        meta.insert(wal::APPLIED_KEY, &last.to_be_bytes())
            .map_err(Replay::Database)?;
    }
    Ok(last)
}

mod inbox;
mod journal;
mod keys;
mod sync;
#[cfg(test)]
mod tests;
mod wal;

pub use inbox::{inbox_dir, post_signal};
use keys::{decode, encode, logs_key, signal_key, step_key};
use sync::{DiskFiles, GroupSync};
pub use wal::WalError;
use wal::{Wal, Writes};
