//! `plait serve` and `plait token`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use plait::executor::Executor;
use plait_server::auth::{Scope, Tokens};
use plait_server::catalog::Catalog;
use plait_server::{Server, ServerConfig};

use super::home::Home;
use super::{StoreArgs, UsageError};

/// Arguments of `plait serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on [default: the policy's `[server] listen`,
    /// else 127.0.0.1:8080]. Port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR", env = "PLAIT_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// The folder of workflow files to serve [default: the policy's
    /// `[server] workflows`, else `workflows/` in the Plait home].
    #[arg(long, value_name = "DIR")]
    workflows: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `plait token`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed once, and only its hash is kept.
    Create {
        /// A name for it (the audit log says `token:NAME`).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What it may do; repeatable: runs:write, runs:read,
        /// signals:write, admin.
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<Scope>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the API tokens (names and scopes; the tokens are not kept).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON array on stdout: `[{"name", "scopes",
        /// "created_at"}]`.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token: it stops working at once, even on a running
    /// server.
    Revoke {
        /// The token's name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl ServeArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
}

impl TokenCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            TokenCommand::Create { store, .. }
            | TokenCommand::List { store, .. }
            | TokenCommand::Revoke { store, .. } => store,
        }
    }
}

/// The token file of a Plait home.
fn tokens(store: &StoreArgs) -> anyhow::Result<Tokens> {
    let home = Home::resolve(store.store.clone())?;
    Ok(Tokens::at(&home.tokens_file()))
}

/// The home's webhook signing secret, made on first use.
fn webhook_secret(home: &Home) -> anyhow::Result<String> {
    let path = home.webhook_secret_file();
    plait_server::webhooks::secret(&path)
        .with_context(|| format!("reading the webhook secret `{}`", path.display()))
}

/// `plait webhooks`.
#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Print the secret webhook messages are signed with (`whsec_...`),
    /// for receivers to verify them; made on first use.
    Secret {
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl WebhooksCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            WebhooksCommand::Secret { store } => store,
        }
    }
}

/// `plait webhooks ...`.
pub fn webhooks(command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Secret { store } => {
            let home = Home::resolve(store.store)?;
            writeln!(std::io::stdout(), "{}", webhook_secret(&home)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plait token ...`.
pub fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            name,
            scopes,
            store,
        } => {
            let tokens = tokens(&store)?;
            let (token, record) = tokens
                .create(&name, &scopes)
                .map_err(|error| UsageError(error.to_string()))?;
            writeln!(std::io::stdout(), "{token}")?;
            eprintln!(
                "token `{}` created with scopes {}; it is shown only now: keep it in a secret store",
                record.name,
                record.scope_list()
            );
        }
        TokenCommand::List { store, json } => {
            let tokens = tokens(&store)?;
            let list = tokens.list()?;
            if json {
                let list: Vec<serde_json::Value> = list
                    .iter()
                    .map(|record| {
                        serde_json::json!({
                            "name": record.name,
                            "scopes": record.scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>(),
                            "created_at": super::output::timestamp(record.created_at_ms),
                        })
                    })
                    .collect();
                super::output::print_json(&serde_json::Value::Array(list))?;
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                eprintln!("no API tokens; `plait token create` makes one");
            }
            for record in list {
                writeln!(
                    std::io::stdout(),
                    "{:<24}  {:<40}  created {}",
                    record.name,
                    record.scope_list(),
                    super::output::timestamp(record.created_at_ms)
                )?;
            }
        }
        TokenCommand::Revoke { name, store } => {
            let tokens = tokens(&store)?;
            tokens
                .revoke(&name)
                .map_err(|error| UsageError(error.to_string()))?;
            eprintln!("token `{name}` revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plait serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.store.store.clone())?;
    let policy = home.policy(args.store.policy.clone())?;
    let mut settings = policy.server.clone();
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    let workflows = args
        .workflows
        .clone()
        .or_else(|| settings.workflows.clone())
        .unwrap_or_else(|| home.workflows_dir());
    if !workflows.is_dir() {
        return Err(UsageError(format!(
            "the workflows folder `{}` does not exist; create it and put workflow files in it, or pass `--workflows DIR`",
            workflows.display()
        ))
        .into());
    }
    let triggers: Vec<String> = settings
        .triggers
        .iter()
        .map(|trigger| {
            use plait_server::triggers::TriggerKind;
            let what = match &trigger.kind {
                TriggerKind::Webhook { .. } => format!("POST /v1/triggers/{}", trigger.name),
                TriggerKind::Cron(schedule) => {
                    format!("cron `{}` {}", schedule.text, schedule.zone_name)
                }
                TriggerKind::Watch(watched) => format!("watching {}", watched.dir.display()),
            };
            format!("{} ({what}) → {}", trigger.name, trigger.workflow)
        })
        .collect();
    let store = home.open_store()?;
    let engine = home.engine(&policy)?;
    let catalog =
        Arc::new(Catalog::new(&workflows, engine, policy.clone()).with_bundles(home.bundles()));
    let executor = Executor::with_concurrency(store.clone(), policy.concurrency)
        .with_max_interruptions(policy.max_interruptions)
        .parking();
    let server = Server::bind(ServerConfig {
        store: store.clone(),
        executor,
        catalog: catalog.clone(),
        tokens: Tokens::at(&home.tokens_file()),
        settings,
        max_input: policy.max_input,
        webhook_secret: webhook_secret(&home)?,
    })
    .await
    .map_err(|error| match error {
        plait_server::ServeError::OpenToNetwork(_) | plait_server::ServeError::Trigger(_) => {
            UsageError(error.to_string()).into()
        }
        other => anyhow::Error::from(other),
    })?;
    let address = server.local_addr()?;
    // Plans build concurrently; a slow one (a `describe()` that takes its
    // whole timeout) is served when ready instead of holding the start.
    catalog.settle(std::time::Duration::from_secs(1)).await;
    let served = catalog.entries().await;
    let (good, bad): (Vec<_>, Vec<_>) = served.iter().partition(|entry| entry.plan.is_ok());
    for entry in &bad {
        if let Err(error) = &entry.plan {
            eprintln!("warning: `{}` is not served: {error}", entry.path.display());
        }
    }
    for path in catalog.loading() {
        eprintln!(
            "still loading `{}`: served once its components are loaded",
            path.display()
        );
    }
    eprintln!(
        "serving {} workflow{} from {} on http://{address} ({})",
        good.len(),
        if good.len() == 1 { "" } else { "s" },
        workflows.display(),
        if server.authenticated() {
            "API tokens required"
        } else {
            "no API tokens exist: open to this machine only"
        }
    );
    for trigger in &triggers {
        eprintln!("trigger {trigger}");
    }
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
