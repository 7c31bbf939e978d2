//! The store's integrity check (`plait store check`): every record decodes
//! and every blob a record refers to is present with the bytes its digest
//! names, pinned definitions and components included.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{BlobRef, RunStore, StoreError};
use crate::digest::digest;
use crate::errors::error_chain;

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Runs read.
    pub runs: u64,
    /// Step records read.
    pub steps: u64,
    /// Distinct blobs read and hashed.
    pub blobs: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Every problem, in words; empty when the store is sound.
    pub problems: Vec<String>,
}

/// Checks `store`.
///
/// # Errors
/// Only when the store cannot be read at all; damaged records are
/// problems in the report.
pub fn check(store: &dyn RunStore) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    let runs = match store.runs() {
        Ok(runs) => runs,
        Err(error @ StoreError::Corrupt { .. }) => {
            report.problems.push(error_chain(&error));
            return Ok(report);
        }
        Err(error) => return Err(error),
    };
    let mut seen = BTreeSet::new();
    let mut blob =
        |report: &mut CheckReport, what: &str, digest_text: &str| -> Result<(), StoreError> {
            if digest_text.is_empty() || !seen.insert(digest_text.to_owned()) {
                return Ok(());
            }
            match store.blob(digest_text)? {
                None => report
                    .problems
                    .push(format!("{what}: blob {digest_text} is missing")),
                Some(bytes) => {
                    report.blobs += 1;
                    report.bytes += bytes.len() as u64;
                    if digest(&bytes) != digest_text {
                        report.problems.push(format!(
                            "{what}: blob {digest_text} does not match its digest"
                        ));
                    }
                }
            }
            Ok(())
        };
    let refs = |report: &mut CheckReport,
                blob: &mut dyn FnMut(&mut CheckReport, &str, &str) -> Result<(), StoreError>,
                what: &str,
                refs: &[BlobRef]|
     -> Result<(), StoreError> {
        for r in refs {
            blob(report, &format!("{what}, blob `{}`", r.name), &r.digest)?;
        }
        Ok(())
    };
    for run in &runs {
        report.runs += 1;
        let what = format!("run {}", run.id);
        refs(
            &mut report,
            &mut blob,
            &format!("{what} input"),
            &run.input_blobs,
        )?;
        refs(
            &mut report,
            &mut blob,
            &format!("{what} output"),
            &run.output_blobs,
        )?;
        // Runs from before definitions were pinned have none to check.
        if store.has_blob(&run.workflow.digest)? {
            blob(
                &mut report,
                &format!("{what} definition"),
                &run.workflow.digest,
            )?;
        }
        let steps = match store.steps(&run.id) {
            Ok(steps) => steps,
            Err(error @ StoreError::Corrupt { .. }) => {
                report
                    .problems
                    .push(format!("{what}: {}", error_chain(&error)));
                continue;
            }
            Err(error) => return Err(error),
        };
        for step in &steps {
            report.steps += 1;
            let what = format!("{what} step `{}`", step.id);
            refs(&mut report, &mut blob, &what, &step.output_blobs)?;
            for (index, item) in step.items.iter().enumerate() {
                refs(
                    &mut report,
                    &mut blob,
                    &format!("{what} item {index}"),
                    &item.output_blobs,
                )?;
            }
            if store.has_blob(&step.component_digest)? {
                blob(
                    &mut report,
                    &format!("{what} component"),
                    &step.component_digest,
                )?;
            }
            if let Err(error @ StoreError::Corrupt { .. }) = store.logs(&run.id, step.index) {
                report
                    .problems
                    .push(format!("{what} logs: {}", error_chain(&error)));
            }
        }
    }
    Ok(report)
}
