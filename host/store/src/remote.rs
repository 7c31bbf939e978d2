//! The store of another process, over its Unix socket.
//!
//! sled lets one process open a journal. So that `plait runs list`,
//! `plait runs show` and the like work while `plait serve` (or a
//! `plait run` waiting for a signal) holds it, every process that opens
//! the journal also serves it on `store.sock` inside the journal folder
//! ([`serve`]), and a process that finds the journal held reads it through
//! that socket instead ([`RemoteStore`]).
//!
//! The protocol is one JSON request per line and one JSON reply per line,
//! each at most [`MAX_LINE`] bytes. It carries reads only: a
//! [`RemoteStore`] refuses every write with [`StoreError::Held`], naming
//! the process that holds the store, because two writers would each need
//! the run leases and the inbox of the other. Signals and cancel requests
//! for the holder travel through the store's inbox, as before. The socket
//! is created with mode 0600 (only its user may connect) and is removed
//! when the serving process lets the store go; a socket left by a process
//! that died is replaced by the next process that opens the journal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    AttemptLogs, AuditRecord, CacheEntry, Commit, Delivery, EventRecord, IdempotencyRecord, Lease,
    RunRecord, RunStore, Signal, StepRecord, StoreError, TriggerMark,
};

/// The socket's file name in the journal folder.
pub const SOCKET: &str = "store.sock";

/// The most bytes one request or reply line may hold (8 MiB).
pub const MAX_LINE: usize = 8 << 20;

/// Runs a page of [`RemoteStore::runs`] asks for at a time, so that a
/// large store never needs one oversized line.
const RUNS_PAGE: usize = 512;

/// The protocol version [`Holder::protocol`] names.
const PROTOCOL: u32 = 1;

/// The socket of the journal in folder `journal`.
pub fn socket_path(journal: &Path) -> PathBuf {
    journal.join(SOCKET)
}

/// The process serving a store, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command line (`plait serve --listen ...`).
    pub command: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// Whether it still has the store open (a process that let it go
    /// answers `false` until it removes the socket).
    pub open: bool,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "`{}` (pid {})", self.command, self.pid)
    }
}

/// This process, as it describes itself to others.
fn this_process(open: bool) -> Holder {
    let mut words = std::env::args();
    let program = words
        .next()
        .map(|program| {
            Path::new(&program)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or(program)
        })
        .unwrap_or_else(|| "plait".to_owned());
    let command = std::iter::once(program)
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ");
    Holder {
        pid: std::process::id(),
        command,
        protocol: PROTOCOL,
        open,
    }
}

/// One call of the [`RunStore`] read methods.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Hello,
    Run {
        run_id: String,
    },
    Steps {
        run_id: String,
    },
    RunsPage {
        before: Option<String>,
        limit: usize,
    },
    RunsWithPrefix {
        prefix: String,
        limit: usize,
    },
    Blob {
        digest: String,
    },
    HasBlob {
        digest: String,
    },
    Logs {
        run_id: String,
        step_index: u32,
    },
    Signal {
        run_id: String,
        step_id: String,
    },
    Idempotency {
        key: String,
    },
    Cached {
        key: String,
    },
    AuditLog,
    Deliveries {
        run_id: String,
    },
    PendingDeliveries,
    Events {
        run_id: String,
        after: Option<u64>,
    },
    TriggerMark {
        key: String,
    },
    SizeOnDisk,
}

/// The answer to one [`Request`], `T` being what it asked for.
///
/// Generic rather than holding a `serde_json::Value`, so that a record
/// crosses the socket with the same (de)serializer code as it is written
/// to and read from sled: no intermediate tree, and in the binary no
/// second copy of every record's `Deserialize` for `Value`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply<T> {
    Ok(T),
    /// No run has this id.
    UnknownRun(String),
    Error(String),
}

/// A reply that carries no value: a failure.
type Failure = Reply<()>;

/// A store another process holds, read through its socket. Every write
/// fails with [`StoreError::Held`].
pub struct RemoteStore {
    journal: PathBuf,
    holder: Holder,
    connection: std::sync::Mutex<Connection>,
}

