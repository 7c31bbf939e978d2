//! Resource limits on one step invocation: what they are, how they combine,
//! and how an exceeded one is named; the engine enforces them inside
//! wasmtime.
//!
//! A limit comes from, in order of precedence: the step's `limits:`, the
//! workflow's `limits:`, the operator policy's `[limits]` defaults, and
//! finally [`Limits::DEFAULT`]. The policy's `[limits.max]` caps what a
//! workflow may ask for; a workflow asking for more is refused before it
//! runs (see the `plait-policy` crate).
//!
//! Enforcement:
//! - **memory**: a `wasmtime::ResourceLimiter` (the engine's `StepLimiter`) counts
//!   the linear memory of every memory in the instance together and traps
//!   the growth that would pass the limit;
//! - **timeout**: the invocation future is dropped at the deadline; epoch
//!   interruption makes a guest in a tight loop yield every
//!   `EPOCH_TICK` (the engine's), so the deadline is honoured within a
//!   tick even if the guest never calls the host;
//! - **fuel**: wasmtime's fuel metering, a deterministic instruction budget;
//! - **output**: the size of the output JSON plus its blobs, checked when
//!   the step returns (the memory limit bounds what a step can build);
//! - **logs**: bytes of log records plus stdout and stderr; the write that
//!   passes the limit ends the step;
//! - **stack**: wasmtime's fixed native stack limit; a recursion past it
//!   ends the step as a `stack` limit.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fixed, host-wide caps on the shape of an instance. A Rust component has
/// a handful of core instances, tables and memories; these only stop a
/// component built to exhaust the host's bookkeeping.
pub const MAX_INSTANCES: usize = 64;
/// See [`MAX_INSTANCES`].
pub const MAX_TABLES: usize = 64;
/// See [`MAX_INSTANCES`].
pub const MAX_MEMORIES: usize = 16;
/// The most elements one table may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The limits of one step invocation, all set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Total linear memory of the instance, in bytes.
    pub memory: u64,
    /// Wall-clock time of one invocation, instantiation included.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Instruction budget (wasmtime fuel units); `None`: unmetered.
    pub fuel: Option<u64>,
    /// Bytes of output: the JSON text plus every blob.
    pub output: u64,
    /// Bytes of logging: log messages and fields plus stdout and stderr.
    pub logs: u64,
}

impl Limits {
    /// What a step gets when neither the workflow nor the policy says.
    pub const DEFAULT: Limits = Limits {
        memory: 256 << 20,
        timeout: Duration::from_secs(300),
        fuel: None,
        output: 64 << 20,
        logs: 1 << 20,
    };

    /// These limits with every value `settings` sets replacing this one.
    pub fn with(self, settings: &LimitSettings) -> Limits {
        Limits {
            memory: settings.memory.unwrap_or(self.memory),
            timeout: settings.timeout.unwrap_or(self.timeout),
            fuel: settings.fuel.or(self.fuel),
            output: settings.output.unwrap_or(self.output),
            logs: settings.logs.unwrap_or(self.logs),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Limits as written in a workflow or policy: each one optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// See [`Limits::memory`].
    pub memory: Option<u64>,
    /// See [`Limits::timeout`].
    pub timeout: Option<Duration>,
    /// See [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// See [`Limits::output`].
    pub output: Option<u64>,
    /// See [`Limits::logs`].
    pub logs: Option<u64>,
    /// Where they are written, in a definition.
    pub span: Option<crate::source::Span>,
}

impl LimitSettings {
    /// The settings of `self` that go past `max`, each as
    /// `(limit, asked, max)` in words.
    pub fn exceeding(&self, max: &LimitSettings) -> Vec<(Limit, String, String)> {
        let mut over = Vec::new();
        let mut check = |limit: Limit, asked: Option<u64>, cap: Option<u64>| {
            if let (Some(asked), Some(cap)) = (asked, cap)
                && asked > cap
            {
                over.push((limit, limit.format(asked), limit.format(cap)));
            }
        };
        check(Limit::Memory, self.memory, max.memory);
        check(
            Limit::Timeout,
            self.timeout.map(|t| t.as_millis() as u64),
            max.timeout.map(|t| t.as_millis() as u64),
        );
        check(Limit::Fuel, self.fuel, max.fuel);
        check(Limit::Output, self.output, max.output);
        check(Limit::Logs, self.logs, max.logs);
        over
    }
}

/// One kind of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    /// Linear memory.
    Memory,
    /// Wall-clock time.
    Timeout,
    /// Instruction budget.
    Fuel,
    /// Output size.
    Output,
    /// Log volume.
    Logs,
    /// Native stack depth (fixed by the host).
    Stack,
    /// Instances, tables or table elements (fixed by the host).
    Instance,
}

impl Limit {
    /// The key in `limits:` and `plait.toml`.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Timeout => "timeout",
            Limit::Fuel => "fuel",
            Limit::Output => "output",
            Limit::Logs => "logs",
            Limit::Stack => "stack",
            Limit::Instance => "instance",
        }
    }

    /// Whether running the step again can help when this limit was hit.
    ///
    /// Only a timeout can be transient (a slow network, a busy machine);
    /// memory, fuel, output, log volume and stack depth are functions of
    /// the code and its input, so the same attempt would hit them again.
    pub fn is_retryable(self) -> bool {
        self == Limit::Timeout
    }

    /// `value` in this limit's unit: bytes as sizes, milliseconds as a
    /// duration, fuel as a count.
    pub fn format(self, value: u64) -> String {
        match self {
            Limit::Timeout => humantime::format_duration(Duration::from_millis(value)).to_string(),
            Limit::Fuel | Limit::Instance => format_count(value),
            Limit::Memory | Limit::Output | Limit::Logs | Limit::Stack => format_size(value),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A limit a step went past: the trap or error that ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{limit} limit {value} exceeded{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// The limit's value, in words (`64 MiB`, `5s`, `1e9`).
    pub value: String,
    /// What the step did, when known (`the step returned 80 MiB`).
    pub detail: Option<String>,
}

impl LimitExceeded {
    /// `limit` at `value` (in the limit's unit), with an optional detail.
    pub fn new(limit: Limit, value: u64, detail: Option<String>) -> LimitExceeded {
        LimitExceeded {
            limit,
            value: limit.format(value),
            detail,
        }
    }
}

/// Parses a size: a whole number of bytes, or a number with a unit
/// (`KiB`, `MiB`, `GiB`, or the decimal `kB`, `MB`, `GB`), for example
/// `64MiB`, `1.5 GiB`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.replace('_', "").parse().map_err(|_| {
        format!("`{text}` is not a size; write a number of bytes or, for example, `64MiB`")
    })?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use B, KiB, MiB, GiB (or kB, MB, GB)"
            ));
        }
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 50) as f64 {
        return Err(format!(
            "`{text}` is out of range: a size is at least 1 byte and at most 1 PiB"
        ));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `5s`, `250ms`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| {
        format!("`{text}` is not a duration ({error}); write for example `5s`, `250ms` or `2m`")
    })?;
    if duration.is_zero() {
        return Err(format!("`{text}` is zero; a timeout must be positive"));
    }
    Ok(duration)
}

