//! A run as a timeline in the terminal: one row per step with a bar over
//! the run's duration, then each attempt, backoff and wait with its start
//! (from the run's start), duration and error.
//!
//! ```text
//! STEP       STATUS      START    TOOK     0 ───────────────────── 2.41 s
//! fetch      succeeded   +0 ms    310 ms   ▒·····█
//!   attempt 1  failed     +0 ms    12 ms    retryable: upstream busy
//!   backoff               +12 ms   200 ms
//!   attempt 2  succeeded  +212 ms  98 ms
//! approve    succeeded   +310 ms  1.90 s          ░░░░░░░░░░░░░░
//! ```
//!
//! An attempt the host died in shows as `interrupted` (`×`), in flight or
//! in the history once a later host took the run over.

use plait::store::{RunRecord, RunStatus, StepRecord, StepStatus};

/// The bar's width in characters.
const WIDTH: usize = 32;

/// `310 ms`, `2.41 s`, `3m 12s`, `1h 02m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.2} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// One line of the timeline, by column.
struct Row {
    label: String,
    status: String,
    start: String,
    took: String,
    tail: String,
}

impl Row {
    fn new(label: String, status: &str, start: String, took: String, tail: String) -> Row {
        Row {
            label,
            status: status.to_owned(),
            start,
            took,
            tail,
        }
    }
}

