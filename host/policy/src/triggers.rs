//! The operator's `[[server.triggers]]` tables: what starts runs besides
//! an API call (a webhook URL, a cron schedule, a watched folder), checked
//! when the policy is read. The server (`plait-server`) runs them.

use std::path::{Path, PathBuf};

use croner::parser::{CronParser, Seconds};
use serde::Deserialize;
use serde_json::Value;

/// One `[[server.triggers]]` table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerTable {
    name: Option<String>,
    workflow: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    input: Option<toml::Value>,
    // webhook
    auth: Option<String>,
    secret: Option<String>,
    // webhook and watch
    blob: Option<String>,
    // cron
    schedule: Option<String>,
    timezone: Option<String>,
    catch_up: Option<bool>,
    // watch
    dir: Option<PathBuf>,
    extensions: Option<Vec<String>>,
    move_to: Option<PathBuf>,
}

/// A way runs of a workflow start without an API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Unique among the triggers; the webhook URL's last segment.
    pub name: String,
    /// The served workflow it starts (its `name`).
    pub workflow: String,
    /// The run's input when the trigger brings none of its own: every
    /// scheduled run, every file's run, a webhook with a non-JSON body.
    pub input: Value,
    /// What starts the runs.
    pub kind: TriggerKind,
}

/// What starts a trigger's runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// `POST /v1/triggers/{name}`.
    Webhook {
        /// How the request is authenticated.
        auth: WebhookAuth,
        /// A body that is not JSON becomes this input blob; `None`: only
        /// JSON bodies are taken.
        blob: Option<String>,
    },
    /// A cron schedule (boxed: a parsed pattern and a time zone are large).
    Cron(Box<Schedule>),
    /// A watched folder.
    Watch(WatchedDir),
}

/// How a webhook trigger's requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    /// `Authorization: Bearer` with an API token allowing `runs:write`.
    Token,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64 HMAC-SHA256>`, keyed with host secret
    /// `secret` (`whsec_...`).
    StandardWebhooks {
        /// The host secret's name.
        secret: String,
    },
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>` of the body,
    /// keyed with host secret `secret`; `X-GitHub-Delivery` is the key.
    GitHub {
        /// The host secret's name.
        secret: String,
    },
}

impl WebhookAuth {
    /// The host secret it needs, if any.
    pub fn secret(&self) -> Option<&str> {
        match self {
            WebhookAuth::Token => None,
            WebhookAuth::StandardWebhooks { secret } | WebhookAuth::GitHub { secret } => {
                Some(secret)
            }
        }
    }
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// As written: five fields (minute to weekday), six with seconds
    /// first, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub text: String,
    /// Parsed.
    pub cron: croner::Cron,
    /// The IANA name of the zone the schedule is read in (`UTC` unless
    /// set), so that `0 9 * * MON-FRI` means nine o'clock local time
    /// through daylight-saving changes.
    pub zone_name: String,
    /// The zone.
    pub zone: jiff::tz::TimeZone,
    /// Whether the newest slot missed while the server was down starts a
    /// run when it comes back.
    pub catch_up: bool,
}

/// A folder whose new files start runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDir {
    /// The folder (its files, not its subfolders).
    pub dir: PathBuf,
    /// The input blob each file becomes.
    pub blob: String,
    /// Only files with these extensions (lower case, no dot); `None`: any.
    pub extensions: Option<Vec<String>>,
    /// Where a file is moved once its run is recorded; `None`: it stays.
    pub move_to: Option<PathBuf>,
}

/// The trigger types, as written in `type`.
const TYPES: &str = "`webhook`, `cron` or `watch`";

