//! The policy file: parsing, precedence and its errors.

use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("/etc/plait/plait.toml"))
}

#[test]
fn an_empty_file_is_the_default_policy() {
    let policy = parse("").unwrap();
    assert_eq!(policy.defaults, Limits::DEFAULT);
    assert!(policy.dirs.is_none() && policy.outbound_http.is_none());
    assert!(!policy.private_networks);
}

#[test]
fn a_full_file_parses() {
    let policy = parse(
        r#"
        [limits]
        memory = "128MiB"
        timeout = "10s"
        fuel = "1e9"
        [limits.max]
        memory = "256MiB"
        [grants]
        dirs = ["data"]
        writable_dirs = false
        outbound_http = ["https://*.example.com"]
        private_networks = true
        secrets = ["api_token"]
        [secrets]
        file = "secrets.toml"
        "#,
    )
    .unwrap();
    assert_eq!(policy.defaults.memory, 128 << 20);
    assert_eq!(policy.defaults.timeout, Duration::from_secs(10));
    assert_eq!(policy.defaults.fuel, Some(1_000_000_000));
    assert_eq!(policy.max.memory, Some(256 << 20));
    assert_eq!(policy.dirs.unwrap(), vec![PathBuf::from("/etc/plait/data")]);
    assert!(!policy.writable_dirs && policy.private_networks);
    assert_eq!(
        policy.secret_source.file.unwrap(),
        PathBuf::from("/etc/plait/secrets.toml")
    );
}

#[test]
fn mistakes_are_named() {
    let error = parse("[limits]\nmemroy = \"1GiB\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `memroy`"), "{error}");
    let error = parse("[limits]\nmemory = \"1 gigabyte\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`limits.memory`") && error.contains("unknown size unit"),
        "{error}"
    );
    // A cap below a built-in default lowers the default.
    let capped = parse("[limits.max]\nmemory = \"64MiB\"\nfuel = \"1e6\"\n").unwrap();
    assert_eq!(capped.defaults.memory, 64 << 20);
    assert_eq!(capped.defaults.fuel, Some(1_000_000));
    let error = parse("[limits]\nmemory = \"1GiB\"\n[limits.max]\nmemory = \"512MiB\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("above `limits.max.memory`"), "{error}");
    let error = parse("[grants]\noutbound_http = [\"example.com\"]\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("no scheme"), "{error}");
}

#[test]
fn secrets_come_from_the_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.toml");
    std::fs::write(&file, "api_token = \"from-file\"\n").unwrap();
    let source = SecretSource {
        file: Some(file),
        env_prefix: "PLAIT_TEST_POLICY_SECRET_".into(),
    };
    let values = source.resolve(&["api_token"]).unwrap();
    assert_eq!(values["api_token"], "from-file");
    let error = source.resolve(&["other-key"]).unwrap_err().to_string();
    assert!(
        error.contains("PLAIT_TEST_POLICY_SECRET_OTHER_KEY"),
        "{error}"
    );
}
