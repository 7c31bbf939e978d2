//! `archive`: a Plait step that files a document and a JSON metadata record
//! into a directory the operator grants, exactly once per run and step.
//!
//! Input: the blob `document` (required) and an optional document
//! `{"label", "confidence", "text", "metadata"}`, as `classify` and `ocr`
//! produce them. Output: where everything went (see [`Archived`]).
//!
//! Layout of the archive directory (config `dir`, default `/archive`, the
//! path the workflow grants):
//!
//! ```text
//! documents/<sha256>.<ext>   the document, named by its content
//! records/<key>.json         one metadata record per run and step
//! tmp/                       files being written, renamed into place
//! ```
//!
//! **Atomic**: every file is written under `tmp/` and renamed into place,
//! so a reader never sees half a file. **Content-addressed**: the same
//! document archived twice is stored once. **Exactly once**: `<key>` is
//! derived from the invocation's idempotency key, which is the same for
//! every attempt of this step in this run (retries and resumes after a
//! crash included). An attempt that finds its record already written
//! returns it (with `already_archived: true`) instead of writing another.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The input blob holding the document.
pub const DOCUMENT_BLOB: &str = "document";

/// Where the archive is mounted when config `dir` is not set.
pub const DEFAULT_DIR: &str = "/archive";

/// The `archive` step.
pub struct Archive;

/// The input document; every field is optional.
#[derive(Debug, Default, Deserialize)]
pub struct ArchiveInput {
    /// The document's class, for example from `classify`.
    #[serde(default)]
    pub label: Option<String>,
    /// How sure the classifier was, 0 to 1.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// The document's text, for example from `ocr`; only its digest and
    /// length are recorded.
    #[serde(default)]
    pub text: Option<String>,
    /// Anything else to keep in the record.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// The metadata record written to `records/<key>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The document's path inside the archive directory.
    pub document: String,
    /// `sha256:<hex>` of the document.
    pub digest: String,
    /// The document's media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The label, if the input had one.
    pub label: Option<String>,
    /// The confidence, if the input had one.
    pub confidence: Option<f64>,
    /// `sha256:<hex>` of the text, if the input had one.
    pub text_digest: Option<String>,
    /// Characters of text, if the input had one.
    pub text_chars: Option<usize>,
    /// Extra metadata from the input.
    pub metadata: Option<Value>,
    /// The run that archived it.
    pub run_id: String,
    /// The step that archived it.
    pub step_id: String,
    /// When it was archived, UTC, RFC 3339.
    pub archived_at: String,
}

/// The output document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archived {
    /// The document's path, as the step sees it (under config `dir`).
    pub location: String,
    /// The record's path, as the step sees it.
    pub record_location: String,
    /// The record itself.
    pub record: Record,
    /// True when an earlier attempt of this step had already archived it.
    pub already_archived: bool,
}

impl Step for Archive {
    type Input = ArchiveInput;
    type Output = Archived;

    fn info() -> StepInfo {
        StepInfo::new("archive", env!("CARGO_PKG_VERSION"))
            .description(
                "Files the `document` blob and a metadata record into a granted directory, \
                 content-addressed, atomically and exactly once per run and step.",
            )
            .config(
                "dir",
                "The archive directory as the step sees it (default `/archive`).",
                false,
            )
            .directory(DEFAULT_DIR)
    }

    fn run(ctx: &Context, input: Input<ArchiveInput>) -> Result<Output<Archived>, StepError> {
        let dir = PathBuf::from(ctx.config("dir").unwrap_or_else(|| DEFAULT_DIR.to_owned()));
        let document = input.blobs.require(DOCUMENT_BLOB)?;
        let invocation = ctx.invocation();
        let key = record_key(&invocation.idempotency_key);
        let archived = archive(
            &dir,
            &key,
            &document.data,
            &document.media_type,
            input.data,
            &invocation.run_id,
            &invocation.step_id,
        )?;
        ctx.info(if archived.already_archived {
            "already archived by an earlier attempt"
        } else {
            "archived"
        });
        Ok(archived.into())
    }
}

