//! The records the journal holds, serialized as JSON.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::ids::RunId;
use crate::step::StepFailure;

/// A blob stored by content, referred to by name within one payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// The name within the payload.
    pub name: String,
    /// The IANA media type.
    pub media_type: String,
    /// `sha256:<hex>` of the bytes: the key in the blob store.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// Which workflow a run executes, pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// The definition's `name`.
    pub name: String,
    /// The definition's `version`.
    pub version: String,
    /// The definition file, absolute.
    pub path: std::path::PathBuf,
    /// `sha256:<hex>` of the definition file.
    pub digest: Digest,
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted and recorded, not started yet: a server starts it when it
    /// has room (after a restart too).
    Queued,
    /// Started and not finished; after a crash, `plait resume` continues it.
    Running,
    /// Nothing is running: the run waits for a signal, a sleep, or a
    /// retry's backoff, durably. `plait resume` (or the signal) continues it.
    Waiting,
    /// Every step succeeded.
    Succeeded,
    /// A step failed; `plait resume` retries it.
    Failed,
    /// Stopped on request (`plait cancel`); final: it is not resumed.
    Cancelled,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended (a failed run may still be resumed).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id (a UUIDv7, so ids sort by start time).
    pub id: RunId,
    /// The workflow it runs.
    pub workflow: WorkflowRef,
    /// Its state.
    pub status: RunStatus,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// The workflow input.
    pub input: serde_json::Value,
    /// The workflow input's blobs.
    pub input_blobs: Vec<BlobRef>,
    /// The workflow output, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The output's blobs, once succeeded.
    #[serde(default)]
    pub output_blobs: Vec<BlobRef>,
    /// Why it failed, once failed.
    pub error: Option<String>,
    /// The idempotency key it was started with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When the run's `timeout` passes, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The run's trace: every process that works on the run puts its spans
    /// under this root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::RunTrace>,
    /// Who started the run (see [`AuditRecord::actor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// How many times in a row a host took the run over after the host
    /// running it died with one of its attempts in flight: what stops a
    /// run that kills its host from doing so on every recovery (see
    /// `Executor::with_max_interruptions`). An attempt that finishes in
    /// between, or a retry of the failed run, starts the count again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interruptions: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// The state of one step in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// An attempt started and has not finished (or the host died in it).
    Running,
    /// Finished with an output; never executed again.
    Succeeded,
    /// The last attempt failed. With `on_error: continue` the run goes on
    /// and the step's output is `{"error": ...}`.
    Failed,
    /// Its `if:` was false: it did not run.
    Skipped,
    /// Paused durably until `wake_at_ms`: a retry's backoff, a `sleep`, or
    /// a `wait` for a signal.
    Waiting,
    /// It failed and its fallback step succeeded; its output is the
    /// fallback's.
    Recovered,
}

impl StepStatus {
    /// The lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Waiting => "waiting",
            StepStatus::Recovered => "recovered",
        }
    }
}

/// One step of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: RunId,
    /// Position in the definition, from 0.
    pub index: u32,
    /// The step id.
    pub id: String,
    /// Its state.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Digest of the component it runs.
    pub component_digest: String,
    /// The name its component declares (`describe()`); none for a built-in
    /// step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// When the latest attempt started.
    pub started_at_ms: Option<u64>,
    /// When it finished.
    pub finished_at_ms: Option<u64>,
    /// Wall time of the latest attempt.
    pub duration_ms: Option<u64>,
    /// The output document, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The output blobs, once succeeded.
    #[serde(default)]
    pub output_blobs: Vec<BlobRef>,
    /// The latest failure.
    pub error: Option<StepFailure>,
    /// Fuel (wasmtime instruction units) the latest attempt consumed, when
    /// the engine meters fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
    /// When a `waiting` step goes on: the end of a backoff or a sleep, or a
    /// wait's timeout. Durable, so a restart resumes the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<u64>,
    /// A `for_each` step's items, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemRecord>,
    /// Every finished attempt, oldest first: when it ran and how it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
    /// Set when the output was reused from the step cache, not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<CacheHit>,
}

