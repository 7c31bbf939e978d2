//! Shared helpers: a `plait` command builder with its own store, workflow
//! files written into a temporary directory, and golden-file comparison.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A temporary Plait home plus a folder for workflow files.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    /// The Plait home (`--store`).
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Writes `name` (relative to the sandbox) with `contents`.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A `plait` command using this sandbox's store, run in its directory.
    pub fn plait(&self) -> Command {
        self.configure(Command::new(env!("CARGO_BIN_EXE_plait")))
    }

    /// `sh -c SCRIPT` with the same directory and environment as [`Self::plait`].
    pub fn shell(&self, script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        self.configure(command)
    }

    fn configure(&self, mut command: Command) -> Command {
        command
            .current_dir(self.dir.path())
            .env("PLAIT_HOME", self.store())
            // Compiling a component with a debug build of Cranelift takes
            // seconds; share compiled components across tests.
            .env("PLAIT_CACHE_DIR", shared_cache())
            .env_remove("PLAIT_LOG")
            .env_remove("PLAIT_POLICY");
        command
    }

    /// Runs `plait ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.plait().args(args).output().expect("starting plait")
    }
}

/// The compiled-component cache shared by every test.
pub fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plait-component-cache")
}

/// A component path as YAML-safe text.
pub fn yaml_path(path: &str) -> String {
    serde_json::to_string(path).unwrap()
}

/// The run id in a text log line (`HH:MM:SS.mmm  INFO run ID ...: ...`).
pub fn run_id_in(line: &str) -> String {
    let start = line
        .find(" run ")
        .unwrap_or_else(|| panic!("no run in `{line}`"))
        + 5;
    line[start..]
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses stdout as one JSON value, with a helpful panic otherwise.
pub fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON value ({error})\nstdout:\n{}\nstderr:\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

/// Asserts the exit code, printing both streams when it differs.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "unexpected exit status\nstdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Compares `actual` with the golden file `path`; `BLESS=1` rewrites it.
#[track_caller]
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "reading golden file {}: {error}; run with BLESS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "output differs from {} (run with BLESS=1 to update it)",
        path.display()
    );
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    // The `plait-cli` package's folder is `host/cli`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

/// A process killed when the test ends, passed or not.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
