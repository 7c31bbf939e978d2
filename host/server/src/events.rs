//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events.
//!
//! Every event comes from the run's event log in the store, so a client
//! that reconnects with `Last-Event-ID` (or `?after=`) gets exactly what it
//! missed, even across a server restart. The executor's live events only
//! wake the stream up to read the log again. The stream ends after the
//! run's `run_finished` event (reconnecting then replays nothing new and
//! ends again); while nothing happens a comment keeps proxies from closing
//! it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::AppState;
use plait::store::EventRecord;

/// How often the log is read again without a wake-up (an event another
/// process recorded, or a missed one).
const POLL: Duration = Duration::from_secs(1);

/// How long an ended run's stream waits for a last event before it ends.
const SETTLE: Duration = Duration::from_millis(500);

/// The stream of run `run_id`'s events after sequence number `after`.
pub fn stream(
    state: Arc<AppState>,
    run_id: String,
    after: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = state.dispatcher.executor().subscribe();
    let shutdown = state.dispatcher.shutdown_token();
    let initial = Cursor {
        state,
        run_id,
        after,
        pending: std::collections::VecDeque::new(),
        live,
        shutdown,
        done: false,
        ended_at: None,
    };
    let events = futures_util::stream::unfold(initial, |mut cursor| async move {
        let event = cursor.next().await?;
        Some((Ok(event), cursor))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

struct Cursor {
    state: Arc<AppState>,
    run_id: String,
    after: Option<u64>,
    pending: std::collections::VecDeque<EventRecord>,
    live: tokio::sync::broadcast::Receiver<plait::executor::RunEvent>,
    shutdown: tokio_util::sync::CancellationToken,
    done: bool,
    /// When the run was first seen ended with nothing left to send.
    ended_at: Option<tokio::time::Instant>,
}

impl Cursor {
    /// The next event, waiting for one; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(record) = self.pending.pop_front() {
                self.after = Some(record.seq);
                let name = record
                    .event
                    .get("event")
                    .and_then(|name| name.as_str())
                    .unwrap_or("event")
                    .to_owned();
                if name == "run_finished" {
                    self.done = true;
                }
                let mut data = record.event;
                if let Some(object) = data.as_object_mut() {
                    object.insert("seq".to_owned(), record.seq.into());
                }
                return Some(
                    Event::default()
                        .id(record.seq.to_string())
                        .event(name)
                        .data(data.to_string()),
                );
            }
            if self.done || self.shutdown.is_cancelled() {
                return None;
            }
            match self.state.store.events(&self.run_id, self.after) {
                Ok(records) if !records.is_empty() => {
                    self.pending.extend(records);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(target: "plait::server", run_id = %self.run_id, error = %error, "reading a run's events failed");
                    return None;
                }
            }
            // A run that has ended and has nothing more to say ends the
            // stream: its `run_finished` was sent, the client asked for
            // what came after it, or the run has no event log. (Its last
            // event is recorded just after its status: a moment is left for
            // it.)
            if let Ok(Some(run)) = self.state.store.run(&self.run_id)
                && run.status.is_finished()
            {
                match self.ended_at {
                    None => self.ended_at = Some(tokio::time::Instant::now()),
                    Some(at) if at.elapsed() >= SETTLE => return None,
                    Some(_) => {}
                }
            } else {
                self.ended_at = None;
            }
            let poll = if self.ended_at.is_some() {
                SETTLE / 4
            } else {
                POLL
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(poll) => {}
                event = self.live.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                        return None;
                    }
                }
            }
        }
    }
}