impl StepRecord {
    /// Step `index` (`id`) of run `run_id` as a new run records it:
    /// pending, no attempt yet, running `component_digest` (whose
    /// `describe()` name is `component`, none for a built-in step).
    #[must_use]
    pub fn pending(
        run_id: &RunId,
        index: u32,
        id: &str,
        component_digest: &str,
        component: Option<String>,
    ) -> StepRecord {
        StepRecord {
            run_id: run_id.clone(),
            index,
            id: id.to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            component_digest: component_digest.to_owned(),
            component,
            started_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            output: None,
            output_blobs: Vec::new(),
            error: None,
            fuel_consumed: None,
            wake_at_ms: None,
            items: Vec::new(),
            history: Vec::new(),
            cache_hit: None,
        }
    }

    /// How many of its attempts were in flight (the step itself, or each
    /// running item of a fan-out): what a host that stopped here left
    /// interrupted.
    #[must_use]
    pub fn attempts_in_flight(&self) -> usize {
        usize::from(self.status == StepStatus::Running && self.items.is_empty())
            + self
                .items
                .iter()
                .filter(|item| item.status == StepStatus::Running)
                .count()
    }
}

/// One finished attempt of a step (or of an item of a fan-out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number.
    pub attempt: u32,
    /// The item of a `for_each` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// Why it failed; `None` when it succeeded (or was interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepFailure>,
    /// The host died during the attempt: it neither succeeded nor failed,
    /// and `finished_at_ms` is when the next host found it. The step then
    /// runs again with the next attempt number.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// One item of a `for_each` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The item's value.
    pub value: serde_json::Value,
    /// Its state: `pending`, `running`, `waiting` (backoff), `succeeded`,
    /// `failed`.
    pub status: StepStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Its output once succeeded.
    pub output: Option<serde_json::Value>,
    /// Its blobs once succeeded.
    #[serde(default)]
    pub output_blobs: Vec<BlobRef>,
    /// The latest failure.
    pub error: Option<StepFailure>,
    /// The end of its backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<u64>,
    /// Wall time of its latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Set when the output was reused from the step cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<CacheHit>,
}

/// A request to cancel a run: its own message, not data for a step.
///
/// On disk it keeps the encoding older journals hold (a [`Signal`] under the
/// reserved step id [`Signal::CANCEL`], which no step id can take), so a
/// journal written before this type existed reads the same;
/// [`CancelRequest::to_signal`] and [`CancelRequest::from_signal`] are that
/// encoding and nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelRequest {
    /// The run.
    pub run_id: RunId,
    /// Why, if the requester said.
    pub reason: Option<String>,
    /// When it was asked, ms since the Unix epoch.
    pub requested_at_ms: u64,
    /// Who asked (see [`AuditRecord::actor`]).
    pub requested_by: Option<String>,
}

impl CancelRequest {
    /// The run's error once this request cancelled it.
    #[must_use]
    pub fn message(&self) -> String {
        let by = self.requested_by.as_deref().unwrap_or("unknown");
        match &self.reason {
            Some(reason) => format!("cancelled by {by}: {reason}"),
            None => format!("cancelled by {by}"),
        }
    }

    /// The request as the journal keeps it.
    #[must_use]
    pub fn to_signal(&self) -> Signal {
        Signal {
            run_id: self.run_id.clone(),
            step_id: Signal::CANCEL.to_owned(),
            data: match &self.reason {
                Some(reason) => serde_json::json!({ "reason": reason }),
                None => serde_json::json!({}),
            },
            sent_at_ms: self.requested_at_ms,
            sent_by: self.requested_by.clone(),
        }
    }

    /// The cancel request a stored signal holds; `None` for a `wait`
    /// step's data.
    #[must_use]
    pub fn from_signal(signal: &Signal) -> Option<CancelRequest> {
        signal.is_cancel().then(|| CancelRequest {
            run_id: signal.run_id.clone(),
            reason: signal
                .data
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            requested_at_ms: signal.sent_at_ms,
            requested_by: signal.sent_by.clone(),
        })
    }
}

/// Data delivered to a `wait` step (`plait signal RUN STEP --data JSON`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The run.
    pub run_id: RunId,
    /// The `wait` step.
    pub step_id: String,
    /// The step's output.
    pub data: serde_json::Value,
    /// When it was sent, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Who sent it (see [`AuditRecord::actor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<String>,
}

impl Signal {
    /// The step id under which a run's cancel request is kept with its
    /// signals (no step id can contain `!`).
    pub const CANCEL: &'static str = "!cancel";

    /// Whether this is a cancel request rather than a `wait` step's data.
    pub fn is_cancel(&self) -> bool {
        self.step_id == Signal::CANCEL
    }

