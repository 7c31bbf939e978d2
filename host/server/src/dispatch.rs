//! Which runs execute when: the server's queue.
//!
//! A run the API accepts is recorded `queued` before the response goes out,
//! so an accepted run is never lost: if the server stops first, the next
//! one starts it. The dispatcher then executes it once one of
//! `max_active_runs` places is free. The executor parks a run that only
//! waits (for a signal, or a long sleep or backoff): the run gives its place
//! back and is executed again when its signal comes (over the API, or left
//! in the store's inbox by `plait signal`) or shortly before its wake time.
//!
//! On shutdown nothing new starts, running attempts get the grace period to
//! finish and be recorded, and whatever is left stays in the store
//! (`queued`, `running` or `waiting`) for the next start to continue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::catalog::Catalog;
use plait::executor::{Executor, ExecutorError, Origin, RunEventKind, StartRequest};
use plait::plan::Plan;
use plait::store::{RunRecord, RunStatus, RunStore, StepStatus, StoreError};

/// How often the store's inbox is looked at when no run collects it.
const INBOX_POLL: Duration = Duration::from_secs(1);

/// A parked run is executed again this long before its wake time.
const WAKE_EARLY: Duration = Duration::from_millis(500);

/// Executes runs, at most `max_active` at once.
pub struct Dispatcher {
    executor: Executor,
    catalog: Arc<Catalog>,
    /// Plans of stored runs, by workflow and component digests.
    plans: Mutex<HashMap<String, Arc<Plan>>>,
    places: Arc<Semaphore>,
    /// Runs with a task here, and whether to execute them once more when it
    /// ends (something arrived while they ran).
    active: Mutex<HashMap<String, bool>>,
    /// Failed runs asked to be tried again (any other failed run is left
    /// as it is).
    retries: Mutex<std::collections::HashSet<String>>,
    /// Tasks waiting for a place.
    queued: AtomicUsize,
    /// Queued runs past which starts are refused.
    max_queued: usize,
    /// Set on shutdown: nothing new is dispatched.
    closing: AtomicBool,
    shutdown: CancellationToken,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Told when a run ends or waits for a signal.
    webhooks: Option<Arc<super::webhooks::Webhooks>>,
}