struct Connection {
    #[cfg(unix)]
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    #[cfg(unix)]
    writer: std::os::unix::net::UnixStream,
}

impl RemoteStore {
    /// Connects to the process serving the journal in folder `journal`;
    /// `None` when none does (no socket, a socket left by a process that
    /// died, or one that has just let the store go).
    pub fn connect(journal: &Path) -> Result<Option<RemoteStore>, StoreError> {
        let Some(connection) = Connection::open(journal) else {
            return Ok(None);
        };
        let mut store = RemoteStore {
            journal: journal.to_owned(),
            holder: this_process(false),
            connection: std::sync::Mutex::new(connection),
        };
        let holder: Holder = store.call(&Request::Hello)?;
        if !holder.open {
            return Ok(None);
        }
        store.holder = holder;
        Ok(Some(store))
    }

    /// The process that holds the store.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    fn held(&self) -> StoreError {
        StoreError::Held {
            path: self.journal.clone(),
            holder: self.holder.to_string(),
        }
    }

    fn remote(&self, message: impl Into<String>) -> StoreError {
        StoreError::Remote {
            path: self.journal.clone(),
            message: message.into(),
        }
    }

    /// Sends `request` and decodes the reply.
    fn call<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Result<T, StoreError> {
        let mut line = serde_json::to_vec(request).expect("requests serialize to JSON");
        line.push(b'\n');
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let reply = connection
            .exchange(&line)
            .map_err(|error| self.remote(error.to_string()))?;
        let reply: Reply<T> = serde_json::from_slice(&reply)
            .map_err(|error| self.remote(format!("its reply is not understood: {error}")))?;
        match reply {
            Reply::Ok(value) => Ok(value),
            Reply::UnknownRun(run_id) => Err(StoreError::UnknownRun(run_id)),
            Reply::Error(message) => Err(self.remote(message)),
        }
    }
}

#[cfg(unix)]
impl Connection {
    fn open(journal: &Path) -> Option<Connection> {
        let stream = std::os::unix::net::UnixStream::connect(socket_path(journal)).ok()?;
        // A holder that stops answering must not hang a `plait runs list`.
        let timeout = Some(std::time::Duration::from_secs(30));
        stream.set_read_timeout(timeout).ok()?;
        stream.set_write_timeout(timeout).ok()?;
        Some(Connection {
            reader: std::io::BufReader::new(stream.try_clone().ok()?),
            writer: stream,
        })
    }

    fn exchange(&mut self, line: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Write as _;
        self.writer.write_all(line)?;
        self.writer.flush()?;
        read_line(&mut self.reader)?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "it closed the connection without a reply",
            )
        })
    }
}

#[cfg(not(unix))]
impl Connection {
    fn open(_journal: &Path) -> Option<Connection> {
        None
    }

    fn exchange(&mut self, _line: &[u8]) -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (without its newline);
/// `None` at the end of the stream.
fn read_line(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::{BufRead as _, Read as _};
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a line of the store socket is longer than {} MiB, the most the protocol allows",
                    MAX_LINE >> 20
                ),
            ));
        }
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    line.pop();
    Ok(Some(line))
}