impl Trigger {
    /// Checks a `[[server.triggers]]` table; relative folders are relative
    /// to `base` (the policy file's folder). An error names the key (under
    /// `server.triggers`) and what to write.
    pub fn parse(table: &TriggerTable, base: &Path) -> Result<Trigger, (String, String)> {
        let fail = |key: &str, message: String| Err((key.to_owned(), message));
        let Some(name) = table.name.clone() else {
            return fail("name", "every trigger needs a `name`".to_owned());
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            || !name.as_bytes()[0].is_ascii_alphanumeric()
        {
            return fail(
                "name",
                format!(
                    "`{name}` is not a trigger name: use 1 to 64 lower-case letters, digits, `-` and `_`, starting with a letter or digit (it is part of a URL)"
                ),
            );
        }
        let at = |key: &str| format!("{key} (trigger `{name}`)");
        let Some(workflow) = table.workflow.clone().filter(|w| !w.trim().is_empty()) else {
            return fail(
                &at("workflow"),
                "every trigger needs the `workflow` it starts (a served workflow's `name`)"
                    .to_owned(),
            );
        };
        let input = match &table.input {
            None => Value::Object(Default::default()),
            Some(value) => serde_json::to_value(value)
                .map_err(|error| (at("input"), format!("cannot be a run input: {error}")))?,
        };
        let blob_name = |blob: &Option<String>| -> Result<Option<String>, (String, String)> {
            match blob {
                None => Ok(None),
                Some(blob)
                    if !blob.is_empty()
                        && blob
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Ok(Some(blob.clone()))
                }
                Some(blob) => Err((
                    at("blob"),
                    format!("`{blob}` is not an input blob name: use letters, digits, `-` and `_`"),
                )),
            }
        };
        // Keys that belong to another type are mistakes worth naming.
        let only = |kind: &str, keys: &[(&str, bool)]| -> Result<(), (String, String)> {
            for (key, present) in keys {
                if *present {
                    return Err((
                        at(key),
                        format!("`{key}` does not apply to a `{kind}` trigger"),
                    ));
                }
            }
            Ok(())
        };
        let kind = match table.kind.as_deref() {
            None => {
                return fail(
                    &at("type"),
                    format!("every trigger needs a `type`: {TYPES}"),
                );
            }
            Some("webhook") => {
                only(
                    "webhook",
                    &[
                        ("schedule", table.schedule.is_some()),
                        ("timezone", table.timezone.is_some()),
                        ("catch_up", table.catch_up.is_some()),
                        ("dir", table.dir.is_some()),
                        ("extensions", table.extensions.is_some()),
                        ("move_to", table.move_to.is_some()),
                    ],
                )?;
                let secret = |auth: &str| match &table.secret {
                    Some(secret) if !secret.is_empty() => Ok(secret.clone()),
                    _ => Err((
                        at("secret"),
                        format!(
                            "`auth = \"{auth}\"` needs `secret`: the name of the host secret that holds the signing key (`[secrets]` file or `PLAIT_SECRET_<NAME>`)"
                        ),
                    )),
                };
                let auth = match table.auth.as_deref() {
                    None | Some("token") => {
                        if table.secret.is_some() {
                            return fail(
                                &at("secret"),
                                "`secret` is for signed webhooks (`auth = \"standard-webhooks\"` or `\"github\"`); token-authenticated triggers check the API token".to_owned(),
                            );
                        }
                        WebhookAuth::Token
                    }
                    Some(auth @ "standard-webhooks") => WebhookAuth::StandardWebhooks {
                        secret: secret(auth)?,
                    },
                    Some(auth @ "github") => WebhookAuth::GitHub {
                        secret: secret(auth)?,
                    },
                    Some(other) => {
                        return fail(
                            &at("auth"),
                            format!(
                                "`{other}` is not a webhook authentication: use `token` (an API token with `runs:write`, the default), `standard-webhooks` or `github`"
                            ),
                        );
                    }
                };
                TriggerKind::Webhook {
                    auth,
                    blob: blob_name(&table.blob)?,
                }
            }
            Some("cron") => {
                only(
                    "cron",
                    &[
                        ("auth", table.auth.is_some()),
                        ("secret", table.secret.is_some()),
                        ("blob", table.blob.is_some()),
                        ("dir", table.dir.is_some()),
                        ("extensions", table.extensions.is_some()),
                        ("move_to", table.move_to.is_some()),
                    ],
                )?;
                let Some(text) = table.schedule.clone() else {
                    return fail(
                        &at("schedule"),
                        "a `cron` trigger needs a `schedule`, for example `\"0 2 * * *\"` (02:00 every day)".to_owned(),
                    );
                };
                let cron = parse_cron(&text).map_err(|message| (at("schedule"), message))?;
                let zone_name = table.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
                let zone = jiff::tz::TimeZone::get(&zone_name).map_err(|error| {
                    (
                        at("timezone"),
                        format!(
                            "`{zone_name}` is not a time zone this host knows ({error}); use an IANA name such as `Europe/Paris`, or `UTC`"
                        ),
                    )
                })?;
                TriggerKind::Cron(Box::new(Schedule {
                    text,
                    cron,
                    zone_name,
                    zone,
                    catch_up: table.catch_up.unwrap_or(true),
                }))
            }
            Some("watch") => {
                only(
                    "watch",
                    &[
                        ("auth", table.auth.is_some()),
                        ("secret", table.secret.is_some()),
                        ("schedule", table.schedule.is_some()),
                        ("timezone", table.timezone.is_some()),
                        ("catch_up", table.catch_up.is_some()),
                    ],
                )?;
                let Some(dir) = &table.dir else {
                    return fail(
                        &at("dir"),
                        "a `watch` trigger needs the `dir` it watches".to_owned(),
                    );
                };
                let extensions = table.extensions.as_ref().map(|extensions| {
                    extensions
                        .iter()
                        .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                        .collect::<Vec<_>>()
                });
                if extensions
                    .as_ref()
                    .is_some_and(|e| e.iter().any(String::is_empty))
                {
                    return fail(
                        &at("extensions"),
                        "an extension cannot be empty; write them as `[\"pdf\", \"png\"]`"
                            .to_owned(),
                    );
                }
                let dir = plait_types::paths::normalize(&base.join(dir));
                let move_to = table
                    .move_to
                    .as_ref()
                    .map(|to| plait_types::paths::normalize(&base.join(to)));
                if move_to.as_ref() == Some(&dir) {
                    return fail(
                        &at("move_to"),
                        "`move_to` is the watched folder itself; name another folder (a subfolder such as `done` is fine: only files directly in `dir` are watched)".to_owned(),
                    );
                }
                TriggerKind::Watch(WatchedDir {
                    dir,
                    blob: blob_name(&table.blob)?.unwrap_or_else(|| "document".to_owned()),
                    extensions,
                    move_to,
                })
            }
            Some(other) => {
                return fail(
                    &at("type"),
                    format!("`{other}` is not a trigger type: {TYPES}"),
                );
            }
        };
        Ok(Trigger {
            name,
            workflow,
            input,
            kind,
        })
    }

