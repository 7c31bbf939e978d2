//! The write-ahead log of `durable` mode: what makes a commit durable is
//! one append to a file of Plait's own, not sled's flush.
//!
//! Why: sled 0.34's flush writes every log buffer sealed since the last
//! one with `pwrite` and a waiting `sync_file_range` (about three per
//! flush), and then Plait had to `fdatasync` the log, the new blob files
//! and their folder: 0.53 ms per durable commit on this project's machine,
//! where one `pwrite` and `fdatasync` of an append-only file costs about
//! 0.16 ms. So sled stays the index every read goes to, updated in memory
//! by each commit, and the commit's writes also go, as one frame, into
//! `wal/<number>.log`; the group-commit leader (`sync.rs`) writes every
//! frame waiting with one `pwrite` and syncs once. sled's own files reach
//! the disk at a **checkpoint** (when the log passes [`CHECKPOINT_BYTES`],
//! when the store is closed, and when it is opened): flush, `fdatasync`,
//! then a new log file and the old one removed.
//!
//! Every write to the store, not only commits, is logged in the order it
//! was applied to sled (all of them under the store's commit lock), and
//! each frame carries a consecutive sequence number. A commit also writes
//! its frame's number to the `meta` tree ([`APPLIED_KEY`]), as its last
//! write, so after a crash the store knows how far sled's own files got:
//! sled recovers a prefix of its writes, and the log's frames past that
//! prefix are applied again, in order ([`replay`]). That is also what
//! makes a durable commit atomic without a sled transaction (whose
//! `pin_log` writes sled's buffer out twice per commit, each with a
//! waiting `sync_file_range`): a commit's writes go to sled one by one, in
//! an order of which every prefix is harmless (blobs before the records
//! that name them, steps before their run, the run before the idempotency
//! key that points at it, the frame number last), and a commit that a
//! crash cut in two has no marker, so its whole frame is applied again
//! over the half sled kept, or, when its frame never reached the log, it
//! was never acknowledged. When sled got
//! further than the log (possible only after an OS crash or a power cut,
//! for writes never acknowledged), nothing is replayed over it.
//!
//! A frame: `u32` length of the body, `u32` CRC-32 of the body, then the
//! body: `u64` sequence number and the writes, each `u8` kind (put,
//! remove), `u8` length and name of the tree, `u32` length and key, and
//! for a put `u32` length and value. Little-endian. A frame cut short or
//! failing its checksum ends the file: it is a write the crash interrupted,
//! which no commit was acknowledged for.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Past this many bytes in the log, the next sync runs a checkpoint: what
/// a crash makes the next open read again is bounded by it.
pub(super) const CHECKPOINT_BYTES: u64 = 32 << 20;

/// The `meta` key under which a commit's transaction records its frame's
/// sequence number (`u64`, big-endian).
pub(super) const APPLIED_KEY: &str = "wal_applied";

/// The log's folder inside the store.
pub(super) fn dir(store: &Path) -> PathBuf {
    store.join("wal")
}

const PUT: u8 = 1;
const REMOVE: u8 = 2;
/// Length and checksum.
const HEADER: usize = 8;
/// No body is larger: a length past it is damage, not a frame.
const MAX_BODY: u32 = 1 << 30;

/// The writes of one frame, encoded as they are added.
#[derive(Debug, Default)]
pub(super) struct Writes {
    body: Vec<u8>,
}

impl Writes {
    /// A put of `value` under `key` in `tree`.
    pub(super) fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) {
        self.op(PUT, tree, key);
        self.bytes(value);
    }

    /// A removal of `key` from `tree`.
    pub(super) fn remove(&mut self, tree: &str, key: &[u8]) {
        self.op(REMOVE, tree, key);
    }

    /// Whether nothing was added.
    pub(super) fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    fn op(&mut self, kind: u8, tree: &str, key: &[u8]) {
        debug_assert!(tree.len() < 256, "tree names are short");
        self.body.push(kind);
        self.body.push(tree.len() as u8);
        self.body.extend_from_slice(tree.as_bytes());
        self.bytes(key);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.body
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.body.extend_from_slice(bytes);
    }
}

/// One write read back from the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Write<'a> {
    /// Put `value` under `key` in `tree`.
    Put {
        /// The tree.
        tree: &'a str,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Remove `key` from `tree`.
    Remove {
        /// The tree.
        tree: &'a str,
        /// The key.
        key: &'a [u8],
    },
}