impl Dispatcher {
    /// A dispatcher executing on `executor` (which should be
    /// [`Executor::parking`]), building the plans of stored runs from
    /// `catalog`'s engine and policy.
    pub fn new(
        executor: Executor,
        catalog: Arc<Catalog>,
        max_active: usize,
        max_queued: usize,
        webhooks: Option<Arc<super::webhooks::Webhooks>>,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            executor,
            catalog,
            plans: Mutex::new(HashMap::new()),
            places: Arc::new(Semaphore::new(max_active.max(1))),
            active: Mutex::new(HashMap::new()),
            retries: Mutex::new(std::collections::HashSet::new()),
            queued: AtomicUsize::new(0),
            max_queued,
            closing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            webhooks,
        })
    }

    /// The executor runs execute on.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Runs waiting for a place.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether shutdown began.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether a new run can be taken now: not while stopping, nor past
    /// `max_queued` runs waiting for a place.
    pub fn room(&self) -> Result<(), NoRoom> {
        if self.closing() {
            return Err(NoRoom::Closing);
        }
        let queued = self.queued();
        if queued >= self.max_queued {
            return Err(NoRoom::Full { queued });
        }
        Ok(())
    }

    /// Starts a run of `plan`: records it `queued` (with an idempotency
    /// key, the same request gives back the same run and `false`),
    /// subscribes its own `webhook`, and dispatches it; returns once the
    /// run's record is on disk. What every start does: the API, a webhook
    /// trigger, a schedule and a watched folder.
    ///
    /// The run is dispatched before its record's sync ends, and the task
    /// awaits that sync without holding a worker thread: the run's first
    /// step cannot start before a later sync, which covers the record too,
    /// so the two share one (a blocking wait here held one of the
    /// runtime's few workers through every request's sync).
    pub async fn start(
        self: &Arc<Self>,
        plan: Arc<Plan>,
        request: StartRequest,
        webhook: Option<&str>,
    ) -> Result<(RunRecord, bool), ExecutorError> {
        let queued = self.executor.enqueue_pending(&plan, request)?;
        if queued.new {
            // Before the run can end, so that its end is told.
            if let Some(url) = webhook {
                super::webhooks::subscribe(self.executor.store().as_ref(), &queued.run.id, url)?;
            }
            self.dispatch(&queued.run.id, Some(plan));
        }
        queued.durable(&self.executor).await?;
        Ok((queued.run, queued.new))
    }

    /// Executes run `run_id` (with `plan`, if the caller has it) as soon as
    /// a place is free; if it is executing already, once more after.
    pub fn dispatch(self: &Arc<Self>, run_id: &str, plan: Option<Arc<Plan>>) {
        if self.closing() {
            return;
        }
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = active.get_mut(run_id) {
                *again = true;
                return;
            }
            active.insert(run_id.to_owned(), false);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        let run_id = run_id.to_owned();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished tasks so the set does not grow for ever.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move { this.drive(run_id, plan).await });
    }

    /// Tries failed run `run_id` again from its failed steps.
    pub fn retry(self: &Arc<Self>, run_id: &str) {
        self.retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_owned());
        self.dispatch(run_id, None);
    }

    /// Dispatches every run a stopped host left unfinished: queued, running
    /// or waiting (a waiting one parks again at once if it only waits for a
    /// signal), and says what it found: `recovered N runs in X ms (M steps
    /// interrupted, K waiting)`. The store lapsed the dead host's leases
    /// when it opened, so each run is taken over as soon as it has a place;
    /// one the host died in too often is failed instead (see
    /// [`Executor::with_max_interruptions`]). Returns how many.
    pub fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let store = self.executor.store().clone();
        let (mut interrupted, mut waiting) = (0, 0);
        let mut count = 0;
        for run in store.runs()? {
            if !matches!(
                run.status,
                RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
            ) {
                continue;
            }
            match run.status {
                RunStatus::Waiting => waiting += 1,
                RunStatus::Running => {
                    interrupted += store
                        .steps(&run.id)?
                        .iter()
                        .map(plait::store::StepRecord::attempts_in_flight)
                        .sum::<usize>();
                }
                _ => {}
            }
            self.dispatch(&run.id, None);
            count += 1;
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        let span = tracing::info_span!(target: "plait::server", "recover", runs = count, interrupted, waiting, duration_ms);
        if count > 0 {
            tracing::info!(
                target: "plait::server",
                parent: &span,
                runs = count,
                interrupted,
                waiting,
                duration_ms,
                "recovered {count} runs in {duration_ms} ms ({interrupted} steps interrupted, {waiting} waiting)"
            );
        }
        Ok(count)
    }

    /// Dispatches every unfinished run again (after missed events).
    fn redispatch(self: &Arc<Self>) -> Result<(), StoreError> {
        for run in self.executor.store().runs()? {
            if matches!(
                run.status,
                RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
            ) {
                self.dispatch(&run.id, None);
            }
        }
        Ok(())
    }

    /// Follows the executor's events and the store's inbox: a signal or a
    /// cancel request for a run parked here executes it again. Runs until
    /// shutdown.
    pub async fn watch(self: Arc<Self>) {
        let mut events = self.executor.subscribe();
        let mut poll = tokio::time::interval(INBOX_POLL);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) => {
                        if matches!(event.kind, RunEventKind::SignalReceived { .. } | RunEventKind::CancelRequested { .. }) {
                            self.dispatch(&event.run_id, None);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(target: "plait::server", missed, "missed run events; dispatching every unfinished run again");
                        if let Err(error) = self.redispatch() {
                            tracing::error!(target: "plait::server", error = %error, "listing runs failed");
                        }
                    }
                    Err(_) => return,
                },
                _ = poll.tick() => {
                    // Collected signals come back as events, above.
                    if let Err(error) = self.executor.collect_inbox() {
                        tracing::error!(target: "plait::server", error = %error, "collecting the store's inbox failed");
                    }
                }
            }
        }
    }

    async fn drive(self: Arc<Self>, run_id: String, mut plan: Option<Arc<Plan>>) {
        loop {
            let place = tokio::select! {
                place = self.places.clone().acquire_owned() => place.ok(),
                () = self.shutdown.cancelled() => None,
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let Some(_place) = place else {
                break;
            };
            let wake = self.execute(&run_id, plan.take()).await;
            drop(_place);
            let again = {
                let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
                let again = active.get(&run_id).copied().unwrap_or(false) && !self.closing();
                if again {
                    active.insert(run_id.clone(), false);
                } else {
                    active.remove(&run_id);
                }
                again
            };
            if again {
                self.queued.fetch_add(1, Ordering::AcqRel);
                continue;
            }
            if let Some(wake_ms) = wake {
                self.wake_at(run_id.clone(), wake_ms);
            }
            break;
        }
    }

    /// Executes the run until it ends, parks or the host stops; returns when
    /// a parked run should be executed again (ms since the epoch).
    async fn execute(&self, run_id: &str, plan: Option<Arc<Plan>>) -> Option<u64> {
        let store = self.executor.store().clone();
        let run = match store.run(run_id) {
            Ok(Some(run)) => run,
            Ok(None) => return None,
            Err(error) => {
                tracing::error!(target: "plait::server", run_id, error = %error, "reading a run failed");
                return None;
            }
        };
        let retry = self
            .retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        if run.status.is_finished() && !(run.status == RunStatus::Failed && retry) {
            return None;
        }
        let plan = match plan {
            Some(plan) => plan,
            None => match self.plan_of(store.as_ref(), &run).await {
                Ok(plan) => plan,
                Err(error) => {
                    tracing::error!(target: "plait::server", run_id, error = %error, "the run's workflow cannot be planned; it stays as it is");
                    return None;
                }
            },
        };
        // No actor: going on with a run is the host's doing.
        let result = self
            .executor
            .resume_with(&plan, run_id, &Origin::default())
            .await;
        if let Ok(report) = &result {
            self.tell(&plan, report);
        }
        match result {
            Ok(report) if report.run.status == RunStatus::Waiting => {
                next_wake(&report.run, &report.steps)
            }
            Ok(_) | Err(ExecutorError::Stopped(_)) => None,
            Err(ExecutorError::ResumeCancelled { .. }) => None,
            Err(ExecutorError::Store(StoreError::LeaseHeld { .. })) => {
                tracing::info!(target: "plait::server", run_id, "another host executes the run");
                None
            }
            Err(error) => {
                tracing::error!(target: "plait::server", run_id, error = %error, "executing a run failed");
                None
            }
        }
    }

    /// Tells the webhooks how a run came out: ended, or waiting at a `wait`
    /// step.
    fn tell(&self, plan: &Plan, report: &plait::executor::RunReport) {
        let Some(webhooks) = &self.webhooks else {
            return;
        };
        let told = match report.run.status {
            RunStatus::Succeeded => webhooks.notify(&report.run, "run.succeeded", None),
            RunStatus::Failed => webhooks.notify(&report.run, "run.failed", None),
            RunStatus::Cancelled => webhooks.notify(&report.run, "run.cancelled", None),
            RunStatus::Waiting => {
                let waiting_at = report
                    .steps
                    .iter()
                    .zip(&plan.steps)
                    .find(|(record, planned)| {
                        record.status == StepStatus::Waiting
                            && matches!(
                                planned.definition.kind,
                                plait::definition::StepKind::Wait { .. }
                            )
                    });
                match waiting_at {
                    Some((record, _)) => {
                        webhooks.notify(&report.run, "run.waiting", Some(&record.id))
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        };
        if let Err(error) = told {
            tracing::error!(target: "plait::server", run_id = %report.run.id, error = %error, "recording a webhook failed");
        }
    }

    /// The webhooks, if any are set up.
    pub fn webhooks(&self) -> Option<&Arc<super::webhooks::Webhooks>> {
        self.webhooks.as_ref()
    }

    /// The plan stored run `run` executes.
    pub async fn plan_for(&self, run: &RunRecord) -> Result<Arc<Plan>, String> {
        self.plan_of(self.executor.store().as_ref(), run).await
    }

    /// The plan a stored run executes, built once per workflow and
    /// component digests.
    async fn plan_of(&self, store: &dyn RunStore, run: &RunRecord) -> Result<Arc<Plan>, String> {
        let steps = store.steps(&run.id).map_err(|error| error.to_string())?;
        let mut key = run.workflow.digest.to_string();
        for step in &steps {
            key.push(' ');
            key.push_str(&step.component_digest);
        }
        if let Some(plan) = self
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(plan.clone());
        }
        let plan = Plan::of_run(self.catalog.engine(), self.catalog.policy(), store, run)
            .await
            .map(Arc::new)
            .map_err(|error| error.to_string())?;
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, plan.clone());
        Ok(plan)
    }

    fn wake_at(self: &Arc<Self>, run_id: String, wake_ms: u64) {
        let this = self.clone();
        let delay = Duration::from_millis(wake_ms.saturating_sub(plait::clock::now_ms()))
            .saturating_sub(WAKE_EARLY);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => this.dispatch(&run_id, None),
                () = this.shutdown.cancelled() => {}
            }
        });
    }

    /// Stops: nothing new is dispatched, running attempts get `grace` to
    /// finish and be recorded, then what still runs is abandoned (it is
    /// resumed by the next start, like after a crash).
    pub async fn stop(&self, grace: Duration) {
        self.closing.store(true, Ordering::Release);
        self.shutdown.cancel();
        self.executor.stop();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(target: "plait::server", remaining = tasks.len(), grace = ?grace, "steps still running after the grace period were abandoned; their runs continue at the next start");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// Why a start cannot be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    /// The server is stopping.
    #[error("the server is stopping and takes no new runs")]
    Closing,
    /// `max_queued_runs` runs wait for a place.
    #[error("{queued} runs wait to execute, this server's limit (`[server] max_queued_runs`)")]
    Full {
        /// How many.
        queued: usize,
    },
}

/// When a parked run should be executed again: its earliest wake time or
/// deadline; `None` if it only waits for a signal.
fn next_wake(run: &RunRecord, steps: &[plait::store::StepRecord]) -> Option<u64> {
    plait::executor::wake_times(steps)
        .chain(run.deadline_ms)
        .min()
}
