//! What a workflow may grant a step beyond its input: directories,
//! outbound HTTP, secrets and models, as written in a definition and as capped by
//! the operator's policy. No wasmtime here; the engine's capabilities turn
//! these into what a running step can reach.
//!
//! Outbound HTTP rules follow Spin's `allowed_outbound_hosts`:
//! `scheme://host[:port]`, where the host may be `*` or start with `*.` and
//! the port may be `*`; a rule without a port allows the scheme's default
//! port only. A rule may also name the methods it allows.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::source::Span;

/// Everything a workflow grants one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepGrants {
    /// Directories, by the path the step sees.
    pub dirs: Vec<DirGrant>,
    /// Outbound HTTP rules.
    pub http: Vec<HttpGrant>,
    /// Secret names.
    pub secrets: Vec<SecretGrant>,
    /// Models the step may run through the host's inference interface.
    pub models: Vec<ModelGrant>,
}

impl StepGrants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
            && self.http.is_empty()
            && self.secrets.is_empty()
            && self.models.is_empty()
    }
}

/// A host directory made visible to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The absolute path the step sees, for example `/data`.
    pub guest: String,
    /// The host directory, relative paths joined to the definition's folder.
    pub host: PathBuf,
    /// Whether the step may create, change and delete files in it.
    pub writable: bool,
    /// Where the grant is written.
    pub span: Span,
}

/// An outbound HTTP rule granted to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The rule.
    pub rule: OutboundRule,
    /// Where it is written.
    pub span: Span,
}

/// A secret granted to a step, read like a config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretGrant {
    /// The secret's name, as the component declared it.
    pub name: String,
    /// The host's name for it: the same as `name` unless the workflow maps
    /// it (`secrets: [{ token: github_pat }]`).
    pub source: String,
    /// Where it is written.
    pub span: Span,
}

/// A model granted to a step, by its name in the model store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGrant {
    /// The model's name, for example `ppocrv6-tiny-det`.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// One allow-list rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lowercase: a name, an IP literal, `*`, or `*.suffix`.
    pub host: String,
    /// `None`: any port (`:*`); otherwise the port (the scheme's default
    /// when the rule does not write one).
    pub port: Option<u16>,
    /// Upper-case methods allowed; `None`: any.
    pub methods: Option<Vec<String>>,
}

impl OutboundRule {
    /// Parses `scheme://host[:port]`, optionally with allowed `methods`.
    pub fn parse(text: &str, methods: Option<Vec<String>>) -> Result<OutboundRule, String> {
        let example = "write it as `https://api.example.com`, `http://10.0.0.5:8080` or `https://*.example.com`";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` has no scheme; {example}"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => {
                return Err(format!(
                    "`{text}`: only `http` and `https` are supported (a step has no raw sockets)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(format!(
                "`{text}`: a rule names a host, not a path or user; {example}"
            ));
        }
        let (host, port) = split_host_port(rest)
            .ok_or_else(|| format!("`{text}` has an invalid port; {example}"))?;
        let host = host.to_ascii_lowercase();
        let valid_host = host == "*" || host.parse::<IpAddr>().is_ok() || {
            let name = host.strip_prefix("*.").unwrap_or(&host);
            !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
        };
        if !valid_host {
            return Err(format!("`{text}` has an invalid host `{host}`; {example}"));
        }
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`{text}` has an invalid port `{port}`; {example}"))?,
            ),
        };
        let methods = methods.map(|methods| {
            methods
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect()
        });
        Ok(OutboundRule {
            scheme,
            host,
            port,
            methods,
        })
    }

    fn host_matches(pattern: &str, host: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => pattern == host,
        }
    }

    /// Whether a request to `scheme://host:port` with `method` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16, method: &str) -> bool {
        self.scheme == scheme
            && Self::host_matches(&self.host, &host.to_ascii_lowercase())
            && self.port.is_none_or(|p| p == port)
            && self
                .methods
                .as_ref()
                .is_none_or(|methods| methods.iter().any(|m| m == method))
    }

    /// Whether everything `other` allows is allowed by `self`: used to check
    /// a workflow's grant against what a component declared, and against
    /// the operator's policy.
    pub fn covers(&self, other: &OutboundRule) -> bool {
        let host = self.host == "*"
            || self.host == other.host
            || (self.host.starts_with("*.")
                && (Self::host_matches(&self.host, other.host.trim_start_matches("*."))
                    || other.host.strip_prefix('*') == self.host.strip_prefix('*')));
        let port = self.port.is_none() || self.port == other.port;
        let methods = match (&self.methods, &other.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|m| mine.contains(m)),
        };
        self.scheme == other.scheme && host && port && methods
    }

    /// The IP address this rule names, if its host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.trim_matches(['[', ']']).parse().ok()
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            None => f.write_str(":*")?,
            Some(port) if Some(port) != default_port(&self.scheme) => write!(f, ":{port}")?,
            Some(_) => {}
        }
        if let Some(methods) = &self.methods {
            write!(f, " ({})", methods.join(", "))?;
        }
        Ok(())
    }
}