impl RunStore for RemoteStore {
    fn commit(&self, _commit: Commit<'_>) -> Result<(), StoreError> {
        Err(self.held())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.call(&Request::Run {
            run_id: run_id.to_owned(),
        })
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        self.call(&Request::Steps {
            run_id: run_id.to_owned(),
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        // Page by page, newest first, so no reply grows with the store.
        let mut runs = Vec::new();
        loop {
            let page: Vec<RunRecord> = self.call(&Request::RunsPage {
                before: runs.last().map(|run: &RunRecord| run.id.to_string()),
                limit: RUNS_PAGE,
            })?;
            let last = page.len() < RUNS_PAGE;
            runs.extend(page);
            if last {
                break;
            }
        }
        runs.reverse();
        Ok(runs)
    }

    fn runs_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.call(&Request::RunsWithPrefix {
            prefix: prefix.to_owned(),
            limit,
        })
    }

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use base64::Engine as _;
        let encoded: Option<String> = self.call(&Request::Blob {
            digest: digest.to_owned(),
        })?;
        encoded
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|error| self.remote(format!("a blob it sent is not base64: {error}")))
            })
            .transpose()
    }

    fn has_blob(&self, digest: &str) -> Result<bool, StoreError> {
        self.call(&Request::HasBlob {
            digest: digest.to_owned(),
        })
    }

    fn logs(&self, run_id: &str, step_index: u32) -> Result<Vec<AttemptLogs>, StoreError> {
        self.call(&Request::Logs {
            run_id: run_id.to_owned(),
            step_index,
        })
    }

    fn signal(&self, run_id: &str, step_id: &str) -> Result<Option<Signal>, StoreError> {
        self.call(&Request::Signal {
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
        })
    }

    fn acquire_lease(
        &self,
        _run_id: &str,
        _holder: &str,
        _ttl_ms: u64,
    ) -> Result<Lease, StoreError> {
        Err(self.held())
    }

    fn renew_lease(
        &self,
        _run_id: &str,
        _lease: &Lease,
        _ttl_ms: u64,
    ) -> Result<Lease, StoreError> {
        Err(self.held())
    }

    fn release_lease(&self, _run_id: &str, _lease: &Lease) -> Result<(), StoreError> {
        Err(self.held())
    }

    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.call(&Request::Idempotency {
            key: key.to_owned(),
        })
    }

    fn cached(&self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.call(&Request::Cached {
            key: key.to_owned(),
        })
    }

    fn audit_log(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.call(&Request::AuditLog)
    }

    fn append_event(&self, _run_id: &str, _event: &serde_json::Value) -> Result<u64, StoreError> {
        Err(self.held())
    }

    fn put_delivery(&self, _delivery: &Delivery) -> Result<(), StoreError> {
        Err(self.held())
    }

    fn deliveries(&self, run_id: &str) -> Result<Vec<Delivery>, StoreError> {
        self.call(&Request::Deliveries {
            run_id: run_id.to_owned(),
        })
    }

    fn pending_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.call(&Request::PendingDeliveries)
    }

    fn events(&self, run_id: &str, after: Option<u64>) -> Result<Vec<EventRecord>, StoreError> {
        self.call(&Request::Events {
            run_id: run_id.to_owned(),
            after,
        })
    }

    fn runs_page(
        &self,
        before: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&RunRecord) -> bool,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // `keep` cannot cross the socket: filter here, a page at a time.
        let mut page = Vec::new();
        let mut before = before.map(str::to_owned);
        while page.len() < limit {
            let batch: Vec<RunRecord> = self.call(&Request::RunsPage {
                before: before.clone(),
                limit: RUNS_PAGE,
            })?;
            let last = batch.len() < RUNS_PAGE;
            before = batch.last().map(|run| run.id.to_string());
            page.extend(batch.into_iter().filter(|run| keep(run)));
            if last {
                break;
            }
        }
        page.truncate(limit);
        Ok(page)
    }

    fn trigger_mark(&self, key: &str) -> Result<Option<TriggerMark>, StoreError> {
        self.call(&Request::TriggerMark {
            key: key.to_owned(),
        })
    }

    fn put_trigger_mark(&self, _key: &str, _mark: &TriggerMark) -> Result<(), StoreError> {
        Err(self.held())
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.call(&Request::SizeOnDisk).ok().flatten()
    }
}

/// Serving a store on its socket; stops and removes the socket when
/// dropped.
pub struct Served {
    socket: PathBuf,
    #[cfg(unix)]
    inode: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            // Wakes the accept loop, which then sees `stop`.
            let _ = std::os::unix::net::UnixStream::connect(&self.socket);
            // Only our own socket: a process that opened the journal after
            // this one let it go may have put its own in its place.
            if std::fs::symlink_metadata(&self.socket).is_ok_and(|meta| meta.ino() == self.inode) {
                let _ = std::fs::remove_file(&self.socket);
            }
        }
    }
}

