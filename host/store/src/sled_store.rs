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
    /// Every commit is flushed before `commit` returns: a step's output is on
    /// disk before the next step starts. The default.
    #[default]
    Durable,
    /// Commits are flushed together in the background every
    /// [`BATCH_INTERVAL_MS`]: fewer fsyncs, but a crash of the process or
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
/// Commits are serialized by `commit_lock`, and in batched mode the flush
/// runs on Plait's own thread under that same lock rather than on sled's
/// background flusher. The benchmark found why: with sled 0.34, a
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
                .then(|| Flusher::spawn(db.clone(), commit_lock.clone())),
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

    /// Flushes everything to disk.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        self.db.flush().map_err(|error| self.database(error))?;
        Ok(())
    }

    fn database(&self, source: sled::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }
}

/// The batched-mode flush thread: flushes every [`BATCH_INTERVAL_MS`] under
/// the commit lock, and once more when the store is dropped.
struct Flusher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn spawn(db: sled::Db, lock: Arc<Mutex<()>>) -> Flusher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plait-journal-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(BATCH_INTERVAL_MS));
                    let stopping = flag.load(Ordering::Acquire);
                    {
                        let _serialized = lock.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(error) = db.flush() {
                            tracing::error!(target: "plait::store::sled_store", error = %error, "flushing the run journal failed");
                        }
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

fn step_key(run_id: &str, index: u32) -> String {
    format!("{run_id}/{index:08}")
}

fn logs_key(run_id: &str, index: u32, item: Option<u32>, attempt: u32) -> String {
    match item {
        None => format!("{run_id}/{index:08}/{attempt:08}"),
        Some(item) => format!("{run_id}/{index:08}/item{item:08}/{attempt:08}"),
    }
}

fn signal_key(run_id: &str, step_id: &str) -> String {
    format!("{run_id}/{step_id}")
}

/// The folder of `store` where signals wait while another process holds it.
pub fn inbox_dir(store: &Path) -> PathBuf {
    store.join("inbox")
}

/// Leaves `signal` in the inbox of the store at `store`, for the process
/// that holds it to collect. Written to a temporary name and renamed, so
/// the collector never reads half a file.
///
/// # Errors
/// When the inbox cannot be written.
pub fn post_signal(store: &Path, signal: &Signal) -> std::io::Result<PathBuf> {
    let inbox = inbox_dir(store);
    std::fs::create_dir_all(&inbox)?;
    let name = uuid::Uuid::now_v7().to_string();
    let partial = inbox.join(format!(".{name}.partial"));
    let path = inbox.join(format!("{name}.json"));
    std::fs::write(&partial, encode(signal))?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, JSON values); serializing
    // them cannot fail.
    serde_json::to_vec(value).expect("journal records serialize to JSON")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

impl RunStore for SledStore {
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        // Encode outside the transaction closure, which sled may re-run.
        let run = commit.run.map(|run| (run.id.clone(), encode(run)));
        let steps: Vec<(String, Vec<u8>)> = commit
            .steps
            .iter()
            .map(|step| (step_key(&step.run_id, step.index), encode(step)))
            .collect();
        let logs = commit.logs.map(|entry| {
            let record = AttemptLogs {
                attempt: entry.attempt,
                item: entry.item,
                logs: entry.logs.clone(),
            };
            (
                logs_key(entry.run_id, entry.index, entry.item, entry.attempt),
                encode(&record),
            )
        });
        let signal = commit
            .signal
            .map(|signal| (signal_key(&signal.run_id, &signal.step_id), encode(signal)));
        let idempotency = commit
            .idempotency
            .map(|(key, record)| (key.to_owned(), encode(record)));
        let cached = commit
            .cache
            .map(|(key, entry)| (key.to_owned(), encode(entry)));
        let fence = commit.fence;
        // Keyed by time, then a uuid: oldest first, never two alike.
        let audit = commit.audit.map(|record| {
            let mut key = record.at_ms.to_be_bytes().to_vec();
            key.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
            (key, encode(record))
        });
        let result: Result<(), TransactionError<Abort>> = (
            &self.runs,
            &self.steps,
            &self.blobs,
            &self.logs,
            &self.signals,
            &self.idempotency,
            &self.cache,
            &self.leases,
            &self.audit,
        )
            .transaction(
                |(runs, steps_tree, blobs, logs_tree, signals, keys, cache, leases, audit_tree)| {
                    // First: a lost lease or a taken key aborts the whole
                    // commit.
                    if let Some(fence) = fence {
                        let current = leases
                            .get(fence.run_id.as_bytes())?
                            .and_then(|bytes| serde_json::from_slice::<Lease>(&bytes).ok());
                        if !current.is_some_and(|lease| {
                            lease.holder == fence.holder && lease.token == fence.token
                        }) {
                            return Err(ConflictableTransactionError::Abort(Abort::Fenced));
                        }
                    }
                    if let Some((key, value)) = &idempotency {
                        if keys.get(key.as_bytes())?.is_some() {
                            return Err(ConflictableTransactionError::Abort(Abort::KeyTaken));
                        }
                        keys.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &cached {
                        cache.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &signal {
                        signals.insert(key.as_bytes(), value.as_slice())?;
                    }
                    for (digest, bytes) in &commit.blobs {
                        if blobs.get(digest)?.is_none() {
                            blobs.insert(*digest, *bytes)?;
                        }
                    }
                    for (key, value) in &steps {
                        steps_tree.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &logs {
                        logs_tree.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &run {
                        runs.insert(key.as_bytes(), value.as_slice())?;
                    }
                    if let Some((key, value)) = &audit {
                        audit_tree.insert(key.as_slice(), value.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<Abort>>(())
                },
            );
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(error)) => return Err(self.database(error)),
            Err(TransactionError::Abort(Abort::KeyTaken)) => {
                let key = commit.idempotency.map(|(key, _)| key).unwrap_or_default();
                return Err(StoreError::KeyTaken(key.to_owned()));
            }
            Err(TransactionError::Abort(Abort::Fenced)) => {
                let run_id = fence.map(|fence| fence.run_id).unwrap_or_default();
                return Err(StoreError::Fenced(run_id.to_owned()));
            }
        }
        // Durable before the caller moves on: the next step must never start
        // on an output that a power cut could take back.
        if self.durability == Durability::Durable {
            self.db.flush().map_err(|error| self.database(error))?;
        }
        Ok(())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self
            .runs
            .get(run_id)
            .map_err(|error| self.database(error))?
        {
            Some(bytes) => decode(run_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        self.steps
            .scan_prefix(format!("{run_id}/"))
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.runs
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn audit_log(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn append_event(&self, run_id: &str, event: &serde_json::Value) -> Result<u64, StoreError> {
        // sled's ids increase across restarts, so a reconnecting client's
        // last seen id still orders against new events.
        let seq = self
            .db
            .generate_id()
            .map_err(|error| self.database(error))?;
        let record = EventRecord {
            seq,
            run_id: run_id.to_owned(),
            event: event.clone(),
        };
        self.events
            .insert(format!("{run_id}/{seq:020}"), encode(&record))
            .map_err(|error| self.database(error))?;
        Ok(seq)
    }

    fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let _writing = WriteMark::new(&self.writing_since_ms);
        self.webhooks
            .insert(
                format!("{}/{}", delivery.run_id, delivery.id),
                encode(delivery),
            )
            .map_err(|error| self.database(error))?;
        if self.durability == Durability::Durable {
            self.webhooks
                .flush()
                .map_err(|error| self.database(error))?;
        }
        Ok(())
    }

    fn trigger_mark(&self, key: &str) -> Result<Option<TriggerMark>, StoreError> {
        match self
            .triggers
            .get(key)
            .map_err(|error| self.database(error))?
        {
            Some(value) => decode(key.as_bytes(), &value).map(Some),
            None => Ok(None),
        }
    }

    fn put_trigger_mark(&self, key: &str, mark: &TriggerMark) -> Result<(), StoreError> {
        let _writing = WriteMark::new(&self.writing_since_ms);
        self.triggers
            .insert(key, encode(mark))
            .map_err(|error| self.database(error))?;
        if self.durability == Durability::Durable {
            self.triggers
                .flush()
                .map_err(|error| self.database(error))?;
        }
        Ok(())
    }

    fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let mut deliveries: Vec<Delivery> = self
            .webhooks
            .scan_prefix(format!("{run_id}/"))
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect::<Result<_, _>>()?;
        deliveries.sort_by_key(|delivery| delivery.created_at_ms);
        Ok(deliveries)
    }

    fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.webhooks.iter() {
            let (key, value) = entry.map_err(|error| self.database(error))?;
            let delivery: Delivery = decode(&key, &value)?;
            if delivery.state == "pending" {
                pending.push(delivery);
            }
        }
        Ok(pending)
    }

    fn events(&self, run_id: &str, after: Option<u64>) -> Result<Vec<EventRecord>, StoreError> {
        let start = match after {
            Some(seq) => format!("{run_id}/{:020}", seq.saturating_add(1)),
            None => format!("{run_id}/"),
        };
        let end = format!("{run_id}0"); // '0' follows '/'
        self.events
            .range(start..end)
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }

    fn runs_page(
        &self,
        before: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&RunRecord) -> bool,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let entries = match before {
            Some(id) => self.runs.range(..id.as_bytes().to_vec()),
            None => self.runs.iter(),
        };
        let mut page = Vec::new();
        for entry in entries.rev() {
            if page.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|error| self.database(error))?;
            let run: RunRecord = decode(&key, &value)?;
            if keep(&run) {
                page.push(run);
            }
        }
        Ok(page)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .blobs
            .get(digest)
            .map_err(|error| self.database(error))?
            .map(|bytes| bytes.to_vec()))
    }

    fn acquire_lease(&self, run_id: &str, holder: &str, ttl_ms: u64) -> Result<Lease, StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = WriteMark::new(&self.writing_since_ms);
        let now = crate::clock::now_ms();
        let current: Option<Lease> = match self.leases.get(run_id).map_err(|e| self.database(e))? {
            Some(bytes) => Some(decode(run_id.as_bytes(), &bytes)?),
            None => None,
        };
        if let Some(current) = &current
            && current.holder != holder
            && current.expires_at_ms > now
        {
            return Err(StoreError::LeaseHeld {
                run_id: run_id.to_owned(),
                holder: current.holder.clone(),
                until_ms: current.expires_at_ms,
            });
        }
        // A lease that lapsed without being released (leases written
        // before `renewed_at_ms` was kept say nothing either way).
        let abandoned = current
            .as_ref()
            .filter(|current| {
                !current.released && current.renewed_at_ms > 0 && current.expires_at_ms <= now
            })
            .map(|current| Abandoned {
                holder: current.holder.clone(),
                heard_at_ms: current.renewed_at_ms,
            });
        let lease = Lease {
            holder: holder.to_owned(),
            token: current.map_or(1, |current| current.token + 1),
            expires_at_ms: now + ttl_ms,
            renewed_at_ms: now,
            released: false,
            abandoned: None,
        };
        // Not flushed on its own: the run's next commit flushes it, and a
        // lease lost in a crash lapses when the store is opened again.
        self.leases
            .insert(run_id, encode(&lease))
            .map_err(|e| self.database(e))?;
        Ok(Lease { abandoned, ..lease })
    }

    fn renew_lease(&self, run_id: &str, lease: &Lease, ttl_ms: u64) -> Result<Lease, StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current: Option<Lease> = match self.leases.get(run_id).map_err(|e| self.database(e))? {
            Some(bytes) => Some(decode(run_id.as_bytes(), &bytes)?),
            None => None,
        };
        if current
            .as_ref()
            .is_none_or(|current| current.holder != lease.holder || current.token != lease.token)
        {
            return Err(StoreError::Fenced(run_id.to_owned()));
        }
        let now = crate::clock::now_ms();
        let renewed = Lease {
            expires_at_ms: now + ttl_ms,
            renewed_at_ms: now,
            ..lease.clone()
        };
        self.leases
            .insert(run_id, encode(&renewed))
            .map_err(|e| self.database(e))?;
        Ok(renewed)
    }

    fn release_lease(&self, run_id: &str, lease: &Lease) -> Result<(), StoreError> {
        let _serialized = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = self.leases.get(run_id).map_err(|e| self.database(e))? {
            let current: Lease = decode(run_id.as_bytes(), &bytes)?;
            if current.holder == lease.holder && current.token == lease.token {
                let released = Lease {
                    expires_at_ms: 0,
                    released: true,
                    ..current
                };
                self.leases
                    .insert(run_id, encode(&released))
                    .map_err(|e| self.database(e))?;
            }
        }
        Ok(())
    }

    fn lease(&self, run_id: &str) -> Result<Option<Lease>, StoreError> {
        match self.leases.get(run_id).map_err(|e| self.database(e))? {
            Some(bytes) => decode(run_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn has_blob(&self, digest: &str) -> Result<bool, StoreError> {
        self.blobs
            .contains_key(digest)
            .map_err(|error| self.database(error))
    }

    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self
            .idempotency
            .get(key)
            .map_err(|error| self.database(error))?
        {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn cached(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        match self.cache.get(key).map_err(|error| self.database(error))? {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn signal(&self, run_id: &str, step_id: &str) -> Result<Option<Signal>, StoreError> {
        let key = signal_key(run_id, step_id);
        match self
            .signals
            .get(&key)
            .map_err(|error| self.database(error))?
        {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn collect_inbox(&self) -> Result<Vec<Signal>, StoreError> {
        let inbox = inbox_dir(&self.path);
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            return Ok(Vec::new());
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        // UUIDv7 names: oldest first, so the first signal sent wins.
        files.sort();
        let mut collected = Vec::new();
        for path in files {
            let Ok(bytes) = crate::files::read(&path, crate::files::Kind::Input) else {
                continue;
            };
            match serde_json::from_slice::<Signal>(&bytes) {
                Ok(signal) if self.run(&signal.run_id)?.is_none() => {
                    tracing::warn!(target: "plait::store::sled_store", run = %signal.run_id, step = %signal.step_id, "a signal for a run this store does not hold was dropped");
                }
                Ok(signal) => {
                    if self.signal(&signal.run_id, &signal.step_id)?.is_none() {
                        self.commit(Commit {
                            signal: Some(&signal),
                            audit: Some(&signal.audit()),
                            ..Commit::default()
                        })?;
                        collected.push(signal);
                    } else {
                        tracing::warn!(target: "plait::store::sled_store", run = %signal.run_id, step = %signal.step_id, "a second signal for one step was ignored");
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "plait::store::sled_store", file = %path.display(), %error, "an unreadable signal file was dropped");
                }
            }
            // Only after the commit: a crash before it leaves the file to
            // collect again.
            let _ = std::fs::remove_file(&path);
        }
        Ok(collected)
    }

    fn logs(&self, run_id: &str, step_index: u32) -> Result<Vec<AttemptLogs>, StoreError> {
        self.logs
            .scan_prefix(format!("{}/", step_key(run_id, step_index)))
            .map(|entry| {
                let (key, value) = entry.map_err(|error| self.database(error))?;
                decode(&key, &value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::StepLogs;
    use crate::{BlobRef, Fence, RunStatus, WorkflowRef};

    /// Opens the store again after the last handle was dropped: sled
    /// releases its file lock from a background thread, so wait for it.
    fn reopen(path: &Path) -> SledStore {
        for _ in 0..50 {
            match SledStore::open(path) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(100))
                }
                other => return other.unwrap(),
            }
        }
        panic!("the store stays locked");
    }

    fn run(id: &str) -> RunRecord {
        RunRecord {
            id: id.to_owned(),
            workflow: WorkflowRef {
                name: "w".into(),
                version: "1".into(),
                path: "/w.yaml".into(),
                digest: "sha256:00".into(),
            },
            status: RunStatus::Running,
            created_at_ms: 1,
            updated_at_ms: 1,
            input: serde_json::json!({"a": 1}),
            input_blobs: vec![BlobRef {
                name: "doc".into(),
                media_type: "text/plain".into(),
                digest: "sha256:ab".into(),
                size: 3,
            }],
            output: None,
            output_blobs: Vec::new(),
            error: None,
            idempotency_key: None,
            deadline_ms: None,
            trace: None,
            started_by: Some("user:test".into()),
            interruptions: 0,
        }
    }

    fn step(run_id: &str, index: u32) -> StepRecord {
        StepRecord::pending(
            run_id,
            index,
            &format!("s{index}"),
            "sha256:cd",
            Some("echo".into()),
        )
    }

    #[test]
    fn a_lost_lease_fences_its_holder_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let record = run("r1");
        store
            .commit(Commit {
                run: Some(&record),
                ..Commit::default()
            })
            .unwrap();
        let first = store.acquire_lease("r1", "a", 60_000).unwrap();
        assert_eq!(first.token, 1);
        // Held: another holder is refused.
        assert!(matches!(
            store.acquire_lease("r1", "b", 60_000),
            Err(StoreError::LeaseHeld { .. })
        ));
        // `a` lets it lapse (ttl 0 on renewal); `b` takes it over.
        store.renew_lease("r1", &first, 0).unwrap();
        let second = store.acquire_lease("r1", "b", 60_000).unwrap();
        assert_eq!(second.token, 2);
        // `a` still believes it holds the run: its commit is refused whole.
        let mut changed = run("r1");
        changed.status = RunStatus::Failed;
        let stale = store.commit(Commit {
            run: Some(&changed),
            fence: Some(Fence {
                run_id: "r1",
                holder: "a",
                token: first.token,
            }),
            ..Commit::default()
        });
        assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");
        assert_eq!(store.run("r1").unwrap().unwrap().status, RunStatus::Running);
        assert!(matches!(
            store.renew_lease("r1", &first, 60_000),
            Err(StoreError::Fenced(_))
        ));
        // `b`'s commits go through.
        store
            .commit(Commit {
                run: Some(&changed),
                fence: Some(Fence {
                    run_id: "r1",
                    holder: "b",
                    token: second.token,
                }),
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.run("r1").unwrap().unwrap().status, RunStatus::Failed);
        // Reopening the store (the process that held it is gone) lets the
        // lease lapse, and the next token is higher still.
        drop(store);
        let store = reopen(dir.path());
        let third = store.acquire_lease("r1", "c", 60_000).unwrap();
        assert_eq!(third.token, 3);
    }

    /// Regression: a lease lapsed at open looked the same as one its
    /// holder released, so a host could not tell a run whose host died
    /// from one set aside, nor when that host was last heard of.
    #[test]
    fn a_lease_its_holder_died_with_is_taken_over_at_once_and_named_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let held = store.acquire_lease("died", "a", 60_000).unwrap();
            assert!(held.abandoned.is_none());
            let released = store.acquire_lease("set-aside", "a", 60_000).unwrap();
            store.release_lease("set-aside", &released).unwrap();
            store.flush().unwrap();
            // `a` never releases `died`: the process goes away with it.
        }
        let store = reopen(dir.path());
        let stored = store.lease("died").unwrap().unwrap();
        assert_eq!(stored.expires_at_ms, 0, "lapsed at open");
        assert!(!stored.released);
        // Taken over at once, though its 60 s had not passed.
        let taken = store.acquire_lease("died", "b", 60_000).unwrap();
        let abandoned = taken.abandoned.expect("the dead holder is named");
        assert_eq!(abandoned.holder, "a");
        assert!(abandoned.heard_at_ms > 0);
        let again = store.acquire_lease("set-aside", "b", 60_000).unwrap();
        assert!(again.abandoned.is_none(), "{again:?}");
    }

    #[test]
    fn commits_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let record = run("r1");
        // Eleven steps: the zero-padded keys keep `s10` after `s9`.
        let steps: Vec<StepRecord> = (0..11).map(|index| step("r1", index)).collect();
        let logs = StepLogs::default();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .commit(Commit {
                    run: Some(&record),
                    steps: steps.iter().collect(),
                    blobs: vec![("sha256:ab", b"abc")],
                    logs: Some(crate::LogsEntry {
                        run_id: "r1",
                        index: 0,
                        item: None,
                        attempt: 1,
                        logs: &logs,
                    }),
                    signal: None,
                    idempotency: None,
                    cache: None,
                    fence: None,
                    audit: None,
                })
                .unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.run("r1").unwrap(), Some(record));
        let read: Vec<u32> = store.steps("r1").unwrap().iter().map(|s| s.index).collect();
        assert_eq!(read, (0..11).collect::<Vec<_>>());
        assert_eq!(
            store.blob("sha256:ab").unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(store.logs("r1", 0).unwrap().len(), 1);
        assert!(store.logs("r1", 1).unwrap().is_empty());
        assert_eq!(store.runs().unwrap().len(), 1);
        assert!(store.run("r2").unwrap().is_none());
    }

    /// Regression: with sled's own background flusher, concurrent commits
    /// in batched mode deadlocked (found by the benchmark at 64 concurrent
    /// runs). The bound below only turns a hang into a failure.
    #[test]
    fn concurrent_batched_commits_do_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open_with(dir.path(), Durability::Batched).unwrap());
        let (done, finished) = std::sync::mpsc::channel();
        for thread in 0..64 {
            let store = store.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let run_id = format!("run{thread}");
                let record = run(&run_id);
                for index in 0..100 {
                    let step = step(&run_id, index);
                    store
                        .commit(Commit {
                            run: Some(&record),
                            steps: vec![&step],
                            ..Commit::default()
                        })
                        .unwrap();
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..64 {
            finished
                .recv_timeout(std::time::Duration::from_secs(300))
                .expect("concurrent commits deadlocked");
        }
        assert_eq!(store.runs().unwrap().len(), 64);
        assert_eq!(store.steps("run7").unwrap().len(), 100);
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        match SledStore::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("a second open succeeded"),
        }
    }

    #[test]
    fn a_foreign_sled_database_is_refused_and_left_intact() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("accounts")
                .unwrap()
                .insert("alice", "42")
                .unwrap();
            db.flush().unwrap();
        }
        match SledStore::open(dir.path()) {
            Err(StoreError::Foreign { found, .. }) => {
                assert!(found.contains("accounts"), "{found}")
            }
            Err(other) => panic!("expected Foreign, got {other}"),
            Ok(_) => panic!("a foreign database was accepted"),
        }
        // sled releases its file lock from a background thread after the
        // last handle is dropped; give it a moment rather than racing it.
        let mut attempts = 0;
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    let _ = error;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(error) => panic!("the database stays locked: {error}"),
            }
        };
        assert_eq!(
            db.open_tree("accounts")
                .unwrap()
                .get("alice")
                .unwrap()
                .as_deref(),
            Some(&b"42"[..])
        );
        assert!(
            !db.open_tree("meta")
                .unwrap()
                .contains_key("format")
                .unwrap()
        );
    }

    #[test]
    fn a_store_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("format", "plait-journal/99")
                .unwrap();
            db.flush().unwrap();
        }
        // sled releases its file lock from a background thread after the
        // last handle is dropped: wait for it rather than race it.
        let mut opened = SledStore::open(dir.path());
        for _ in 0..50 {
            if !matches!(opened, Err(StoreError::Locked { .. })) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            opened = SledStore::open(dir.path());
        }
        match opened {
            Err(StoreError::Foreign { found, .. }) => {
                assert!(found.contains("plait-journal/99"), "{found}")
            }
            Err(other) => panic!("expected Foreign, got {other}"),
            Ok(_) => panic!("an unknown format was accepted"),
        }
    }

    #[test]
    fn a_damaged_record_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.runs.insert("r1", "{not json").unwrap();
        match store.run("r1") {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "r1"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
