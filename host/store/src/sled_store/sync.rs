//! Syncs that reach the disk, and group commit in `durable` mode.
//!
//! sled 0.34's `flush` writes its log with `sync_file_range`, which flushes
//! neither the drive's write cache nor the file's metadata, and it writes
//! large values as files under `blobs/` with no sync at all (sled's issue
//! #1452). So after each flush Plait syncs those files itself:
//! `fdatasync` of the log file `db`, of every blob file written since the
//! last sync, and of the `blobs/` folder that names them.
//!
//! Group commit: a commit applies its transaction under the store's commit
//! lock and takes a ticket; it returns only once a sync that started after
//! its ticket has finished. Whoever finds no sync running becomes the
//! leader and runs one for every ticket issued so far; the others wait for
//! it. Commits that arrive while a sync runs share the next one, so 64
//! concurrent runs pay for a few syncs, not 64. A sync that fails is
//! reported to its leader, and every waiter it would have covered tries
//! again itself: no commit is acknowledged without a sync that succeeded.
//! A waiting thread blocks on a condvar ([`GroupSync::wait`]); a waiting
//! task ([`GroupSync::poll`], behind `RunStore::poll_durable`) leaves its
//! waker and yields its worker thread until the sync it waits for ends.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll, Waker};

/// The files of a sled database that must reach the disk, and how to make
/// them.
pub(super) struct DiskFiles {
    /// sled's log and page store.
    db: File,
    /// Where sled writes values too large for its log.
    blobs: PathBuf,
    /// The highest blob file (named by its log sequence number) synced.
    blobs_synced: Mutex<u64>,
}

impl DiskFiles {
    /// The files of the sled database in `dir`; syncs `dir` itself once, so
    /// that the files sled just created there are named on disk too.
    pub(super) fn open(dir: &Path) -> io::Result<DiskFiles> {
        let db = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        let blobs = dir.join("blobs");
        if blobs.is_dir() {
            sync_dir(&blobs)?;
        }
        // Blobs already there were written by an earlier process; sync them
        // now, once, rather than trust they reached the disk.
        let files = DiskFiles {
            db,
            blobs,
            blobs_synced: Mutex::new(0),
        };
        files.sync_blobs()?;
        Ok(files)
    }

    /// Syncs the blob files written since the last call, and their folder.
    /// Called with the commit lock held, so that no blob is half-written.
    pub(super) fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let mut newest = *synced;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn <= *synced {
                continue;
            }
            match File::open(entry.path()) {
                Ok(file) => file.sync_data()?,
                // Collected by sled since the folder was read.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            }
            newest = newest.max(lsn);
        }
        if newest > *synced {
            sync_dir(&self.blobs)?;
            *synced = newest;
        }
        Ok(())
    }

    /// `fdatasync` of the log file: what sled's flush wrote reaches the
    /// device, its cache included. Needs no lock: it covers whatever was
    /// written before it started.
    pub(super) fn sync_log(&self) -> io::Result<()> {
        self.db.sync_data()
    }
}

/// `fsync` of a folder, so that the names of the files created in it are
/// on disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Tickets and the sync that covers them.
pub(super) struct GroupSync {
    /// Tickets issued: one per write that must be durable before it is
    /// acknowledged.
    issued: AtomicU64,
    state: Mutex<SyncState>,
    done: Condvar,
    /// Syncs run, for tests and the benchmark: how well commits group.
    syncs: AtomicU64,
}

struct SyncState {
    /// Every ticket up to this one is on disk.
    synced: u64,
    /// A sync is running.
    leader: bool,
    /// The tasks that wait for the running sync ([`GroupSync::poll`]):
    /// woken when it ends, to return or to lead the next one.
    wakers: Vec<Waker>,
}

impl GroupSync {
    pub(super) fn new() -> GroupSync {
        GroupSync {
            issued: AtomicU64::new(0),
            state: Mutex::new(SyncState {
                synced: 0,
                leader: false,
                wakers: Vec::new(),
            }),
            done: Condvar::new(),
            syncs: AtomicU64::new(0),
        }
    }

    /// A ticket for a write that has just completed.
    pub(super) fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Every ticket issued so far: what a sync that starts now covers.
    pub(super) fn issued(&self) -> u64 {
        self.issued.load(Ordering::Acquire)
    }

