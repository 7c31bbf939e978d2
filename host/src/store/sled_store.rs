//! The embedded run journal on sled.
//!
//! Trees: `runs` (run id → [`RunRecord`]), `steps` (`<run id>/<index>` →
//! [`StepRecord`]), `blobs` (digest → bytes), `logs`
//! (`<run id>/<index>/<attempt>` → [`AttemptLogs`]) and `meta` (the format
//! marker). Records are JSON. Indexes are zero-padded so that a prefix scan
//! returns steps and attempts in order.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{AttemptLogs, Commit, RunRecord, RunStore, StepRecord, StoreError};

/// The value of `meta/format`; bump it when records change incompatibly.
const FORMAT: &str = "plait-journal/1";

/// A [`RunStore`] in an embedded sled database.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    steps: sled::Tree,
    blobs: sled::Tree,
    logs: sled::Tree,
}

impl SledStore {
    /// Opens (creating if needed) the journal in directory `path`.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let database = |source| StoreError::Database {
            path: path.to_owned(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
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
        Ok(SledStore {
            runs: db.open_tree("runs").map_err(database)?,
            steps: db.open_tree("steps").map_err(database)?,
            blobs: db.open_tree("blobs").map_err(database)?,
            logs: db.open_tree("logs").map_err(database)?,
            path: path.to_owned(),
            db,
        })
    }

    fn database(&self, source: sled::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }
}

fn step_key(run_id: &str, index: u32) -> String {
    format!("{run_id}/{index:08}")
}

fn logs_key(run_id: &str, index: u32, attempt: u32) -> String {
    format!("{run_id}/{index:08}/{attempt:08}")
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
        // Encode outside the transaction closure, which sled may re-run.
        let run = commit.run.map(|run| (run.id.clone(), encode(run)));
        let steps: Vec<(String, Vec<u8>)> = commit
            .steps
            .iter()
            .map(|step| (step_key(&step.run_id, step.index), encode(step)))
            .collect();
        let logs = commit.logs.map(|(run_id, index, attempt, logs)| {
            let record = AttemptLogs {
                attempt,
                logs: logs.clone(),
            };
            (logs_key(run_id, index, attempt), encode(&record))
        });
        let result: Result<(), TransactionError<()>> =
            (&self.runs, &self.steps, &self.blobs, &self.logs).transaction(
                |(runs, steps_tree, blobs, logs_tree)| {
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
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(error)) => return Err(self.database(error)),
            Err(TransactionError::Abort(())) => unreachable!("the commit transaction never aborts"),
        }
        // Durable before the caller moves on: the next step must never start
        // on an output that a power cut could take back.
        self.db.flush().map_err(|error| self.database(error))?;
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

    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .blobs
            .get(digest)
            .map_err(|error| self.database(error))?
            .map(|bytes| bytes.to_vec()))
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
