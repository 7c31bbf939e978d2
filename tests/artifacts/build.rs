//! Builds the test guests (`tests/guests`) and the reference plugins
//! (`plugins`) for `wasm32-wasip2`, then generates `artifacts.rs` in
//! `OUT_DIR` with one constant per component and `foreach_*` macros.
//!
//! Follows the pattern of wasmtime's `crates/test-programs/artifacts`: a
//! nested `cargo build` per workspace, in that workspace's own target
//! directory, so the artifacts are shared with a plain
//! `cargo build --release --target wasm32-wasip2 --manifest-path ...`.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

/// The target every guest and plugin is built for.
const TARGET: &str = "wasm32-wasip2";

/// The first bytes of a WebAssembly component: magic, then version 0x0d
/// with layer 1 (a core module has version 1, layer 0).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Environment variables that cargo sets for this build script, or that a
/// user set for the outer build, and that would break or silently change a
/// nested `cargo build` for another target and workspace.
const REMOVED_VARS: &[&str] = &[
    // The outer build's target directory: the nested build would write into
    // it, and block on the lock the outer cargo holds on it.
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    // Flags meant for the host target (`-C target-cpu=native`, coverage
    // instrumentation, sanitizers) break or bloat a wasm build.
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTDOCFLAGS",
    // Wrappers: under `cargo clippy` the workspace wrapper is clippy-driver,
    // which would lint the guests with the outer build's lint flags.
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    // Values describing this build script's own compilation. Cargo sets
    // fresh ones for each nested build script, but a nested crate that
    // reads one cargo does not set for it (say `CARGO_CFG_UNIX`) would see
    // the host's.
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "RUSTC_LINKER",
];

/// Prefixes of further variables removed for the reasons above: the outer
/// build's cfgs, features, package facts and `links` metadata, cargo's
/// internal flags (`__CARGO_FIX_PLZ` would run `cargo fix` on the guests),
/// and profile overrides that would change how the guests are built.
const REMOVED_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_PROFILE_",
    "DEP_",
    "__CARGO_",
];

// `CARGO_MAKEFLAGS` is deliberately kept: cargo documents that a cargo run
// from a build script reads it, so the nested build takes its jobs from the
// outer build's jobserver instead of oversubscribing the machine.

/// A cargo workspace of components.
struct Workspace {
    /// Directory holding the workspace's `Cargo.toml`, relative to the repo.
    dir: &'static str,
    /// Suffix of the generated constants, for example `COMPONENT`.
    suffix: &'static str,
    /// What the crates are, for the generated documentation.
    what: &'static str,
    /// Name of the generated `foreach_*` macro.
    foreach: &'static str,
}

/// One built component.
struct Artifact {
    /// The crate's name, for example `slow-counter`.
    package: String,
    /// The crate's description from its `Cargo.toml`.
    description: String,
    /// The crate's directory.
    dir: PathBuf,
    /// The built `.wasm` file.
    path: PathBuf,
}

const WORKSPACES: [Workspace; 2] = [
    Workspace {
        dir: "tests/guests",
        suffix: "COMPONENT",
        what: "test guest",
        foreach: "foreach_guest",
    },
    Workspace {
        dir: "plugins",
        suffix: "PLUGIN",
        what: "reference plugin",
        foreach: "foreach_plugin",
    },
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let repo_root = manifest_dir
        .join("../..")
        .canonicalize()
        .map_err(|error| format!("cannot resolve the repository root: {error}"))?;
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));

    // Inputs shared by every component: the SDK (which reads the workspace
    // settings in the root manifest) and the WIT contract. Target
    // directories are never listed: the nested builds write there, and
    // listing them would rerun this script on every build.
    for input in ["sdk", "wit", "Cargo.toml", "tests/guests/malformed"] {
        println!("cargo:rerun-if-changed={}", repo_root.join(input).display());
    }

    check_target_installed(&rustc)?;

    let mut code = String::new();
    writeln!(
        code,
        "/// Absolute path of the repository root.\npub const REPO_ROOT: &str = {:?};\n",
        path_str(&repo_root)?
    )
    .expect("writing to a String cannot fail");

    for workspace in &WORKSPACES {
        let dir = repo_root.join(workspace.dir);
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.lock").display()
        );
        let artifacts = build_workspace(&cargo, &dir)?;
        generate(&mut code, workspace, &artifacts)?;
    }

    let malformed = repo_root.join("tests/guests/malformed");
    for (name, file, doc) in [
        (
            "CORE_MODULE_WAT",
            "core-module.wat",
            "A core module (not a component) in the text format; the host must refuse it.",
        ),
        (
            "CORE_MODULE_WASM",
            "core-module.wasm",
            "The binary of `CORE_MODULE_WAT`: a core module the host must refuse.",
        ),
    ] {
        let path = malformed.join(file);
        if !path.is_file() {
            return Err(format!("{} is missing", path.display()));
        }
        writeln!(
            code,
            "/// {doc}\npub const {name}: &str = {:?};\n",
            path_str(&path)?
        )
        .expect("writing to a String cannot fail");
    }

    let generated = out_dir.join("artifacts.rs");
    fs::write(&generated, code)
        .map_err(|error| format!("cannot write {}: {error}", generated.display()))
}