    /// The actor runs it starts are recorded under.
    pub fn actor(&self) -> String {
        format!("trigger:{}", self.name)
    }
}

/// Checks the triggers of a policy: each valid, names unique.
pub fn parse_all(tables: &[TriggerTable], base: &Path) -> Result<Vec<Trigger>, (String, String)> {
    let mut triggers: Vec<Trigger> = Vec::with_capacity(tables.len());
    for table in tables {
        let trigger = Trigger::parse(table, base)?;
        if triggers.iter().any(|other| other.name == trigger.name) {
            return Err((
                "name".to_owned(),
                format!(
                    "two triggers are named `{}`; names must be unique",
                    trigger.name
                ),
            ));
        }
        triggers.push(trigger);
    }
    Ok(triggers)
}

/// Parses a schedule: five fields, six with seconds first (seven with a
/// year), or a nickname (`@daily`). Day of month and day of week match
/// either, as in Vixie cron.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|error| {
            format!(
                "`{text}` is not a cron schedule ({error}); write five fields (minute hour day-of-month month day-of-week, for example `0 2 * * *`), six with seconds first, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Trigger>, (String, String)> {
        #[derive(Deserialize)]
        struct File {
            triggers: Vec<TriggerTable>,
        }
        let file: File = toml::from_str(text).unwrap();
        parse_all(&file.triggers, Path::new("/etc/plait"))
    }

    #[test]
    fn each_type_parses_with_its_defaults() {
        let triggers = parse(
            r#"
[[triggers]]
name = "hook"
workflow = "echo"
type = "webhook"

[[triggers]]
name = "nightly"
workflow = "report"
type = "cron"
schedule = "0 2 * * *"
timezone = "Europe/Paris"
input = { kind = "nightly" }

[[triggers]]
name = "inbox"
workflow = "document-intake"
type = "watch"
dir = "inbox"
extensions = [".PDF", "png"]
move_to = "inbox/done"
"#,
        )
        .unwrap();
        assert_eq!(
            triggers[0].kind,
            TriggerKind::Webhook {
                auth: WebhookAuth::Token,
                blob: None
            }
        );
        let TriggerKind::Cron(schedule) = &triggers[1].kind else {
            panic!("{:?}", triggers[1]);
        };
        assert_eq!(schedule.zone_name, "Europe/Paris");
        assert!(schedule.catch_up);
        assert_eq!(triggers[1].input, serde_json::json!({"kind": "nightly"}));
        let TriggerKind::Watch(watched) = &triggers[2].kind else {
            panic!("{:?}", triggers[2]);
        };
        assert_eq!(watched.dir, Path::new("/etc/plait/inbox"));
        assert_eq!(watched.blob, "document");
        assert_eq!(
            watched.extensions,
            Some(vec!["pdf".to_owned(), "png".to_owned()])
        );
        assert_eq!(
            watched.move_to.as_deref(),
            Some(Path::new("/etc/plait/inbox/done"))
        );
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let cases = [
            (
                "name = \"Bad Name\"\nworkflow = \"w\"\ntype = \"webhook\"",
                "name",
                "lower-case",
            ),
            (
                "name = \"t\"\ntype = \"webhook\"",
                "workflow (trigger `t`)",
                "workflow",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"",
                "type (trigger `t`)",
                "`webhook`, `cron` or `watch`",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"timer\"",
                "type (trigger `t`)",
                "`timer` is not",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"cron\"",
                "schedule (trigger `t`)",
                "needs a `schedule`",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"cron\"\nschedule = \"61 * * * *\"",
                "schedule (trigger `t`)",
                "not a cron schedule",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"cron\"\nschedule = \"@daily\"\ntimezone = \"Mars/Olympus\"",
                "timezone (trigger `t`)",
                "IANA",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"cron\"\nschedule = \"@daily\"\ndir = \"x\"",
                "dir (trigger `t`)",
                "does not apply to a `cron`",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"webhook\"\nauth = \"github\"",
                "secret (trigger `t`)",
                "needs `secret`",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"webhook\"\nauth = \"basic\"",
                "auth (trigger `t`)",
                "`token`",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"webhook\"\nsecret = \"s\"",
                "secret (trigger `t`)",
                "signed webhooks",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"watch\"",
                "dir (trigger `t`)",
                "needs the `dir`",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"watch\"\ndir = \"a\"\nmove_to = \"a/\"",
                "move_to (trigger `t`)",
                "watched folder itself",
            ),
            (
                "name = \"t\"\nworkflow = \"w\"\ntype = \"watch\"\ndir = \"a\"\nblob = \"a b\"",
                "blob (trigger `t`)",
                "not an input blob name",
            ),
        ];
        for (table, key, message) in cases {
            let (got_key, got) = parse(&format!("[[triggers]]\n{table}\n")).unwrap_err();
            assert_eq!(got_key, key, "{table}: {got}");
            assert!(got.contains(message), "{table}: {got}");
        }
        let (key, message) = parse(
            "[[triggers]]\nname = \"t\"\nworkflow = \"w\"\ntype = \"webhook\"\n[[triggers]]\nname = \"t\"\nworkflow = \"v\"\ntype = \"webhook\"\n",
        )
        .unwrap_err();
        assert_eq!(key, "name");
        assert!(message.contains("unique"), "{message}");
    }
}
