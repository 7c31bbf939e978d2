//! Test guest `sandbox-probe`: reports what of the outside world it can
//! reach, without ever panicking.
//!
//! It declares no grants and outputs
//! `{"env": [names], "args": [args], "cwd": path-or-error,
//! "read_etc_passwd": "ok"-or-error, "list_root": [entries]-or-error,
//! "tcp_connect": "ok"-or-error}`, trying `std::env::vars_os`,
//! `std::env::args_os`, `std::env::current_dir`, reading `/etc/passwd`,
//! listing `/` and connecting to `127.0.0.1:22`. The host must give a step
//! without grants an empty environment (no host variables, in particular no
//! secrets), no arguments, no readable files or directories, and no network:
//! every probe must come back as an error (or empty). A refused connection
//! still means the sandbox let the socket through, so the host's test should
//! expect a permission-style error for `tcp_connect`, not just any error.

use std::net::TcpStream;

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde_json::{Value, json};

/// The `sandbox-probe` step.
pub struct SandboxProbe;

impl Step for SandboxProbe {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("sandbox-probe", "0.1.0")
            .description("Reports which environment, files and network the step can reach.")
    }

    fn run(_ctx: &Context, _input: Input<Value>) -> Result<Output<Value>, StepError> {
        // `vars_os` and `args_os` rather than `vars` and `args`: those panic
        // on non-UTF-8 values, and this guest must never panic.
        let env: Vec<String> = std::env::vars_os()
            .map(|(name, _value)| name.to_string_lossy().into_owned())
            .collect();
        let args: Vec<String> = std::env::args_os()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let cwd = match std::env::current_dir() {
            Ok(path) => path.display().to_string(),
            Err(error) => error.to_string(),
        };
        let read_etc_passwd = match std::fs::read("/etc/passwd") {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.to_string(),
        };
        let list_root = match std::fs::read_dir("/") {
            Ok(entries) => Value::from(
                entries
                    .map(|entry| match entry {
                        Ok(entry) => entry.file_name().to_string_lossy().into_owned(),
                        Err(error) => format!("<error: {error}>"),
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(error) => Value::from(error.to_string()),
        };
        let tcp_connect = match TcpStream::connect("127.0.0.1:22") {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.to_string(),
        };
        Ok(json!({
            "env": env,
            "args": args,
            "cwd": cwd,
            "read_etc_passwd": read_etc_passwd,
            "list_root": list_root,
            "tcp_connect": tcp_connect,
        })
        .into())
    }
}

plait_sdk::export_step!(SandboxProbe);
