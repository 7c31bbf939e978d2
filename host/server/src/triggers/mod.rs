//! Triggers: what starts runs besides an API call.
//!
//! The operator declares them in the policy, as `[[server.triggers]]`
//! tables, each naming a served workflow:
//!
//! - **webhook** ([`webhook`]): `POST /v1/triggers/{name}` starts a run with
//!   the request body, authenticated by an API token (`runs:write`) or by
//!   the sender's signature (Standard Webhooks, or GitHub's
//!   `X-Hub-Signature-256`). The sender's delivery id is the idempotency
//!   key, so a redelivery gives back the first run.
//! - **cron** ([`cron`]): a cron schedule in a time zone; each slot starts
//!   one run, keyed by the slot's time. After downtime, the newest missed
//!   slot starts once (`catch_up`).
//! - **watch** ([`watch`]): a folder polled every second; a file dropped
//!   there (once its size has stopped changing) starts one run with the
//!   file as an input blob, keyed by its name and digest, and remembered in
//!   the store, so once even across restarts.
//!
//! Triggers live in the policy rather than in workflow files because they
//! are the operator's wiring: a folder on this host, a secret, a schedule.
//! A workflow (or a template someone else wrote) cannot start itself.

pub mod cron;
pub mod watch;
pub mod webhook;

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::catalog::Catalog;
use super::dispatch::{Dispatcher, NoRoom};
use plait::executor::{ExecutorError, Origin, StartRequest};
use plait::store::{RunRecord, RunStore};

pub use plait::policy::triggers::{
    Schedule, Trigger, TriggerKind, TriggerTable, WatchedDir, WebhookAuth, parse_all,
};

/// What the schedule and folder triggers start runs with.
pub struct Starter {
    /// The queue.
    pub dispatcher: Arc<Dispatcher>,
    /// The served workflows.
    pub catalog: Arc<Catalog>,
    /// The journal (trigger marks).
    pub store: Arc<dyn RunStore>,
    /// `[runtime] max_input`.
    pub max_input: u64,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
}

/// Why a trigger did not start a run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The queue is full or the server stops: try again later.
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    /// The workflow is not served, or its file does not check out.
    #[error("{0}")]
    Workflow(String),
    /// The executor refused the run (its input, its key) or the store
    /// failed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

impl Starter {
    /// Starts a run of `trigger`'s workflow under idempotency key `key`.
    pub async fn start(
        &self,
        trigger: &Trigger,
        input: Value,
        blobs: Vec<plait::step::Blob>,
        key: &str,
    ) -> Result<(RunRecord, bool), StartError> {
        self.dispatcher.room()?;
        let plan = match self.catalog.plan(&trigger.workflow).await {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                return Err(StartError::Workflow(format!(
                    "trigger `{}` starts workflow `{}`, which the workflows folder does not hold",
                    trigger.name, trigger.workflow
                )));
            }
            Err(error) => {
                return Err(StartError::Workflow(format!(
                    "trigger `{}` starts workflow `{}`, whose file does not check out: {error}",
                    trigger.name, trigger.workflow
                )));
            }
        };
        let request = StartRequest::new(input)
            .blobs(blobs)
            .idempotency_key(Some(key))
            .origin(Origin {
                actor: Some(trigger.actor()),
                trace_parent: None,
            });
        Ok(self.dispatcher.start(plan, request, None).await?)
    }

    /// Sleeps `duration`; false if the server began stopping meanwhile.
    pub async fn sleep(&self, duration: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// Starts the schedule and folder triggers' tasks; they end when the
/// server stops. Webhook triggers are served by the API's router.
pub fn spawn(triggers: &[Trigger], starter: &Arc<Starter>) -> Vec<tokio::task::JoinHandle<()>> {
    triggers
        .iter()
        .filter_map(|trigger| match &trigger.kind {
            TriggerKind::Webhook { .. } => None,
            TriggerKind::Cron(schedule) => Some(tokio::spawn(cron::run(
                trigger.clone(),
                (**schedule).clone(),
                starter.clone(),
            ))),
            TriggerKind::Watch(watched) => Some(tokio::spawn(watch::run(
                trigger.clone(),
                watched.clone(),
                starter.clone(),
            ))),
        })
        .collect()
}