/// The default port of `http` and `https`.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]`, with `[v6]` brackets; `None` if malformed.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port))),
        Some(_) => Some((text, None)), // a bare IPv6 literal
        None => Some((text, None)),
    }
}

/// Whether `ip` is anything but a public unicast address: loopback,
/// private, link-local (where cloud metadata services live), shared
/// (carrier-grade NAT), unspecified, broadcast, multicast, documentation,
/// benchmarking or reserved, including those ranges reached through
/// IPv4-mapped, IPv4-compatible or NAT64 IPv6 addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let segments = v6.segments();
            // 64:ff9b::/96, NAT64: the last 32 bits are an IPv4 address.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let octets = v6.octets();
                return is_private_v4(Ipv4Addr::new(
                    octets[12], octets[13], octets[14], octets[15],
                ));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
                || segments[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

/// Checks that `name` can name a model: a plain folder name of lowercase
/// letters, digits, `-`, `_` and `.`, so that it can never reach outside
/// the model store.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a model name: use lowercase letters, digits, `-`, `_` and `.`, \
             for example `ppocrv6-tiny-det`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OutboundRule {
        OutboundRule::parse(text, None).unwrap()
    }

    #[test]
    fn rules_parse_like_spin() {
        let r = rule("https://API.example.com");
        assert_eq!(
            (r.scheme.as_str(), r.host.as_str(), r.port),
            ("https", "api.example.com", Some(443))
        );
        assert_eq!(rule("http://10.0.0.5:8080").port, Some(8080));
        assert_eq!(rule("http://*:*").port, None);
        assert_eq!(rule("http://[::1]:9000").host, "::1");
        assert!(
            OutboundRule::parse("ftp://x", None)
                .unwrap_err()
                .contains("only `http` and `https`")
        );
        assert!(
            OutboundRule::parse("example.com", None)
                .unwrap_err()
                .contains("no scheme")
        );
        assert!(
            OutboundRule::parse("https://x.com/path", None)
                .unwrap_err()
                .contains("not a path")
        );
        assert!(
            OutboundRule::parse("https://x.com:99999", None)
                .unwrap_err()
                .contains("invalid port")
        );
        assert_eq!(
            rule("https://example.com").to_string(),
            "https://example.com"
        );
        assert_eq!(
            rule("http://example.com:*").to_string(),
            "http://example.com:*"
        );
    }

    #[test]
    fn allows_checks_scheme_host_port_and_method() {
        let r = rule("https://*.example.com");
        assert!(r.allows("https", "api.example.com", 443, "GET"));
        assert!(!r.allows("https", "example.com", 443, "GET"));
        assert!(!r.allows("https", "evilexample.com", 443, "GET"));
        assert!(!r.allows("http", "api.example.com", 80, "GET"));
        assert!(!r.allows("https", "api.example.com", 8443, "GET"));
        let get_only = OutboundRule::parse("https://a.com", Some(vec!["get".into()])).unwrap();
        assert!(get_only.allows("https", "a.com", 443, "GET"));
        assert!(!get_only.allows("https", "a.com", 443, "POST"));
    }

    #[test]
    fn covers_orders_rules() {
        assert!(rule("https://*").covers(&rule("https://a.com")));
        assert!(rule("https://*.a.com").covers(&rule("https://x.a.com")));
        assert!(rule("https://*.a.com").covers(&rule("https://*.x.a.com")));
        assert!(!rule("https://*.a.com").covers(&rule("https://a.com")));
        assert!(!rule("https://a.com").covers(&rule("https://*.a.com")));
        assert!(!rule("https://a.com").covers(&rule("https://a.com:*")));
        assert!(rule("http://*:*").covers(&rule("http://127.0.0.1:8080")));
        assert!(!rule("http://*").covers(&rule("http://127.0.0.1:8080")));
        let get = OutboundRule::parse("https://a.com", Some(vec!["GET".into()])).unwrap();
        assert!(!get.covers(&rule("https://a.com")));
        assert!(rule("https://a.com").covers(&get));
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "255.255.255.255",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip} should be private");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip} should be public");
        }
    }
}
