//! Garbage collection (`plait gc`): finished runs past the retention period
//! go, with their steps, logs, signals and idempotency keys; then every blob
//! no remaining record refers to. A run that has not finished is never
//! collected, nor anything it refers to.

use std::collections::BTreeSet;

use serde::Serialize;

use super::sled_store::SledStore;
use super::{RunStore, StoreError};
use crate::ids::RunId;

/// What a collection removed (or would remove, in a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Finished runs removed.
    pub runs: u64,
    /// Step cache entries removed (older than the retention period).
    pub cache_entries: u64,
    /// Blobs removed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Runs kept.
    pub kept_runs: u64,
    /// Blobs kept.
    pub kept_blobs: u64,
    /// The ids of the runs removed (or that would be, in a dry run).
    #[serde(skip)]
    pub removed_run_ids: Vec<RunId>,
}

/// How often `plait run` collects on its own: at most once a day.
pub const AUTO_GC_INTERVAL_MS: u64 = 24 * 3600 * 1000;

impl SledStore {
    /// Collects as [`SledStore::gc`] when the last collection is more than
    /// [`AUTO_GC_INTERVAL_MS`] ago, before anything runs in this process.
    /// Returns the report when it collected.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn gc_if_due(
        &self,
        retention_ms: u64,
        now_ms: u64,
    ) -> Result<Option<GcReport>, StoreError> {
        let last = self
            .meta_get("last_gc_ms")?
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(0);
        if now_ms.saturating_sub(last) < AUTO_GC_INTERVAL_MS {
            return Ok(None);
        }
        let report = self.gc(now_ms.saturating_sub(retention_ms), false)?;
        self.meta_set("last_gc_ms", now_ms.to_string().as_bytes())?;
        Ok(Some(report))
    }

    /// Removes finished runs last changed before `cutoff_ms` (ms since the
    /// Unix epoch), cache entries created before it, and every blob no
    /// remaining run, step, item or cache entry refers to. With `dry_run`,
    /// only counts.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn gc(&self, cutoff_ms: u64, dry_run: bool) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut doomed_runs = Vec::new();
        for run in self.runs()? {
            let finished = run.status.is_finished();
            if finished && run.updated_at_ms < cutoff_ms {
                doomed_runs.push(run.id.clone());
                continue;
            }
            report.kept_runs += 1;
            keep.insert(run.workflow.digest.to_string());
            keep.extend(run.input_blobs.iter().map(|b| b.digest.to_string()));
            keep.extend(run.output_blobs.iter().map(|b| b.digest.to_string()));
            for step in self.steps(&run.id)? {
                keep.insert(step.component_digest.clone());
                keep.extend(step.output_blobs.iter().map(|b| b.digest.to_string()));
                for item in &step.items {
                    keep.extend(item.output_blobs.iter().map(|b| b.digest.to_string()));
                }
            }
        }
        let mut doomed_cache = Vec::new();
        for (key, entry) in self.cache_entries()? {
            if entry.created_at_ms < cutoff_ms {
                doomed_cache.push(key);
            } else {
                keep.extend(entry.output_blobs.iter().map(|b| b.digest.to_string()));
            }
        }
        report.runs = doomed_runs.len() as u64;
        report.removed_run_ids = doomed_runs.clone();
        report.cache_entries = doomed_cache.len() as u64;
        let mut doomed_blobs = Vec::new();
        for (digest, size) in self.blob_sizes()? {
            if keep.contains(&digest) {
                report.kept_blobs += 1;
            } else {
                report.blobs += 1;
                report.bytes += size;
                doomed_blobs.push(digest);
            }
        }
        if !dry_run {
            for run_id in &doomed_runs {
                self.delete_run(run_id)?;
            }
            self.delete_cache_entries(&doomed_cache)?;
            self.delete_blobs(&doomed_blobs)?;
            self.flush()?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobRef, Commit, RunRecord, RunStatus, WorkflowRef};

    fn run(id: &str, status: RunStatus, updated_at_ms: u64, blob: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: WorkflowRef {
                name: "w".into(),
                version: "1".into(),
                path: "/w.yaml".into(),
                digest: crate::digest::digest(b"def"),
            },
            status,
            created_at_ms: 0,
            updated_at_ms,
            input: serde_json::json!({}),
            input_blobs: vec![BlobRef {
                name: "doc".into(),
                media_type: "text/plain".into(),
                digest: crate::digest::digest(blob.as_bytes()),
                size: 1,
            }],
            output: None,
            output_blobs: Vec::new(),
            error: None,
            idempotency_key: None,
            deadline_ms: None,
            trace: None,
            started_by: None,
            interruptions: 0,
        }
    }

    #[test]
    fn collects_old_finished_runs_once_a_day_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = run("old", RunStatus::Succeeded, 1_000, "sha256:old");
        let waiting = run("waiting", RunStatus::Waiting, 1_000, "sha256:kept");
        let recent = run("recent", RunStatus::Failed, 9_500, "sha256:recent");
        for record in [&old, &waiting, &recent] {
            store
                .commit(Commit {
                    run: Some(record),
                    blobs: vec![(record.input_blobs[0].digest.as_str(), b"x".as_slice())],
                    ..Commit::default()
                })
                .unwrap();
        }
        store
            .commit(Commit {
                blobs: vec![("sha256:orphan", b"yy".as_slice())],
                ..Commit::default()
            })
            .unwrap();

        let now = AUTO_GC_INTERVAL_MS + 10_000;
        let report = store.gc_if_due(now - 5_000, now).unwrap().unwrap();
        assert_eq!(report.runs, 1);
        assert_eq!(report.blobs, 2, "the old run's blob and the orphan");
        assert_eq!(report.kept_runs, 2);
        assert!(store.run("old").unwrap().is_none());
        assert!(
            store
                .blob(&crate::digest::digest(b"sha256:old"))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .blob(&crate::digest::digest(b"sha256:kept"))
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .blob(&crate::digest::digest(b"sha256:recent"))
                .unwrap()
                .is_some()
        );
        // Not again within a day.
        assert!(store.gc_if_due(0, now + 1).unwrap().is_none());
    }
}