impl Served {
    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Serves `store` (the journal in folder `journal`, which this process
/// holds) on the journal's socket, from a thread per connection, for as
/// long as the returned handle lives and the store is open. A socket
/// already there is replaced: this process holds the journal, so whoever
/// made that one no longer does.
///
/// # Errors
/// When the socket cannot be created (a path longer than Unix sockets
/// allow, a read-only folder, a system without Unix sockets).
pub fn serve(store: std::sync::Weak<dyn RunStore>, journal: &Path) -> std::io::Result<Served> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let socket = socket_path(journal);
        // Bound under a private name, made 0600, then renamed over any
        // stale socket: nobody can connect before the mode is set, and no
        // moment passes without a socket once one was there.
        let partial = journal.join(format!(".{SOCKET}.{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let listener = std::os::unix::net::UnixListener::bind(&partial)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&partial, &socket)?;
        let inode = std::fs::symlink_metadata(&socket)?.ino();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("plait-store-socket".to_owned())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(std::sync::atomic::Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let store = store.clone();
                    let _ = std::thread::Builder::new()
                        .name("plait-store-client".to_owned())
                        .spawn(move || answer(stream, &store));
                }
            })?;
        Ok(Served {
            socket,
            inode,
            stop,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (store, journal);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Answers one connection's requests until it closes or idles for a minute.
#[cfg(unix)]
fn answer(stream: std::os::unix::net::UnixStream, store: &std::sync::Weak<dyn RunStore>) {
    use std::io::Write as _;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = std::io::BufReader::new(reader);
    let mut writer = stream;
    loop {
        let reply = match read_line(&mut reader) {
            Ok(Some(line)) => match serde_json::from_slice::<Request>(&line) {
                Ok(request) => handle(&request, store),
                Err(error) => encode(&Failure::Error(format!(
                    "a request it could not read: {error}"
                ))),
            },
            Ok(None) => return,
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                // The rest of an oversized line cannot be told from the
                // next request: answer, then hang up.
                let _ = write_line(&mut writer, encode(&Failure::Error(error.to_string())));
                return;
            }
            Err(_) => return,
        };
        if write_line(&mut writer, reply).is_err() {
            return;
        }
        let _ = writer.flush();
    }
}

/// `reply` as one line of JSON (without its newline), or the error that
/// says why it cannot be sent.
fn encode<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    let failure = |message: String| {
        serde_json::to_vec(&Failure::Error(message)).expect("a string serializes to JSON")
    };
    match serde_json::to_vec(reply) {
        Ok(line) if line.len() > MAX_LINE => failure(format!(
            "the answer is {} MiB, more than the {} MiB one line of the store socket may hold; \
             stop the process that holds the store to read it directly",
            line.len() >> 20,
            MAX_LINE >> 20
        )),
        Ok(line) => line,
        Err(error) => failure(error.to_string()),
    }
}

#[cfg(unix)]
fn write_line(writer: &mut impl std::io::Write, mut line: Vec<u8>) -> std::io::Result<()> {
    line.push(b'\n');
    writer.write_all(&line)
}

/// Runs one request against the store, if it is still open.
fn handle(request: &Request, store: &std::sync::Weak<dyn RunStore>) -> Vec<u8> {
    let Some(store) = store.upgrade() else {
        return match request {
            Request::Hello => reply(Ok(this_process(false))),
            _ => encode(&Failure::Error(
                "this process has closed the store".to_owned(),
            )),
        };
    };
    let store = store.as_ref();
    match request {
        Request::Hello => reply(Ok(this_process(true))),
        Request::Run { run_id } => reply(store.run(run_id)),
        Request::Steps { run_id } => reply(store.steps(run_id)),
        Request::RunsPage { before, limit } => {
            reply(store.runs_page(before.as_deref(), *limit, &|_| true))
        }
        Request::RunsWithPrefix { prefix, limit } => reply(store.runs_with_prefix(prefix, *limit)),
        Request::Blob { digest } => {
            use base64::Engine as _;
            reply(store.blob(digest).map(|bytes| {
                bytes.map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
            }))
        }
        Request::HasBlob { digest } => reply(store.has_blob(digest)),
        Request::Logs { run_id, step_index } => reply(store.logs(run_id, *step_index)),
        Request::Signal { run_id, step_id } => reply(store.signal(run_id, step_id)),
        Request::Idempotency { key } => reply(store.idempotency(key)),
        Request::Cached { key } => reply(store.cached(key)),
        Request::AuditLog => reply(store.audit_log()),
        Request::Deliveries { run_id } => reply(store.deliveries(run_id)),
        Request::PendingDeliveries => reply(store.pending_deliveries()),
        Request::Events { run_id, after } => reply(store.events(run_id, *after)),
        Request::TriggerMark { key } => reply(store.trigger_mark(key)),
        Request::SizeOnDisk => reply(Ok::<_, StoreError>(store.size_on_disk())),
    }
}

/// The encoded reply to a request that `result` answers.
fn reply<T: Serialize>(result: Result<T, StoreError>) -> Vec<u8> {
    match result {
        Ok(value) => encode(&Reply::Ok(value)),
        Err(StoreError::UnknownRun(run_id)) => encode(&Failure::UnknownRun(run_id)),
        // The whole chain: the client prints it as the cause.
        Err(error) => encode(&Failure::Error(error_chain(&error))),
    }
}

/// `error` and its sources, joined with `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_line_longer_than_the_limit_is_refused_with_a_clear_error() {
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        let error = read_line(&mut std::io::Cursor::new(long)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("longer than 8 MiB"), "{error}");
        let mut ok = b"{\"op\":\"hello\"}\n".to_vec();
        ok.extend_from_slice(b"next");
        let line = read_line(&mut std::io::Cursor::new(ok)).unwrap().unwrap();
        assert_eq!(line, b"{\"op\":\"hello\"}");
    }