/// Reads a variable cargo always sets for build scripts.
fn var(name: &str) -> Result<OsString, String> {
    env::var_os(name).ok_or_else(|| format!("cargo did not set {name}"))
}

/// Fails with the fix when the standard library for [`TARGET`] is missing,
/// instead of letting the nested build fail with "can't find crate for
/// `core`".
fn check_target_installed(rustc: &OsString) -> Result<(), String> {
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|error| format!("cannot run {}: {error}", rustc.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} --print sysroot` failed: {}",
            rustc.to_string_lossy(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let target_lib = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
    if target_lib.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {TARGET} is not installed (no {}); \
             run `rustup target add {TARGET}` and build again",
            target_lib.display()
        ))
    }
}

/// A `cargo` command for `workspace_dir` with the outer build's environment
/// scrubbed (see [`REMOVED_VARS`]).
fn nested_cargo(cargo: &OsString, workspace_dir: &Path) -> Command {
    let mut command = Command::new(cargo);
    command.current_dir(workspace_dir);
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if REMOVED_VARS.contains(&name)
            || REMOVED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    command
}

/// Builds every crate of the workspace in `dir` and returns its components.
fn build_workspace(cargo: &OsString, dir: &Path) -> Result<Vec<Artifact>, String> {
    let manifest = dir.join("Cargo.toml");
    let mut build = nested_cargo(cargo, dir);
    build
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        // Cargo reads this script's stdout for `cargo:` directives; the
        // nested build's output belongs on stderr.
        .stdout(std::io::stderr());
    eprintln!("running: {build:?}");
    let status = build
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !status.success() {
        return Err(format!(
            "building {} for {TARGET} failed ({status}); see the cargo output above",
            dir.display()
        ));
    }

    let mut metadata = nested_cargo(cargo, dir);
    metadata
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest);
    let output = metadata
        .output()
        .map_err(|error| format!("cannot run cargo metadata: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata for {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("cargo metadata printed invalid JSON: {error}"))?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .ok_or("cargo metadata has no target_directory")?;
    let release_dir = Path::new(target_dir).join(TARGET).join("release");

    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let mut artifacts = Vec::new();
    for package in packages {
        let name = package["name"].as_str().ok_or("package without a name")?;
        let manifest_path = package["manifest_path"]
            .as_str()
            .ok_or("package without a manifest_path")?;
        let package_dir = Path::new(manifest_path)
            .parent()
            .ok_or("manifest_path has no parent")?
            .to_path_buf();
        println!("cargo:rerun-if-changed={}", package_dir.display());
        let targets = package["targets"]
            .as_array()
            .ok_or("package without targets")?;
        for target in targets {
            let is_cdylib = target["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|kind| kind == "cdylib"));
            if !is_cdylib {
                continue;
            }
            let lib = target["name"].as_str().ok_or("target without a name")?;
            let path = release_dir.join(format!("{}.wasm", lib.replace('-', "_")));
            check_component(&path)?;
            artifacts.push(Artifact {
                package: name.to_owned(),
                description: package["description"].as_str().unwrap_or("").to_owned(),
                dir: package_dir.clone(),
                path,
            });
        }
    }
    artifacts.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(artifacts)
}

/// Fails unless `path` holds a WebAssembly component.
fn check_component(path: &Path) -> Result<(), String> {
    let bytes = fs::read(path)
        .map_err(|error| format!("the build did not produce {}: {error}", path.display()))?;
    if bytes.starts_with(&COMPONENT_HEADER) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a WebAssembly component (was it built for {TARGET}?)",
            path.display()
        ))
    }
}

/// Appends the constants and the `foreach_*` macro of one workspace.
fn generate(
    code: &mut String,
    workspace: &Workspace,
    artifacts: &[Artifact],
) -> Result<(), String> {
    let mut calls = String::new();
    for artifact in artifacts {
        let constant = format!(
            "{}_{}",
            artifact.package.to_uppercase().replace('-', "_"),
            workspace.suffix
        );
        let ident = artifact.package.replace('-', "_");
        let path = path_str(&artifact.path)?;
        let source = artifact.dir.display();
        writeln!(
            code,
            "/// The `{}` {}. {}.\n///\n/// Built from `{source}`.\npub const {constant}: &str = {path:?};\n",
            artifact.package, workspace.what, artifact.description
        )
        .expect("writing to a String cannot fail");
        writeln!(calls, "        $mac!({ident}, {path:?});")
            .expect("writing to a String cannot fail");
    }
    writeln!(
        code,
        "/// Invokes the macro `$mac` once per {what}, as `$mac!(name, \"/path/to/name.wasm\")`,\n\
         /// where `name` is the crate name in snake case (an identifier) and the path a string\n\
         /// literal, usable in `include_bytes!`.\n\
         #[macro_export]\n\
         macro_rules! {foreach} {{\n    ($mac:ident) => {{\n{calls}    }};\n}}\n",
        what = workspace.what,
        foreach = workspace.foreach,
    )
    .expect("writing to a String cannot fail");
    Ok(())
}

/// `path` as UTF-8, which the generated string constants need.
fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}
