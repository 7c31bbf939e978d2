//! Watched-folder triggers: a file dropped into a folder starts one run.
//!
//! The folder is listed every second. A file is taken once its size and
//! modification time are the same on two listings in a row, so a file
//! still being copied is not read half-written (writers that can should
//! still write under a dot-name and rename, which is atomic). Dot-files
//! and `*.tmp`, `*.part` and `*.crdownload` names are never taken; neither
//! are subfolders or symbolic links (a link could hand the workflow any
//! file this host can read).
//!
//! A taken file becomes input blob `blob` of a run keyed
//! `watch:NAME:<content digest>:<file name>`, and trigger mark
//! `watch/NAME/<file name>/<content digest>` records it in the store. The
//! mark outlives the run's garbage collection, so the same file (same name,
//! same bytes) never starts a second run, across restarts too; a file
//! whose bytes change is a new document. With `move_to`, the file is moved
//! there once its run is recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{StartError, Starter, Trigger, WatchedDir};
use plait::store::TriggerMark;

/// How often the folder is listed.
const POLL: Duration = Duration::from_secs(1);

/// Suffixes of files being written by common tools.
const PARTIAL: [&str; 3] = [".tmp", ".part", ".crdownload"];

/// A file of the folder, as last listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    len: u64,
    modified: Option<SystemTime>,
}

/// What is known of a file.
struct Seen {
    listed: Listed,
    /// Handled (started, started before, or refused for good) as it is;
    /// it is looked at again only if it changes.
    done: bool,
}

/// Whether the folder trigger takes file `name` at all.
pub fn wanted(name: &str, watched: &WatchedDir) -> bool {
    if name.starts_with('.') || PARTIAL.iter().any(|suffix| name.ends_with(suffix)) {
        return false;
    }
    match &watched.extensions {
        None => true,
        Some(extensions) => Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e))),
    }
}

/// The idempotency key of file `name` with content digest `digest`
/// (`sha256:<hex>`): within the 255 bytes a key may have, the name itself
/// unless it is too long or holds control characters.
pub fn file_key(trigger: &str, name: &str, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    let key = format!("watch:{trigger}:{hex}:{name}");
    if key.len() <= plait::executor::MAX_KEY_LEN && !name.chars().any(char::is_control) {
        key
    } else {
        let name_digest = plait::digest::digest(name.as_bytes());
        format!(
            "watch:{trigger}:{hex}:{}",
            &name_digest.trim_start_matches("sha256:")[..32]
        )
    }
}

/// Watches the folder until the server stops.
pub async fn run(trigger: Trigger, watched: WatchedDir, starter: Arc<Starter>) {
    tracing::info!(target: "plait::trigger", trigger = %trigger.name, dir = %watched.dir.display(), "watching the folder");
    let mut seen: HashMap<String, Seen> = HashMap::new();
    // A folder-level problem (the folder gone, the workflow missing) is
    // said once, then again only when it changes.
    let mut said: Option<String> = None;
    loop {
        let listing = match list(&watched).await {
            Ok(listing) => listing,
            Err(error) => {
                let message = format!(
                    "cannot list the watched folder `{}`: {error}",
                    watched.dir.display()
                );
                if said.as_ref() != Some(&message) {
                    tracing::error!(target: "plait::trigger", trigger = %trigger.name, "{message}");
                    said = Some(message);
                }
                if !starter.sleep(POLL).await {
                    return;
                }
                continue;
            }
        };
        seen.retain(|name, _| listing.contains_key(name));
        let mut names: Vec<&String> = listing.keys().collect();
        // Oldest name first is as good an order as any, and deterministic.
        names.sort();
        for name in names {
            let listed = &listing[name];
            match seen.get_mut(name) {
                Some(known) if known.listed == *listed => {
                    if known.done {
                        continue;
                    }
                }
                _ => {
                    // New or changed: taken once it holds still.
                    seen.insert(
                        name.clone(),
                        Seen {
                            listed: listed.clone(),
                            done: false,
                        },
                    );
                    continue;
                }
            }
            match take(&trigger, &watched, &starter, name, listed.len).await {
                Taken::Done => {
                    said = None;
                    if let Some(known) = seen.get_mut(name) {
                        known.done = true;
                    }
                }
                Taken::Later => {}
                Taken::Blocked(message) => {
                    if said.as_ref() != Some(&message) {
                        tracing::error!(target: "plait::trigger", trigger = %trigger.name, "{message}; the files wait");
                        said = Some(message);
                    }
                    break;
                }
                Taken::Stopping => return,
            }
        }
        if !starter.sleep(POLL).await {
            return;
        }
    }
}

/// The folder's candidate files: regular files, not links, that
/// [`wanted`] takes.
async fn list(watched: &WatchedDir) -> std::io::Result<HashMap<String, Listed>> {
    let watched = watched.clone();
    tokio::task::spawn_blocking(move || {
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(&watched.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !wanted(&name, &watched) {
                continue;
            }
            // `DirEntry::metadata` does not follow links.
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if !metadata.file_type().is_file() {
                continue;
            }
            files.insert(
                name,
                Listed {
                    len: metadata.len(),
                    modified: metadata.modified().ok(),
                },
            );
        }
        Ok(files)
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join)))
}

/// What became of a file.
enum Taken {
    /// Started, started before, or refused until it changes.
    Done,
    /// Try again at the next listing (no room, or it went away).
    Later,
    /// Nothing in the folder can start now, for this reason.
    Blocked(String),
    /// The server stops.
    Stopping,
}