/// The record's file name for an idempotency key: its SHA-256, so any key
/// is a safe file name.
pub fn record_key(idempotency_key: &str) -> String {
    hex(&Sha256::digest(idempotency_key.as_bytes()))
}

/// Files `data` and its record under `dir`; see the crate docs.
///
/// # Errors
///
/// A retryable error when the directory cannot be written (it may be a
/// transient condition, a full disk), naming the path; a fatal one when it
/// is missing (the workflow did not grant it).
pub fn archive(
    dir: &Path,
    key: &str,
    data: &[u8],
    media_type: &str,
    input: ArchiveInput,
    run_id: &str,
    step_id: &str,
) -> Result<Archived, StepError> {
    if !dir.is_dir() {
        return Err(StepError::fatal(format!(
            "the archive directory `{}` is not there: grant it to this step \
             (`grants: {{ dirs: {{ {}: {{ path: ./archive, mode: rw }} }} }}`)",
            dir.display(),
            dir.display()
        )));
    }
    let record_name = format!("records/{key}.json");
    let record_path = dir.join(&record_name);
    let location = |name: &str| dir.join(name).display().to_string();
    if let Ok(text) = fs::read_to_string(&record_path) {
        let record: Record = serde_json::from_str(&text).map_err(|error| {
            StepError::fatal(format!(
                "the archive record `{}` exists but is not a record: {error}",
                record_path.display()
            ))
        })?;
        return Ok(Archived {
            location: location(&record.document),
            record_location: location(&record_name),
            record,
            already_archived: true,
        });
    }
    for sub in ["documents", "records", "tmp"] {
        fs::create_dir_all(dir.join(sub)).map_err(|error| io_error(&dir.join(sub), error))?;
    }
    // Leftovers of an attempt that died mid-write carry this key.
    if let Ok(entries) = fs::read_dir(dir.join("tmp")) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(key) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    let digest = hex(&Sha256::digest(data));
    let document = format!("documents/{digest}.{}", extension(media_type));
    if !dir.join(&document).exists() {
        write_atomically(dir, key, "document", &document, data)?;
    }
    let record = Record {
        document: document.clone(),
        digest: format!("sha256:{digest}"),
        media_type: media_type.to_owned(),
        size: data.len() as u64,
        label: input.label,
        confidence: input.confidence,
        text_digest: input
            .text
            .as_ref()
            .map(|text| format!("sha256:{}", hex(&Sha256::digest(text.as_bytes())))),
        text_chars: input.text.as_ref().map(|text| text.chars().count()),
        metadata: input.metadata,
        run_id: run_id.to_owned(),
        step_id: step_id.to_owned(),
        archived_at: rfc3339_now(),
    };
    let mut json = serde_json::to_vec_pretty(&record)
        .map_err(|error| StepError::fatal(format!("encoding the record: {error}")))?;
    json.push(b'\n');
    write_atomically(dir, key, "record", &record_name, &json)?;
    Ok(Archived {
        location: location(&document),
        record_location: location(&record_name),
        record,
        already_archived: false,
    })
}

/// Writes `data` to `tmp/<key>.<what>` and renames it to `name`.
fn write_atomically(
    dir: &Path,
    key: &str,
    what: &str,
    name: &str,
    data: &[u8],
) -> Result<(), StepError> {
    let temp = dir.join("tmp").join(format!("{key}.{what}"));
    let mut file = fs::File::create(&temp).map_err(|error| io_error(&temp, error))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(&temp, error))?;
    drop(file);
    let target = dir.join(name);
    fs::rename(&temp, &target).map_err(|error| io_error(&target, error))
}

fn io_error(path: &Path, error: std::io::Error) -> StepError {
    let message = format!("could not write `{}`: {error}", path.display());
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        StepError::fatal(format!(
            "{message}; the archive directory must be granted read-write (`mode: rw`)"
        ))
    } else {
        StepError::retryable(message)
    }
}