    /// How many syncs have run.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once `ticket` is on disk: as the leader of a sync (`sync`,
    /// which returns the last ticket it covers), or by waiting for the one
    /// running. `sync`'s error goes to the leader that ran it.
    pub(super) fn wait<E>(&self, ticket: u64, sync: impl Fn() -> Result<u64, E>) -> Result<(), E> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.leader {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let result = self.lead(state, &sync);
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            result?;
        }
    }

    /// What [`GroupSync::wait`] does, for a task: `Ready` once `ticket` is
    /// on disk, after leading a sync (run on the polling thread: a device
    /// sync, a fraction of a millisecond) if none is running; `Pending`
    /// while another caller's sync runs, and woken when it ends. A waiting
    /// commit then holds no thread: at 64 runs in flight on two workers
    /// the runs' tasks wait without a thread handoff each.
    pub(super) fn poll<E>(
        &self,
        ticket: u64,
        cx: &mut Context<'_>,
        sync: impl Fn() -> Result<u64, E>,
    ) -> Poll<Result<(), E>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.synced >= ticket {
                return Poll::Ready(Ok(()));
            }
            if state.leader {
                if !state.wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let result = self.lead(state, &sync);
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(error) = result {
                return Poll::Ready(Err(error));
            }
        }
    }

    /// Runs one sync as the leader (`state` is the lock, released during
    /// the sync) and wakes everyone who waited for it, threads and tasks.
    fn lead<E>(
        &self,
        mut state: std::sync::MutexGuard<'_, SyncState>,
        sync: &impl Fn() -> Result<u64, E>,
    ) -> Result<(), E> {
        state.leader = true;
        drop(state);
        let result = sync();
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.leader = false;
        let covered = result.as_ref().ok().copied();
        if let Some(covered) = covered {
            state.synced = state.synced.max(covered);
        }
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.done.notify_all();
        // A failed sync wakes them too: each tries again itself, so no
        // commit is acknowledged without a sync that succeeded.
        for waker in wakers {
            waker.wake();
        }
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::GroupSync;

    #[test]
    fn concurrent_commits_share_syncs_and_none_returns_before_its_own() {
        let group = Arc::new(GroupSync::new());
        // What the "disk" holds: the highest ticket a finished sync covered.
        let on_disk = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let group = group.clone();
                let on_disk = on_disk.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let ticket = group.ticket();
                        group
                            .wait(ticket, || {
                                let covered = group.issued();
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                on_disk.fetch_max(covered, Ordering::SeqCst);
                                Ok::<u64, ()>(covered)
                            })
                            .unwrap();
                        assert!(on_disk.load(Ordering::SeqCst) >= ticket);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(group.issued(), 800);
        assert!(
            group.syncs() < 800,
            "{} syncs for 800 commits: none shared",
            group.syncs()
        );
    }

    /// Counts wake-ups: the waker a task hands to [`GroupSync::poll`].
    struct Wakes(AtomicU64);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task that polls while another caller's sync runs is `Pending`,
    /// woken when that sync ends, and `Ready` only after a sync that
    /// covers its own ticket: the running one covered only what was
    /// issued when it started, so the task leads the next one itself.
    #[test]
    fn a_polling_task_waits_for_the_running_sync_and_then_for_its_own() {
        let group = Arc::new(GroupSync::new());
        let first = group.ticket();
        let (started, in_sync) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let leader = {
            let group = group.clone();
            std::thread::spawn(move || {
                group.wait(first, || {
                    let covered = group.issued();
                    started.send(()).unwrap();
                    released.recv().unwrap();
                    Ok::<u64, ()>(covered)
                })
            })
        };
        in_sync.recv().unwrap();
        let second = group.ticket();
        let wakes = Arc::new(Wakes(AtomicU64::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let sync = || Ok::<u64, ()>(group.issued());
        assert!(group.poll(second, &mut cx, sync).is_pending());
        // Polled twice while the same sync runs: one waker, one wake-up.
        assert!(group.poll(second, &mut cx, sync).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), Ok(()));
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "woken once, when it ended"
        );
        assert_eq!(group.syncs(), 1);
        assert_eq!(
            group.poll(second, &mut cx, sync),
            std::task::Poll::Ready(Ok(()))
        );
        assert_eq!(group.syncs(), 2, "the task led a sync of its own");
        // Already covered: ready without another sync.
        assert_eq!(
            group.poll(first, &mut cx, sync),
            std::task::Poll::Ready(Ok(()))
        );
        assert_eq!(group.syncs(), 2);
    }

    /// A task whose sync fails gets the error, and one that waited for a
    /// sync that failed is woken and syncs again itself: neither is
    /// acknowledged by a failed sync.
    #[test]
    fn a_failed_sync_acknowledges_no_polling_task() {
        let group = GroupSync::new();
        let ticket = group.ticket();
        let wakes = Arc::new(Wakes(AtomicU64::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert_eq!(
            group.poll(ticket, &mut cx, || Err::<u64, _>("no space left on device")),
            std::task::Poll::Ready(Err("no space left on device"))
        );
        assert_eq!(
            group.poll(ticket, &mut cx, || Ok::<u64, &str>(group.issued())),
            std::task::Poll::Ready(Ok(()))
        );
        assert_eq!(group.syncs(), 2);
    }

    #[test]
    fn a_failed_sync_acknowledges_nothing_and_the_next_commit_syncs_again() {
        let group = GroupSync::new();
        let fail = AtomicBool::new(true);
        let first = group.ticket();
        let sync = || {
            if fail.load(Ordering::SeqCst) {
                Err("the disk refused the write")
            } else {
                Ok(group.issued())
            }
        };
        assert_eq!(group.wait(first, sync), Err("the disk refused the write"));
        fail.store(false, Ordering::SeqCst);
        let second = group.ticket();
        assert_eq!(group.wait(first, sync), Ok(()));
        assert_eq!(group.wait(second, sync), Ok(()));
        assert_eq!(group.syncs(), 2);
    }
}