    #[test]
    fn replies_keep_their_wire_format_and_an_oversized_one_becomes_an_error() {
        assert_eq!(encode(&Reply::Ok(vec![1, 2])), br#"{"ok":[1,2]}"#);
        assert_eq!(
            encode(&Failure::UnknownRun("r1".to_owned())),
            br#"{"unknown_run":"r1"}"#
        );
        // A failure reads as the reply to any request.
        let failure: Reply<Vec<u32>> =
            serde_json::from_slice(&encode(&Failure::Error("boom".to_owned()))).unwrap();
        assert!(matches!(failure, Reply::Error(ref message) if message == "boom"));
        let oversized = encode(&Reply::Ok("x".repeat(MAX_LINE)));
        assert!(oversized.len() < 1024);
        let oversized: Reply<String> = serde_json::from_slice(&oversized).unwrap();
        assert!(
            matches!(oversized, Reply::Error(ref message) if message.contains("more than the 8 MiB")),
            "{oversized:?}"
        );
    }

    #[test]
    fn a_remote_store_reads_what_the_holder_holds_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let store: std::sync::Arc<dyn RunStore> =
            std::sync::Arc::new(super::super::SledStore::open(&journal).unwrap());
        let served = serve(std::sync::Arc::downgrade(&store), &journal).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(served.socket())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let remote = RemoteStore::connect(&journal)
            .unwrap()
            .expect("a holder answers");
        assert_eq!(remote.holder().pid, std::process::id());
        assert!(remote.runs().unwrap().is_empty());
        assert!(matches!(remote.run("nope"), Ok(None)));
        let refused = remote.commit(Commit::default()).unwrap_err();
        assert!(matches!(refused, StoreError::Held { .. }), "{refused}");
        assert!(
            refused
                .to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        // The store closed: nobody answers for it any more.
        drop(store);
        assert!(RemoteStore::connect(&journal).unwrap().is_none());
        drop(served);
        assert!(!socket_path(&journal).exists());
        assert!(RemoteStore::connect(&journal).unwrap().is_none());
    }
}
