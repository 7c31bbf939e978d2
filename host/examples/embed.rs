//! Plait embedded in a Rust program: a device that runs workflows itself
//! instead of calling the `plait` command.
//!
//! ```sh
//! cargo run -p plait --example embed -- examples/chain examples/chain/input.json
//! ```
//!
//! The runtime keeps its journal, compiled components and installed
//! bundles in one folder (`PLAIT_HOME`, else `./plait-embedded`). Running
//! the program twice with the same input gives back the first run: each run
//! is keyed by its input's digest.

use std::process::ExitCode;

use plait::store::RunStatus;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    // Expressions run in worker processes started from this program.
    plait::expressions::serve_worker_if_requested();
    let mut args = std::env::args().skip(1);
    let (Some(workflow), input) = (args.next(), args.next()) else {
        eprintln!("usage: embed WORKFLOW|NAME[@VERSION] [INPUT.json]");
        return Ok(ExitCode::from(2));
    };
    let input: serde_json::Value = match input {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => serde_json::json!({}),
    };
    let home = std::env::var_os("PLAIT_HOME").unwrap_or_else(|| "plait-embedded".into());
    let runtime = plait::Runtime::open(home).await?;
    // What a crash interrupted last time goes on first.
    for report in runtime.resume_all().await? {
        eprintln!("continued run {}: {:?}", report.run.id, report.run.status);
    }
    let plan = runtime.load(&workflow).await?;
    let key = plait::digest::digest(serde_json::to_string(&input)?.as_bytes());
    let report = runtime.run_keyed(&plan, input, Vec::new(), &key).await?;
    println!("{}", serde_json::to_string_pretty(&report.run.output)?);
    eprintln!("run {}: {:?}", report.run.id, report.run.status);
    Ok(if report.run.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