    /// The audit log entry of this signal's delivery.
    pub fn audit(&self) -> AuditRecord {
        let (action, detail) = if self.is_cancel() {
            (AuditAction::RunCancel, self.data.clone())
        } else {
            (
                AuditAction::RunSignal,
                serde_json::json!({ "step": self.step_id }),
            )
        };
        AuditRecord {
            at_ms: self.sent_at_ms,
            actor: self.sent_by.clone().unwrap_or_else(|| "unknown".to_owned()),
            action,
            run_id: Some(self.run_id.clone()),
            workflow: None,
            detail,
        }
    }
}

/// A run started with an idempotency key (`plait run --idempotency-key`):
/// the same key and request give back this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The run the key started.
    pub run_id: RunId,
    /// `sha256:<hex>` of the request: the workflow's digest, the input
    /// (canonical JSON) and the input blobs' names and digests.
    pub request_digest: Digest,
    /// When the key was first used, ms since the Unix epoch.
    pub created_at_ms: u64,
}

/// A step output kept for reuse across runs (`cache:` on a step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The output document.
    pub output: serde_json::Value,
    /// The output blobs (by digest, kept in the blob store).
    pub output_blobs: Vec<BlobRef>,
    /// The run and step that computed it.
    pub run_id: RunId,
    /// The step id in that run.
    pub step_id: String,
    /// When it was computed, ms since the Unix epoch.
    pub created_at_ms: u64,
}

/// Where a step's output came from when it was reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHit {
    /// The cache key: `sha256:<hex>` of the component, its config and the
    /// input.
    pub key: String,
    /// The run that computed the output.
    pub run_id: RunId,
    /// The step id in that run.
    pub step_id: String,
    /// When it was computed.
    pub created_at_ms: u64,
}

/// One entry of the audit log: who did what to which run, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Who: `user:NAME` for the CLI (the OS user, or `$PLAIT_ACTOR`),
    /// `token:NAME` for the HTTP API.
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The run it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The workflow it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Anything else worth keeping (the signalled step, the key, counts).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// What an [`AuditRecord`] records. Kept as its dotted name
/// (`run.start`), so the audit log reads the same as before it was typed; a
/// name this build does not know (written by a newer Plait) is kept as it
/// is, not refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AuditAction {
    /// A run was created (`run.start`).
    RunStart,
    /// A run was resumed by someone (`run.resume`).
    RunResume,
    /// A run that kept killing its host was failed, not resumed
    /// (`run.refuse`).
    RunRefuse,
    /// A `wait` step was signalled (`run.signal`).
    RunSignal,
    /// A run's cancel was requested (`run.cancel`).
    RunCancel,
    /// A failed run was tried again (`run.retry`).
    RunRetry,
    /// `plait gc` removed finished runs (`store.gc`).
    StoreGc,
    /// A bundle was installed (`bundle.install`).
    BundleInstall,
    /// A bundle was removed (`bundle.remove`).
    BundleRemove,
    /// An action this build does not know, by its name.
    Other(String),
}

impl AuditAction {
    /// Every action this build records, for listings and help.
    pub const KNOWN: [AuditAction; 9] = [
        AuditAction::RunStart,
        AuditAction::RunResume,
        AuditAction::RunRefuse,
        AuditAction::RunSignal,
        AuditAction::RunCancel,
        AuditAction::RunRetry,
        AuditAction::StoreGc,
        AuditAction::BundleInstall,
        AuditAction::BundleRemove,
    ];

    /// Its dotted name, as the audit log keeps it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            AuditAction::RunStart => "run.start",
            AuditAction::RunResume => "run.resume",
            AuditAction::RunRefuse => "run.refuse",
            AuditAction::RunSignal => "run.signal",
            AuditAction::RunCancel => "run.cancel",
            AuditAction::RunRetry => "run.retry",
            AuditAction::StoreGc => "store.gc",
            AuditAction::BundleInstall => "bundle.install",
            AuditAction::BundleRemove => "bundle.remove",
            AuditAction::Other(name) => name,
        }
    }
}

impl From<String> for AuditAction {
    fn from(name: String) -> AuditAction {
        AuditAction::KNOWN
            .into_iter()
            .find(|known| known.as_str() == name)
            .unwrap_or(AuditAction::Other(name))
    }
}

