//! Which run a command means: a run id, a unique start of one, or
//! `--last` (the run created most recently).

use plait::store::RunStore;

use crate::UsageError;

/// How many candidates an ambiguous start of a run id lists.
const CANDIDATES: usize = 10;

/// The run id that `given` (a whole id or the start of one) or `last`
/// names in `store`.
pub fn resolve(store: &dyn RunStore, given: Option<&str>, last: bool) -> anyhow::Result<String> {
    let given = match (given, last) {
        (Some(given), false) => given.trim(),
        (None, true) => {
            return match store.runs_page(None, 1, &|_| true)?.into_iter().next() {
                Some(run) => Ok(run.id.into_string()),
                None => Err(UsageError(
                    "`--last`: this store holds no runs yet; start one with `plait run WORKFLOW`"
                        .to_owned(),
                )
                .into()),
            };
        }
        (Some(given), true) => {
            return Err(
                UsageError(format!("give a run id (`{given}`) or `--last`, not both")).into(),
            );
        }
        (None, false) => {
            return Err(UsageError(
                "which run? give its id (or the start of it), or `--last` for the newest; `plait runs list` lists them"
                    .to_owned(),
            )
            .into());
        }
    };
    if given.is_empty() {
        return Err(
            UsageError("the run id is empty; `plait runs list` lists them".to_owned()).into(),
        );
    }
    if store.run(given)?.is_some() {
        return Ok(given.to_owned());
    }
    let mut candidates = store.runs_with_prefix(given, CANDIDATES + 1)?;
    match candidates.len() {
        0 => Err(UsageError(format!(
            "no run starts with `{given}` in this store; `plait runs list` lists the runs it holds"
        ))
        .into()),
        1 => Ok(candidates.remove(0).id.into_string()),
        count => {
            let more = count > CANDIDATES;
            candidates.truncate(CANDIDATES);
            // One line: errors are printed with their newlines escaped.
            let listed: Vec<String> = candidates
                .iter()
                .map(|run| {
                    format!(
                        "{} ({}, {}, {})",
                        run.id,
                        run.workflow.name,
                        run.status.as_str(),
                        crate::output::timestamp(run.created_at_ms)
                    )
                })
                .collect();
            Err(UsageError(format!(
                "`{given}` is the start of {} runs: {}{}; give more of the id",
                if more {
                    format!("more than {CANDIDATES}")
                } else {
                    count.to_string()
                },
                listed.join(", "),
                if more { ", ..." } else { "" }
            ))
            .into())
        }
    }
}

/// The run a `plait signal` (to step `signalled`) or `plait cancel` means
/// while another process holds the store: resolved and checked through
/// that process when it answers (returned too, as it names itself), else
/// `given` as it is.
pub fn held_run(
    home: &crate::home::Home,
    given: Option<&str>,
    last: bool,
    signalled: Option<&str>,
) -> anyhow::Result<(String, Option<plait::store::remote::Holder>)> {
    match plait::store::remote::RemoteStore::connect(&home.journal_dir())? {
        Some(remote) => {
            let run_id = resolve(&remote, given, last)?;
            if let Some(step_id) = signalled {
                check_signal(&remote, &run_id, step_id)?;
            }
            Ok((run_id, Some(remote.holder().clone())))
        }
        None => match (given, last) {
            (Some(given), false) => Ok((given.to_owned(), None)),
            _ => Err(UsageError(
                "another plait process holds the store and does not say which runs it holds; give the whole run id instead of `--last`"
                    .to_owned(),
            )
            .into()),
        },
    }
}

/// Checks, as far as the records tell without the run's components, that
/// step `step_id` of run `run_id` can take a signal: the run is not over,
/// the step is a `type: wait` step of the run's workflow, and it has no
/// signal yet. What the process executing the run checks again.
pub fn check_signal(store: &dyn RunStore, run_id: &str, step_id: &str) -> anyhow::Result<()> {
    let run = store
        .run(run_id)?
        .ok_or_else(|| plait::store::StoreError::UnknownRun(run_id.to_owned()))?;
    if run.status.is_finished() {
        return Err(UsageError(format!(
            "run `{run_id}` is already {}; a signal can only reach a run that is running or waiting",
            run.status.as_str()
        ))
        .into());
    }
    let definition = store
        .blob(&run.workflow.digest)?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| plait::definition::Definition::parse(&text, &run.workflow.path).ok());
    if let Some(definition) = definition {
        let is_wait = |kind: &plait::definition::StepKind| {
            matches!(kind, plait::definition::StepKind::Wait { .. })
        };
        match definition.step(step_id) {
            None => {
                let waits: Vec<&str> = definition
                    .steps
                    .iter()
                    .filter(|step| is_wait(&step.kind))
                    .map(|step| step.id.as_str())
                    .collect();
                return Err(UsageError(format!(
                    "workflow `{}` has no step `{step_id}`; its wait steps: {}",
                    definition.name,
                    if waits.is_empty() {
                        "none".to_owned()
                    } else {
                        waits.join(", ")
                    }
                ))
                .into());
            }
            Some(step) if !is_wait(&step.kind) => {
                return Err(UsageError(format!(
                    "step `{step_id}` is not a `type: wait` step; only wait steps take signals"
                ))
                .into());
            }
            Some(_) => {}
        }
    }
    if store.signal(run_id, step_id)?.is_some() {
        return Err(UsageError(format!(
            "step `{step_id}` of run `{run_id}` already has a signal; the first one counts"
        ))
        .into());
    }
    Ok(())
}