/// Parses a fuel budget: a positive whole number, in digits (`1000000`,
/// `1_000_000`) or scientific notation (`1e9`).
pub fn parse_fuel(text: &str) -> Result<u64, String> {
    let cleaned = text.trim().replace('_', "");
    let value = cleaned
        .parse::<u64>()
        .ok()
        .or_else(|| {
            cleaned
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && v.fract() == 0.0 && *v >= 1.0 && *v < 1.8e19)
                .map(|v| v as u64)
        })
        .filter(|v| *v > 0);
    value.ok_or_else(|| {
        format!("`{text}` is not a fuel budget; write a positive whole number such as `1000000000` or `1e9`")
    })
}

/// `bytes` in the largest binary unit that keeps it readable: `64 MiB`,
/// `1.5 GiB`, `900 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (factor, unit) in UNITS {
        if bytes >= factor {
            let value = bytes as f64 / factor as f64;
            return if value.fract() == 0.0 {
                format!("{value:.0} {unit}")
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

/// A count, in scientific notation when it is a round power-of-ten
/// multiple (`1e9`), otherwise in digits.
fn format_count(value: u64) -> String {
    if value >= 1_000_000 {
        let exponent = (value as f64).log10().floor() as i32;
        let mantissa = value as f64 / 10f64.powi(exponent);
        if (mantissa - mantissa.round()).abs() < 1e-9 {
            return if mantissa.round() == 1.0 {
                format!("1e{exponent}")
            } else {
                format!("{}e{exponent}", mantissa.round())
            };
        }
    }
    value.to_string()
}

/// Serializes a duration as whole milliseconds.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(
            parse_size("64 mb")
                .unwrap_err()
                .contains("unknown size unit `mb`")
        );
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("0").unwrap_err().contains("out of range"));
    }

    #[test]
    fn durations_and_fuel_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_fuel("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_fuel("1_000"), Ok(1000));
        assert!(parse_fuel("-5").is_err());
        assert!(parse_fuel("1.5").is_err());
    }

    #[test]
    fn exceeded_limits_name_themselves() {
        let memory = LimitExceeded::new(Limit::Memory, 64 << 20, None);
        assert_eq!(memory.to_string(), "memory limit 64 MiB exceeded");
        let timeout = LimitExceeded::new(Limit::Timeout, 5000, None);
        assert_eq!(timeout.to_string(), "timeout limit 5s exceeded");
        let fuel = LimitExceeded::new(Limit::Fuel, 1_000_000_000, Some("x".into()));
        assert_eq!(fuel.to_string(), "fuel limit 1e9 exceeded (x)");
        assert_eq!(format_count(2_500_000), "2500000");
        assert_eq!(format_size(1536), "1.5 KiB");
    }

    #[test]
    fn settings_override_in_order_and_caps_are_checked() {
        let workflow = LimitSettings {
            memory: Some(64 << 20),
            timeout: Some(Duration::from_secs(5)),
            ..LimitSettings::default()
        };
        let limits = Limits::DEFAULT.with(&workflow);
        assert_eq!(limits.memory, 64 << 20);
        assert_eq!(limits.output, Limits::DEFAULT.output);
        let max = LimitSettings {
            memory: Some(32 << 20),
            ..LimitSettings::default()
        };
        let over = workflow.exceeding(&max);
        assert_eq!(over.len(), 1);
        assert_eq!(over[0], (Limit::Memory, "64 MiB".into(), "32 MiB".into()));
    }
}