/// What reading a log file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Frames applied.
    pub frames: u64,
    /// Frames skipped because sled already held them.
    pub skipped: u64,
    /// The highest sequence number read (applied or skipped).
    pub last_seq: u64,
    /// Bytes after the last whole frame: an interrupted write.
    pub torn_bytes: u64,
}

/// Errors of the journal's write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading or writing its files failed.
    #[error("the journal's write-ahead log failed")]
    Io(#[from] io::Error),
    /// A whole frame (its checksum right) whose body does not parse.
    #[error(
        "frame {seq} of `{file}` is damaged ({what}); move the `wal` folder out of the store to open it without the writes the log holds past sled's last checkpoint"
    )]
    Damaged {
        /// The log file.
        file: PathBuf,
        /// The frame's sequence number.
        seq: u64,
        /// What is wrong with it.
        what: &'static str,
    },
    /// An earlier sync failed: what the kernel dropped cannot be known, so
    /// nothing more is acknowledged until the store is opened again.
    #[error(
        "an earlier sync of the journal's write-ahead log failed ({0}); stop this process and start it again: the store replays its log when it opens"
    )]
    Failed(String),
}

/// Reads the frames of `bytes` (one log file), calling `apply` for each
/// write of every frame numbered above `applied` (the number sled's own
/// files already hold), in order. Stops at the first frame that is cut
/// short, fails its checksum or does not follow the one before (a
/// leftover of an earlier, failed write).
pub(super) fn replay(
    file: &Path,
    bytes: &[u8],
    applied: u64,
    mut apply: impl FnMut(Write<'_>) -> io::Result<()>,
) -> Result<Replayed, WalError> {
    let mut found = Replayed::default();
    let mut at = 0usize;
    let mut previous: Option<u64> = None;
    while at < bytes.len() {
        let Some(body) = frame_at(bytes, at) else {
            break;
        };
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        if previous.is_some_and(|previous| seq != previous + 1) {
            break;
        }
        previous = Some(seq);
        at += HEADER + body.len();
        found.last_seq = found.last_seq.max(seq);
        if seq <= applied {
            found.skipped += 1;
            continue;
        }
        let damaged = |what| WalError::Damaged {
            file: file.to_owned(),
            seq,
            what,
        };
        let mut rest = &body[8..];
        while !rest.is_empty() {
            let (&kind, after) = rest.split_first().ok_or_else(|| damaged("no kind"))?;
            let (&length, after) = after.split_first().ok_or_else(|| damaged("no tree"))?;
            let (tree, after) = split(after, usize::from(length)).ok_or_else(|| damaged("tree"))?;
            let tree = std::str::from_utf8(tree).map_err(|_| damaged("tree name"))?;
            let (key, after) = sized(after).ok_or_else(|| damaged("key"))?;
            rest = match kind {
                PUT => {
                    let (value, after) = sized(after).ok_or_else(|| damaged("value"))?;
                    apply(Write::Put { tree, key, value })?;
                    after
                }
                REMOVE => {
                    apply(Write::Remove { tree, key })?;
                    after
                }
                _ => return Err(damaged("unknown kind of write")),
            };
        }
        found.frames += 1;
    }
    found.torn_bytes = (bytes.len() - at) as u64;
    Ok(found)
}

/// The body of the whole, checksummed frame at `at`, if there is one.
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + HEADER)?;
    let length = u32::from_le_bytes(header[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if !(8..=MAX_BODY).contains(&length) {
        return None;
    }
    let body = bytes.get(at + HEADER..at + HEADER + length as usize)?;
    (crc32fast::hash(body) == crc).then_some(body)
}

fn split(bytes: &[u8], length: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= length).then(|| bytes.split_at(length))
}

fn sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = split(bytes, 4)?;
    split(rest, u32::from_le_bytes(length.try_into().ok()?) as usize)
}

/// The log's files in `dir`, oldest first.
pub(super) fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let number = name.to_str()?.strip_suffix(".log")?.parse().ok()?;
                Some((number, entry.path()))
            })
            .collect(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// The open log: the file frames go to, and the frames waiting for the
/// next sync.
pub(super) struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: Arc<File>,
    /// The file's number (its name).
    number: u64,
    /// Bytes written to it: where the next write goes.
    written: u64,
    /// Whole frames not written yet.
    pending: Vec<u8>,
    /// The last sequence number given out.
    seq: u64,
    /// Set by a failed sync; see [`WalError::Failed`].
    failed: Option<String>,
}