impl From<AuditAction> for String {
    fn from(action: AuditAction) -> String {
        action.as_str().to_owned()
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a run, kept in order: what an event stream
/// replays to a client that reconnects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Its place in the store's order of events: increasing, never reused
    /// (not contiguous).
    pub seq: u64,
    /// The run.
    pub run_id: RunId,
    /// The event (`{"event": "step_finished", ...}`).
    pub event: serde_json::Value,
}

/// What a trigger of `plait serve` remembers across restarts, so that it
/// starts each run once: a schedule's last handled time, a watched
/// folder's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerMark {
    /// When it was written (ms since the epoch).
    pub at_ms: u64,
    /// A schedule: every slot up to this time (ms since the epoch) is
    /// handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// The run it started, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
}

/// A webhook message about a run, and every attempt to deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message id (`msg_...`), the `webhook-id` header: the same on
    /// every attempt, so the receiver can drop duplicates.
    pub id: String,
    /// The run.
    pub run_id: RunId,
    /// Where it goes.
    pub url: String,
    /// `run.succeeded`, `run.failed`, `run.cancelled` or `run.waiting`.
    pub event: String,
    /// The body sent.
    pub payload: serde_json::Value,
    /// When it was made, ms since the epoch.
    pub created_at_ms: u64,
    /// `pending`, `delivered` or `failed` (attempts exhausted).
    pub state: String,
    /// When the next attempt is due (pending only).
    pub next_at_ms: u64,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// One attempt to deliver a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it was made.
    pub at_ms: u64,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// The right to execute a run, held by one executor at a time. Every commit
/// the holder makes carries its token; a commit with an older token (from a
/// holder that lost the lease) is refused, so two hosts never both write a
/// run (a fencing token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it: an executor's id.
    pub holder: String,
    /// Increases with every acquisition.
    pub token: u64,
    /// When it lapses unless renewed, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// When the holder last took or renewed it: when it was last heard
    /// of. 0 in stores written before it was kept.
    #[serde(default)]
    pub renewed_at_ms: u64,
    /// Whether the holder gave it up; a lease that lapsed unreleased was
    /// held by a host that died (or hung).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
    /// On a lease just acquired: the holder before, when it left the lease
    /// to lapse instead of releasing it (it died while executing the run).
    /// Not stored.
    #[serde(skip)]
    pub abandoned: Option<Abandoned>,
}

/// A lease its holder never gave up: what [`Lease::abandoned`] says about
/// the host that died holding the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// The holder that died.
    pub holder: String,
    /// When it was last heard of (its last renewal), ms since the epoch.
    pub heard_at_ms: u64,
}

#[cfg(test)]
mod typed_tests {
    use super::{AuditAction, CancelRequest, Signal};

    #[test]
    fn audit_actions_keep_their_dotted_names_and_unknown_ones_survive() {
        for action in AuditAction::KNOWN {
            let wire = serde_json::to_value(&action).unwrap();
            assert_eq!(wire, action.as_str());
            assert_eq!(serde_json::from_value::<AuditAction>(wire).unwrap(), action);
        }
        assert_eq!(
            serde_json::to_value(AuditAction::StoreGc).unwrap(),
            "store.gc"
        );
        let newer: AuditAction = serde_json::from_value("token.rotate".into()).unwrap();
        assert_eq!(newer, AuditAction::Other("token.rotate".to_owned()));
        assert_eq!(serde_json::to_value(&newer).unwrap(), "token.rotate");
    }

    #[test]
    fn a_cancel_request_is_kept_as_older_journals_hold_it() {
        let request = CancelRequest {
            run_id: "run-1".into(),
            reason: Some("wrong input".to_owned()),
            requested_at_ms: 42,
            requested_by: Some("user:ana".to_owned()),
        };
        let stored = request.to_signal();
        assert_eq!(stored.step_id, Signal::CANCEL);
        assert!(stored.is_cancel());
        assert_eq!(stored.data, serde_json::json!({"reason": "wrong input"}));
        assert_eq!(CancelRequest::from_signal(&stored), Some(request.clone()));
        assert_eq!(request.message(), "cancelled by user:ana: wrong input");
        assert_eq!(stored.audit().action, AuditAction::RunCancel);
        let unexplained = CancelRequest {
            reason: None,
            requested_by: None,
            ..request
        };
        assert_eq!(unexplained.message(), "cancelled by unknown");
        let data = Signal {
            step_id: "approve".to_owned(),
            ..stored
        };
        assert_eq!(
            CancelRequest::from_signal(&data),
            None,
            "a wait step's data"
        );
    }
}