/// A file extension for a media type, so an archived file opens with the
/// right program.
pub fn extension(media_type: &str) -> &'static str {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/tiff" => "tiff",
        "text/plain" => "txt",
        "message/rfc822" => "eml",
        "application/json" => "json",
        _ => "bin",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current UTC time as RFC 3339 with seconds, from the wall clock.
fn rfc3339_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(seconds)
}

/// `seconds` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian calendar; Howard Hinnant's days-to-civil algorithm).
pub fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

plait_sdk::export_step!(Archive);

#[cfg(test)]
mod tests {
    use plait_sdk::Blob;
    use plait_sdk::testing::{TestContext, run};
    use serde_json::json;

    use super::*;

    fn context(dir: &Path, key: &str, attempt: u32) -> TestContext {
        TestContext::new()
            .config("dir", dir.display().to_string())
            .run_id("run-1")
            .step_id("archive")
            .idempotency_key(key)
            .attempt(attempt)
    }

    fn document() -> Blob {
        Blob::new(
            DOCUMENT_BLOB,
            "application/pdf",
            b"%PDF-1.4 invoice".to_vec(),
        )
    }

    #[test]
    fn files_the_document_and_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), "run-1/archive", 1).build();
        let input = json!({"label": "invoice", "confidence": 0.93, "text": "Invoice 42"});
        let (output, _) = run::<Archive>(&ctx, input, vec![document()]).unwrap();
        let archived: Archived = serde_json::from_value(output).unwrap();
        assert!(!archived.already_archived);
        let digest = hex(&Sha256::digest(b"%PDF-1.4 invoice"));
        assert_eq!(archived.record.document, format!("documents/{digest}.pdf"));
        assert_eq!(
            fs::read(dir.path().join(&archived.record.document)).unwrap(),
            b"%PDF-1.4 invoice"
        );
        let stored: Record =
            serde_json::from_str(&fs::read_to_string(&archived.record_location).unwrap()).unwrap();
        assert_eq!(stored, archived.record);
        assert_eq!(stored.label.as_deref(), Some("invoice"));
        assert_eq!(stored.text_chars, Some(10));
        assert_eq!(stored.run_id, "run-1");
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_retry_with_the_same_key_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let first = run::<Archive>(
            &context(dir.path(), "run-1/archive", 1).build(),
            json!({"label": "invoice"}),
            vec![document()],
        )
        .unwrap()
        .0;
        // A leftover temp file of a crashed attempt is cleaned up.
        let key = record_key("run-1/archive");
        fs::write(dir.path().join("tmp").join(format!("{key}.record")), "half").unwrap();
        let second = run::<Archive>(
            &context(dir.path(), "run-1/archive", 2).build(),
            json!({"label": "changed"}),
            vec![document()],
        )
        .unwrap()
        .0;
        assert_eq!(second["already_archived"], true);
        assert_eq!(second["record"], first["record"]);
        assert_eq!(fs::read_dir(dir.path().join("records")).unwrap().count(), 1);
        // Another run archiving the same document adds a record, not a copy.
        run::<Archive>(
            &context(dir.path(), "run-2/archive", 1).build(),
            json!({}),
            vec![document()],
        )
        .unwrap();
        assert_eq!(fs::read_dir(dir.path().join("records")).unwrap().count(), 2);
        assert_eq!(
            fs::read_dir(dir.path().join("documents")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_missing_directory_or_document_is_fatal_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = run::<Archive>(
            &context(&missing, "k", 1).build(),
            json!({}),
            vec![document()],
        )
        .unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error.message().contains("grant it to this step"),
            "{}",
            error.message()
        );
        let error =
            run::<Archive>(&context(dir.path(), "k", 1).build(), json!({}), vec![]).unwrap_err();
        assert!(error.message().contains("document"), "{}", error.message());
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