/// The timeline of `run`: a header line, then one block of lines per step
/// (in `steps` order), so a caller can print more under each.
///
/// `interrupted_at` is set when the host executing the run is gone: when
/// it was last heard of. The timeline then ends there, and an attempt it
/// had in flight shows as `interrupted` rather than running for ever. An
/// attempt a later host found interrupted is kept in the history and shown
/// so too (`×`).
pub fn render(
    run: &RunRecord,
    steps: &[StepRecord],
    now_ms: u64,
    interrupted_at: Option<u64>,
) -> (String, Vec<Vec<String>>) {
    let start = run.created_at_ms;
    let now_ms = interrupted_at.map_or(now_ms, |at| at.min(now_ms));
    let end = match run.status {
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => run.updated_at_ms,
        _ => now_ms,
    }
    .max(start + 1);
    let total = end - start;
    let axis = format!(
        "0 {} {}",
        "─".repeat(WIDTH.saturating_sub(duration(total).len() + 3)),
        duration(total)
    );
    let position = |at: u64| -> usize {
        ((at.saturating_sub(start) as f64 / total as f64) * WIDTH as f64).floor() as usize
    };
    let offset = |at: u64| format!("+{}", duration(at.saturating_sub(start)));
    // The row of an attempt in flight: running, or cut off with its host.
    let in_flight = |attempt: u32, started: u64| match interrupted_at {
        Some(at) => Row::new(
            format!("  attempt {attempt}"),
            "interrupted",
            offset(started),
            "-".to_owned(),
            format!(
                "the host stopped during it (last heard of at {})",
                offset(at)
            ),
        ),
        None => Row::new(
            format!("  attempt {attempt}"),
            "running",
            offset(started),
            format!("{}…", duration(now_ms.saturating_sub(started))),
            String::new(),
        ),
    };
    let blocks = steps
        .iter()
        .map(|step| {
            let mut bar = [' '; WIDTH];
            let mut fill = |from: u64, to: u64, mark: char| {
                let a = position(from).min(WIDTH - 1);
                let b = position(to).clamp(a + 1, WIDTH);
                for cell in &mut bar[a..b] {
                    *cell = mark;
                }
            };
            let attempts: Vec<_> = step.history.iter().filter(|a| a.item.is_none()).collect();
            let mut details = Vec::new();
            if let Some(hit) = &step.cache_hit {
                if let Some(at) = step.started_at_ms {
                    fill(at, at, '◆');
                }
                details.push(Row::new(
                    "  cache hit".to_owned(),
                    "",
                    String::new(),
                    String::new(),
                    format!("the output of step `{}` in run {}", hit.step_id, hit.run_id),
                ));
            } else if !attempts.is_empty() {
                // Backoffs first, so the attempts are drawn over their ends.
                for pair in attempts.windows(2) {
                    if pair[1].started_at_ms > pair[0].finished_at_ms {
                        fill(pair[0].finished_at_ms, pair[1].started_at_ms, '·');
                    }
                }
                for (n, attempt) in attempts.iter().enumerate() {
                    if n > 0 {
                        let previous = attempts[n - 1].finished_at_ms;
                        if attempt.started_at_ms > previous {
                            details.push(Row::new(
                                "  backoff".to_owned(),
                                "",
                                offset(previous),
                                duration(attempt.started_at_ms - previous),
                                String::new(),
                            ));
                        }
                    }
                    let failed = attempt.error.is_some();
                    if attempt.interrupted {
                        fill(attempt.started_at_ms, attempt.finished_at_ms, '×');
                        details.push(Row::new(
                            format!("  attempt {}", attempt.attempt),
                            "interrupted",
                            offset(attempt.started_at_ms),
                            "-".to_owned(),
                            format!(
                                "the host stopped during it; found at {} and run again",
                                offset(attempt.finished_at_ms)
                            ),
                        ));
                        continue;
                    }
                    fill(
                        attempt.started_at_ms,
                        attempt.finished_at_ms,
                        if failed { '▒' } else { '█' },
                    );
                    details.push(Row::new(
                        format!("  attempt {}", attempt.attempt),
                        if failed { "failed" } else { "succeeded" },
                        offset(attempt.started_at_ms),
                        duration(attempt.finished_at_ms.saturating_sub(attempt.started_at_ms)),
                        attempt
                            .error
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    ));
                }
                // A backoff in progress, or an attempt running now.
                let last = attempts[attempts.len() - 1].finished_at_ms;
                match step.status {
                    StepStatus::Waiting => {
                        fill(last, now_ms.min(end), '·');
                        if let Some(wake) = step.wake_at_ms {
                            details.push(Row::new(
                                "  backoff".to_owned(),
                                "waiting",
                                offset(last),
                                String::new(),
                                format!("until {}", super::output::timestamp(wake)),
                            ));
                        }
                    }
                    StepStatus::Running => {
                        if let Some(started) = step.started_at_ms.filter(|s| *s > last) {
                            let mark = if interrupted_at.is_some() {
                                '×'
                            } else {
                                '█'
                            };
                            fill(started, now_ms.min(end), mark);
                            details.push(in_flight(step.attempts, started));
                        }
                    }
                    _ => {}
                }
            } else if let Some(started) = step.started_at_ms {
                // A wait, a sleep, a fan-out, or an attempt still running.
                let finished = step.finished_at_ms.unwrap_or(now_ms.min(end));
                if interrupted_at.is_some()
                    && step.status == StepStatus::Running
                    && step.items.is_empty()
                {
                    details.push(in_flight(step.attempts, started));
                }
                let mark = match step.status {
                    StepStatus::Waiting => '░',
                    _ if step.items.is_empty() && step.component.is_none() => '░',
                    _ => '█',
                };
                fill(started, finished, mark);
                if step.status == StepStatus::Waiting
                    && let Some(wake) = step.wake_at_ms
                {
                    details.push(Row::new(
                        "  waiting".to_owned(),
                        "",
                        String::new(),
                        String::new(),
                        format!("until {}", super::output::timestamp(wake)),
                    ));
                }
            }
            if !step.items.is_empty() {
                let count = |status: StepStatus| {
                    step.items
                        .iter()
                        .filter(|item| item.status == status)
                        .count()
                };
                let retried: u32 = step
                    .items
                    .iter()
                    .map(|item| item.attempts.saturating_sub(1))
                    .sum();
                let cached = step
                    .items
                    .iter()
                    .filter(|item| item.cache_hit.is_some())
                    .count();
                let mut line = format!(
                    "{} succeeded, {} failed",
                    count(StepStatus::Succeeded),
                    count(StepStatus::Failed)
                );
                if retried > 0 {
                    line.push_str(&format!(", {retried} retries"));
                }
                if cached > 0 {
                    line.push_str(&format!(", {cached} from the cache"));
                }
                details.push(Row::new(
                    format!("  {} items", step.items.len()),
                    "",
                    String::new(),
                    String::new(),
                    line,
                ));
            }
            // From the first attempt kept, not the latest.
            let first_start = attempts
                .first()
                .map(|attempt| attempt.started_at_ms)
                .into_iter()
                .chain(step.started_at_ms)
                .min();
            let started = first_start.map(offset).unwrap_or_else(|| "-".to_owned());
            let took = match (first_start, step.finished_at_ms) {
                (Some(started), Some(finished)) => duration(finished.saturating_sub(started)),
                (Some(_), None) if interrupted_at.is_some() => "-".to_owned(),
                (Some(started), None) if !matches!(step.status, StepStatus::Pending) => {
                    format!("{}…", duration(now_ms.saturating_sub(started)))
                }
                _ => "-".to_owned(),
            };
            let mut tail = bar.iter().collect::<String>().trim_end().to_owned();
            // The failure that decided the step (already shown per attempt
            // when there were attempts).
            if attempts.is_empty()
                && let Some(error) = &step.error
            {
                tail.push_str(&format!("  {error}"));
            }
            let status = match step.status {
                StepStatus::Running if interrupted_at.is_some() => "interrupted",
                status => status.as_str(),
            };
            let mut block = vec![Row::new(step.id.clone(), status, started, took, tail)];
            block.extend(details);
            block
        })
        .collect::<Vec<Vec<Row>>>();
    let width = |column: fn(&Row) -> &String, title: &str| {
        blocks
            .iter()
            .flatten()
            .map(|row| column(row).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let label = width(|row| &row.label, "STEP");
    let status = width(|row| &row.status, "STATUS");
    let start_width = width(|row| &row.start, "START");
    let took = width(|row| &row.took, "TOOK");
    let line = |row: &Row| {
        format!(
            "{:<label$}  {:<status$}  {:>start_width$}  {:>took$}  {}",
            row.label, row.status, row.start, row.took, row.tail
        )
        .trim_end()
        .to_owned()
    };
    let header = line(&Row::new(
        "STEP".to_owned(),
        "STATUS",
        "START".to_owned(),
        "TOOK".to_owned(),
        axis,
    ));
    let blocks = blocks
        .iter()
        .map(|block| block.iter().map(line).collect())
        .collect();
    (header, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(310), "310 ms");
        assert_eq!(duration(2_410), "2.41 s");
        assert_eq!(duration(192_000), "3m 12s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }
}