async fn take(
    trigger: &Trigger,
    watched: &WatchedDir,
    starter: &Starter,
    name: &str,
    len: u64,
) -> Taken {
    let path = watched.dir.join(name);
    if len > starter.max_input {
        tracing::error!(target: "plait::trigger", trigger = %trigger.name, file = %path.display(), "the file weighs {}, over this host's limit of {} (`[runtime] max_input`); it is left alone until it changes", plait::limits::format_size(len), plait::limits::format_size(starter.max_input));
        return Taken::Done;
    }
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || plait::files::read(&path, plait::files::Kind::Input))
            .await
    };
    let data = match read {
        Ok(Ok(data)) => data,
        // Gone or replaced since the listing: the next one says.
        _ => return Taken::Later,
    };
    let digest = plait::digest::digest(&data);
    let mark_key = format!("watch/{}/{name}/{digest}", trigger.name);
    let key = file_key(&trigger.name, name, &digest);
    match starter.store.trigger_mark(&mark_key) {
        Ok(Some(_)) => {
            finish(trigger, watched, &path, &digest);
            return Taken::Done;
        }
        Ok(None) => {}
        Err(error) => return Taken::Blocked(format!("reading the store failed: {error}")),
    }
    // Started before the mark was written (a crash in between): the key
    // says so, even if the workflow has changed since.
    let earlier = match starter.store.idempotency(&key) {
        Ok(record) => record.map(|record| record.run_id),
        Err(error) => return Taken::Blocked(format!("reading the store failed: {error}")),
    };
    let run_id = match earlier {
        Some(run_id) => run_id,
        None => {
            let blob = plait::step::Blob {
                name: watched.blob.clone(),
                media_type: plait::step::media_type_of(&path).to_owned(),
                data,
            };
            match starter
                .start(trigger, trigger.input.clone(), vec![blob], &key)
                .await
            {
                Ok((run, _)) => {
                    tracing::info!(target: "plait::trigger", trigger = %trigger.name, file = %path.display(), run_id = %run.id, "file started a run");
                    run.id
                }
                Err(StartError::NoRoom(super::NoRoom::Closing)) => return Taken::Stopping,
                Err(StartError::NoRoom(_)) => return Taken::Later,
                Err(StartError::Workflow(message)) => return Taken::Blocked(message),
                Err(StartError::Executor(plait::executor::ExecutorError::Store(error))) => {
                    return Taken::Blocked(format!("the store failed: {error}"));
                }
                Err(StartError::Executor(error)) => {
                    // The input does not fit the workflow: the same bytes
                    // never will, so the file waits for a change (or a
                    // restart, after the workflow is fixed).
                    tracing::error!(target: "plait::trigger", trigger = %trigger.name, file = %path.display(), error = %error, "the file cannot start a run; it is left alone until it changes");
                    return Taken::Done;
                }
            }
        }
    };
    let mark = TriggerMark {
        at_ms: plait::clock::now_ms(),
        until_ms: None,
        run_id: Some(run_id),
    };
    if let Err(error) = starter.store.put_trigger_mark(&mark_key, &mark) {
        // The key still holds: the file cannot start a second run.
        tracing::error!(target: "plait::trigger", trigger = %trigger.name, file = %path.display(), error = %error, "recording the file's run failed");
    }
    finish(trigger, watched, &path, &digest);
    Taken::Done
}

/// Moves a started file to `move_to`, if set; a name taken there gets the
/// digest's first characters added.
fn finish(trigger: &Trigger, watched: &WatchedDir, path: &Path, digest: &str) {
    let Some(to) = &watched.move_to else {
        return;
    };
    let name = path.file_name().unwrap_or_default();
    let mut target: PathBuf = to.join(name);
    if target.exists() {
        let short = &digest.trim_start_matches("sha256:")[..12];
        let mut renamed = name.to_owned();
        renamed.push(format!(".{short}"));
        target = to.join(renamed);
    }
    if let Err(error) = std::fs::rename(path, &target) {
        tracing::warn!(target: "plait::trigger", trigger = %trigger.name, file = %path.display(), to = %target.display(), error = %error, "moving the started file failed; it stays (it will not start again)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(extensions: Option<&[&str]>) -> WatchedDir {
        WatchedDir {
            dir: PathBuf::from("/srv/inbox"),
            blob: "document".to_owned(),
            extensions: extensions.map(|e| e.iter().map(|x| (*x).to_owned()).collect()),
            move_to: None,
        }
    }

    #[test]
    fn partial_hidden_and_other_extensions_are_not_taken() {
        let any = watched(None);
        assert!(wanted("invoice.pdf", &any));
        assert!(wanted("README", &any));
        assert!(!wanted(".invoice.pdf", &any));
        assert!(!wanted("invoice.pdf.part", &any));
        assert!(!wanted("invoice.tmp", &any));
        assert!(!wanted("invoice.pdf.crdownload", &any));
        let documents = watched(Some(&["pdf", "png"]));
        assert!(wanted("scan.PNG", &documents));
        assert!(!wanted("notes.txt", &documents));
        assert!(!wanted("pdf", &documents));
    }

    #[test]
    fn keys_fit_and_name_the_file_when_they_can() {
        let digest = plait::digest::digest(b"bytes");
        let key = file_key("inbox", "invoice.pdf", &digest);
        assert_eq!(key, format!("watch:inbox:{}:invoice.pdf", &digest[7..]));
        let long = "x".repeat(250);
        let key = file_key("inbox", &long, &digest);
        assert!(key.len() <= plait::executor::MAX_KEY_LEN, "{key}");
        assert_ne!(key, file_key("inbox", &"y".repeat(250), &digest));
        assert!(!file_key("inbox", "a\nb", &digest).contains('\n'));
    }
}