impl Wal {
    /// Starts a new, empty log file in `dir` (created if needed) numbered
    /// after any there, whose first frame follows sequence number `seq`.
    /// The caller removes older files once sled's files cover them.
    pub(super) fn create(dir: &Path, seq: u64) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let number = segments(dir)?
            .last()
            .and_then(|path| path.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |number| number + 1);
        let file = new_segment(dir, number)?;
        Ok(Wal {
            dir: dir.to_owned(),
            state: Mutex::new(State {
                file: Arc::new(file),
                number,
                written: 0,
                pending: Vec::new(),
                seq,
                failed: None,
            }),
        })
    }

    /// Adds `writes` as the next frame, returning its sequence number, and
    /// calls `ticket` while the frame is queued, so that a sync that takes
    /// the queue after covers the ticket. Called under the store's commit
    /// lock, right after the writes were applied to sled.
    pub(super) fn append(&self, writes: &Writes, ticket: impl FnOnce()) -> u64 {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        let length = (8 + writes.body.len()) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&writes.body);
        let pending = &mut state.pending;
        pending.reserve(HEADER + length as usize);
        pending.extend_from_slice(&length.to_le_bytes());
        pending.extend_from_slice(&crc.finalize().to_le_bytes());
        pending.extend_from_slice(&seq.to_le_bytes());
        pending.extend_from_slice(&writes.body);
        ticket();
        seq
    }

    /// The sequence number the next frame will take.
    pub(super) fn next_seq(&self) -> u64 {
        self.lock().seq + 1
    }

    /// Writes the frames waiting and syncs the file. `issued` is read while
    /// the queue is taken: every ticket up to what it returns is covered.
    /// Returns that, and whether the log has grown past a checkpoint's size.
    pub(super) fn sync(&self, issued: impl FnOnce() -> u64) -> Result<(u64, bool), WalError> {
        let (file, covered, full) = {
            let mut state = self.lock();
            if let Some(failed) = &state.failed {
                return Err(WalError::Failed(failed.clone()));
            }
            let covered = issued();
            if !state.pending.is_empty() {
                // Written under the lock (a copy into the page cache) so that
                // frames land in order; a failed write leaves the queue as it
                // was and the offset where it was, and the next one overwrites
                // what it left.
                state.file.write_all_at(&state.pending, state.written)?;
                state.written += state.pending.len() as u64;
                state.pending.clear();
                if state.pending.capacity() > 1 << 20 {
                    state.pending = Vec::new();
                }
            }
            (
                state.file.clone(),
                covered,
                state.written > CHECKPOINT_BYTES,
            )
        };
        if let Err(error) = file.sync_data() {
            // After a failed fdatasync Linux may have dropped the dirty pages:
            // nothing written since can be trusted to be on disk.
            self.lock().failed = Some(error.to_string());
            return Err(error.into());
        }
        Ok((covered, full))
    }

    /// After a checkpoint (sled's files hold every write applied so far):
    /// starts the next log file, drops the frames waiting (sled's files
    /// cover them) and removes the older files. With `last`, the store is
    /// closing: no new file, and every log file is removed.
    pub(super) fn restart(&self, last: bool) -> io::Result<()> {
        let mut state = self.lock();
        if last {
            state.pending = Vec::new();
        } else {
            let number = state.number + 1;
            state.file = Arc::new(new_segment(&self.dir, number)?);
            state.number = number;
            state.written = 0;
            state.pending.clear();
        }
        let keep = (!last).then_some(state.number);
        for path in segments(&self.dir)? {
            let number = path
                .file_stem()
                .and_then(|stem| stem.to_str()?.parse::<u64>().ok());
            if number != keep {
                std::fs::remove_file(&path)?;
            }
        }
        sync_dir(&self.dir)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates log file `number` in `dir` and syncs the folder, so that the
/// file's name is on disk before any commit relies on what it holds.
fn new_segment(dir: &Path, number: u64) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(format!("{number:020}.log")))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(wal: &Wal) -> Vec<u8> {
        let state = wal.lock();
        let mut bytes = std::fs::read(wal.dir.join(format!("{:020}.log", state.number))).unwrap();
        bytes.extend_from_slice(&state.pending);
        bytes
    }

    fn writes(n: u8) -> Writes {
        let mut writes = Writes::default();
        writes.put("runs", &[b'r', n], &[n; 3]);
        writes.remove("steps", &[b's', n]);
        writes
    }

    fn read(bytes: &[u8], applied: u64) -> (Replayed, Vec<String>) {
        let mut seen = Vec::new();
        let replayed = replay(Path::new("test.log"), bytes, applied, |write| {
            seen.push(match write {
                Write::Put { tree, key, value } => format!("put {tree} {key:?} {value:?}"),
                Write::Remove { tree, key } => format!("remove {tree} {key:?}"),
            });
            Ok(())
        })
        .unwrap();
        (replayed, seen)
    }

    #[test]
    fn frames_read_back_in_order_and_those_sled_holds_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(dir.path(), 10).unwrap();
        assert_eq!(wal.append(&writes(1), || {}), 11);
        assert_eq!(wal.append(&writes(2), || {}), 12);
        assert_eq!(wal.sync(|| 7).unwrap(), (7, false));
        assert_eq!(wal.append(&writes(3), || {}), 13);
        let bytes = frames(&wal);
        let (replayed, seen) = read(&bytes, 0);
        assert_eq!(
            replayed,
            Replayed {
                frames: 3,
                skipped: 0,
                last_seq: 13,
                torn_bytes: 0
            }
        );
        assert_eq!(
            seen,
            [
                "put runs [114, 1] [1, 1, 1]",
                "remove steps [115, 1]",
                "put runs [114, 2] [2, 2, 2]",
                "remove steps [115, 2]",
                "put runs [114, 3] [3, 3, 3]",
                "remove steps [115, 3]"
            ]
        );
        let (replayed, seen) = read(&bytes, 12);
        assert_eq!((replayed.frames, replayed.skipped), (1, 2));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_frame_cut_short_or_damaged_ends_the_log_and_the_frames_before_it_stay() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(dir.path(), 0).unwrap();
        wal.append(&writes(1), || {});
        wal.append(&writes(2), || {});
        let bytes = frames(&wal);
        let first = HEADER + 8 + writes(1).body.len();
        for cut in [first + 1, bytes.len() - 1] {
            let (replayed, seen) = read(&bytes[..cut], 0);
            assert_eq!(replayed.frames, 1, "cut at {cut}");
            assert_eq!(replayed.torn_bytes, (cut - first) as u64);
            assert_eq!(seen.len(), 2);
        }
        // A flipped bit in the second frame's value.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x10;
        assert_eq!(read(&flipped, 0).0.frames, 1);
        // A whole frame that does not follow the one before: a leftover.
        let mut leftover = bytes[..first].to_vec();
        leftover.extend_from_slice(&bytes[..first]);
        let (replayed, _) = read(&leftover, 0);
        assert_eq!((replayed.frames, replayed.torn_bytes), (1, first as u64));
    }

    #[test]
    fn a_whole_frame_whose_writes_do_not_parse_is_refused_naming_it() {
        let mut body = 5u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[9, 4]);
        body.extend_from_slice(b"runs");
        body.extend_from_slice(&0u32.to_le_bytes());
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let error = replay(Path::new("wal/1.log"), &bytes, 0, |_| Ok(())).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("frame 5 of `wal/1.log` is damaged (unknown kind of write)")
                && message.contains("move the `wal` folder"),
            "{message}"
        );
    }

    #[test]
    fn a_restart_starts_the_next_file_and_removes_the_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::create(dir.path(), 0).unwrap();
        wal.append(&writes(1), || {});
        wal.sync(|| 1).unwrap();
        wal.append(&writes(2), || {});
        wal.restart(false).unwrap();
        let names = |dir: &Path| -> Vec<String> {
            segments(dir)
                .unwrap()
                .iter()
                .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(dir.path()), [format!("{:020}.log", 2)]);
        // The frame waiting was dropped (sled's files cover it); numbers go on.
        assert_eq!(wal.append(&writes(3), || {}), 3);
        wal.sync(|| 3).unwrap();
        let (replayed, _) = read(&frames(&wal), 0);
        assert_eq!((replayed.frames, replayed.last_seq), (1, 3));
        wal.restart(true).unwrap();
        assert!(names(dir.path()).is_empty());
    }
}
