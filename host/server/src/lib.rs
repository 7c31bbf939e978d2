//! `plait serve`: the HTTP API that starts, watches and steers runs.
//!
//! The server is the CLI's executor and store behind axum: the same runs,
//! the same journal, the same idempotency keys. Its parts:
//! [`auth`] (bearer tokens with scopes, kept as hashes), [`rate`] (a bucket
//! per token), [`catalog`] (the workflows folder), [`dispatch`] (the durable
//! queue: which runs execute when), [`api`] (the handlers and their OpenAPI
//! document), [`events`] (Server-Sent Events from each run's event log) and
//! [`problem`] (every error as RFC 9457 problem details).
//!
//! Requests pass, in order: the trace context (`traceparent` in, a
//! `traceresponse` header out), the body size cap, then in each handler the
//! caller's token (401/403), its rate limit (429) and the queue's room
//! (503), each refusal with `Retry-After` where waiting helps.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod dispatch;
pub mod events;
pub mod problem;
pub mod rate;
pub mod triggers;
pub mod webhooks;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use self::auth::{Scope, TokenRecord, Tokens};
use self::catalog::Catalog;
use self::dispatch::Dispatcher;
use self::problem::Problem;
use self::rate::RateLimiter;
use plait::policy::ServerSettings;
use plait::store::RunStore;
use plait::telemetry::{Metrics, TraceContext};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listening on a non-loopback address with no token to check.
    #[error(
        "refusing to serve on {0} without authentication: no API token exists, so anyone who can reach that address could start runs; create one with `plait token create --name NAME --scope runs:write --scope runs:read`, or listen on 127.0.0.1"
    )]
    OpenToNetwork(SocketAddr),
    /// The address cannot be listened on.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file is unreadable.
    #[error(transparent)]
    Tokens(#[from] auth::TokenError),
    /// A trigger cannot work as configured.
    #[error("{0}")]
    Trigger(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] plait::store::StoreError),
}

/// What every handler shares.
pub struct AppState {
    /// The journal.
    pub store: Arc<dyn RunStore>,
    /// The queue and the executor.
    pub dispatcher: Arc<Dispatcher>,
    /// The workflows served.
    pub catalog: Arc<Catalog>,
    /// The API tokens.
    pub tokens: Tokens,
    /// Whether requests without a token are served while no token exists
    /// (a loopback address). The token file is read at each request, so a
    /// token created while serving closes this mode at once.
    open: bool,
    limiter: RateLimiter,
    /// The `[server]` settings.
    pub settings: ServerSettings,
    /// The largest run input (`[runtime] max_input`).
    pub max_input: u64,
    /// The metrics `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Idempotency keys of requests being handled now (409 for a second).
    in_flight: Mutex<HashSet<String>>,
    /// The webhook triggers, by name.
    pub hooks: std::collections::HashMap<String, triggers::webhook::Hook>,
    /// False once shutdown begins (`/readyz` says 503).
    ready: AtomicBool,
}

/// What the server needs to start.
pub struct ServerConfig {
    /// The journal.
    pub store: Arc<dyn RunStore>,
    /// Runs execute here: it should be [`plait::executor::Executor::parking`].
    pub executor: plait::executor::Executor,
    /// The workflows served.
    pub catalog: Arc<Catalog>,
    /// The API tokens.
    pub tokens: Tokens,
    /// The `[server]` settings (`listen` is the address).
    pub settings: ServerSettings,
    /// The largest run input.
    pub max_input: u64,
    /// The webhook signing secret (`whsec_...`).
    pub webhook_secret: String,
}

/// A server that is listening.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Checks the configuration and binds the address; nothing is served
    /// until [`Server::run`].
    pub async fn bind(config: ServerConfig) -> Result<Server, ServeError> {
        let address = config.settings.listen;
        let has_tokens = !config.tokens.list()?.is_empty();
        if !has_tokens && !address.ip().is_loopback() {
            return Err(ServeError::OpenToNetwork(address));
        }
        let hooks = check_triggers(&config).await?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ServeError::Listen { address, source })?;
        let metrics = config.executor.metrics().clone();
        let webhooks = webhooks::Webhooks::new(
            config.store.clone(),
            config.settings.webhooks.clone(),
            config.webhook_secret,
            config.settings.webhook_retry_for,
        );
        let dispatcher = Dispatcher::new(
            config.executor,
            config.catalog.clone(),
            config.settings.max_active_runs,
            config.settings.max_queued_runs,
            Some(webhooks),
        );
        let state = Arc::new(AppState {
            store: config.store,
            dispatcher,
            catalog: config.catalog,
            open: address.ip().is_loopback(),
            tokens: config.tokens,
            limiter: RateLimiter::new(config.settings.rate_limit),
            settings: config.settings,
            max_input: config.max_input,
            metrics,
            in_flight: Mutex::new(HashSet::new()),
            hooks,
            ready: AtomicBool::new(false),
        });
        Ok(Server { state, listener })
    }

    /// The address it listens on (the port the OS chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether requests need a token.
    pub fn authenticated(&self) -> bool {
        !self.state.open
            || self
                .state
                .tokens
                .list()
                .map_or(true, |tokens| !tokens.is_empty())
    }

    /// Serves until `shutdown` completes, then stops gracefully: no new
    /// connections, open event streams end, running attempts get the grace
    /// period to finish and be recorded; runs not finished stay in the store
    /// for the next start.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        let recovered = state.dispatcher.recover()?;
        if recovered > 0 {
            tracing::info!(target: "plait::server", runs = recovered, "continuing runs a stopped host left unfinished");
        }
        let watcher = tokio::spawn(state.dispatcher.clone().watch());
        let starter = Arc::new(triggers::Starter {
            dispatcher: state.dispatcher.clone(),
            catalog: state.catalog.clone(),
            store: state.store.clone(),
            max_input: state.max_input,
            shutdown: state.dispatcher.shutdown_token(),
        });
        let trigger_tasks = triggers::spawn(&state.settings.triggers, &starter);
        let sender = state
            .dispatcher
            .webhooks()
            .cloned()
            .map(|webhooks| tokio::spawn(webhooks.run(state.dispatcher.shutdown_token())));
        state.ready.store(true, Ordering::Release);
        let app = api::router(state.clone());
        let token = state.dispatcher.shutdown_token();
        let stopping = state.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!(target: "plait::server", "stopping: no new requests; running steps get {:?} to finish", stopping.settings.shutdown_grace);
            stopping.ready.store(false, Ordering::Release);
            // Ends the event streams and long polls, so that the
            // connections close.
            token.cancel();
        };
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let dispatcher = state.dispatcher.clone();
        let grace = state.settings.shutdown_grace;
        let result = served.await;
        dispatcher.stop(grace).await;
        watcher.abort();
        for task in trigger_tasks {
            task.abort();
        }
        if let Some(sender) = sender {
            // Attempts in flight stay pending; the next start sends them.
            sender.abort();
        }
        tracing::info!(target: "plait::server", "stopped");
        result.map_err(|source| ServeError::Listen {
            address: state.settings.listen,
            source,
        })
    }
}

/// Who is calling: the token's name, or `local` on an open loopback server.
#[derive(Debug, Clone)]
pub struct Caller {
    /// For the audit log: `token:NAME`, or `local`.
    pub actor: String,
    token: Option<TokenRecord>,
}

impl Caller {
    /// Refuses (403) a caller whose token lacks `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        match &self.token {
            Some(token) if !token.allows(scope) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "insufficient-scope",
                "Forbidden",
                format!(
                    "token `{}` has scopes [{}]; this request needs `{}` (or `admin`): create a token with `plait token create --scope {}`",
                    token.name,
                    token.scope_list(),
                    scope.as_str(),
                    scope.as_str()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// A 401 with the `WWW-Authenticate` challenge.
fn unauthorized(detail: &str, error: Option<&str>) -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
    .into_response();
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"plait\", error=\"{error}\""),
        None => "Bearer realm=\"plait\"".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::trim);
        let open = state.open
            && presented.is_none()
            && match state.tokens.list() {
                Ok(tokens) => tokens.is_empty(),
                Err(error) => return Err(Problem::internal(&error).into_response()),
            };
        let caller = if open {
            Caller {
                actor: "local".to_owned(),
                token: None,
            }
        } else {
            let Some(presented) = presented else {
                return Err(unauthorized(
                    "this request needs an API token: send `Authorization: Bearer <token>` (`plait token create` makes one)",
                    None,
                ));
            };
            let Some(token) = presented
                .strip_prefix("Bearer ")
                .or_else(|| presented.strip_prefix("bearer "))
                .map(str::trim)
            else {
                return Err(unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                    Some("invalid_request"),
                ));
            };
            match state.tokens.verify(token) {
                Ok(Some(record)) => Caller {
                    actor: format!("token:{}", record.name),
                    token: Some(record),
                },
                Ok(None) => {
                    return Err(unauthorized(
                        "the API token is not valid (unknown or revoked); `plait token list` shows the tokens that are",
                        Some("invalid_token"),
                    ));
                }
                Err(error) => return Err(Problem::internal(&error).into_response()),
            }
        };
        rate_limit(state, &caller.actor).map_err(IntoResponse::into_response)?;
        Ok(caller)
    }
}

/// 429 when `actor` (a token, or a signed trigger) is past its rate.
pub(crate) fn rate_limit(state: &AppState, actor: &str) -> Result<(), Problem> {
    state.limiter.check(actor).map_err(|wait| {
        let seconds = wait.as_secs_f64().ceil() as u64;
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!(
                "`{actor}` made more than {} requests per second; wait {}s (Retry-After) or raise `[server] rate_limit`",
                state.settings.rate_limit,
                seconds.max(1)
            ),
        )
        .retry_after(seconds)
    })
}

/// Checks what the triggers need before the server starts: each one's
/// workflow served, each watched folder there, each signing secret's
/// value. Returns the webhook triggers, with their keys.
async fn check_triggers(
    config: &ServerConfig,
) -> Result<std::collections::HashMap<String, triggers::webhook::Hook>, ServeError> {
    use triggers::TriggerKind;
    let mut hooks = std::collections::HashMap::new();
    // Plans build concurrently: give them a moment, and do not call a
    // workflow missing while its file is still loading.
    config
        .catalog
        .settle(std::time::Duration::from_secs(1))
        .await;
    let served: Vec<String> = config
        .catalog
        .entries()
        .await
        .into_iter()
        .filter_map(|entry| entry.plan.ok().map(|plan| plan.definition.name.clone()))
        .collect();
    for trigger in &config.settings.triggers {
        if !served.contains(&trigger.workflow) && !config.catalog.is_loading(&trigger.workflow) {
            // A file that does not check out may be this workflow: said,
            // not refused, since it can be fixed while the server runs.
            tracing::warn!(target: "plait::trigger", trigger = %trigger.name, workflow = %trigger.workflow, served = %served.join(", "), "the trigger's workflow is not served (yet): its runs start once the workflows folder holds it");
        }
        match &trigger.kind {
            TriggerKind::Webhook { auth, .. } => {
                let secret = match auth.secret() {
                    None => None,
                    Some(name) => Some(
                        config
                            .catalog
                            .policy()
                            .secret_source
                            .resolve(&[name])
                            .map_err(|error| {
                                ServeError::Trigger(format!("trigger `{}`: {error}", trigger.name))
                            })?
                            .remove(name)
                            .unwrap_or_default(),
                    ),
                };
                let hook = triggers::webhook::Hook::new(trigger.clone(), secret.as_deref())
                    .map_err(ServeError::Trigger)?;
                hooks.insert(trigger.name.clone(), hook);
            }
            TriggerKind::Cron(_) => {}
            TriggerKind::Watch(watched) => {
                if !watched.dir.is_dir() {
                    return Err(ServeError::Trigger(format!(
                        "trigger `{}` watches `{}`, which is not a folder; create it, or fix `dir`",
                        trigger.name,
                        watched.dir.display()
                    )));
                }
                if let Some(to) = &watched.move_to {
                    std::fs::create_dir_all(to).map_err(|error| {
                        ServeError::Trigger(format!(
                            "trigger `{}` moves started files to `{}`, which cannot be created: {error}",
                            trigger.name,
                            to.display()
                        ))
                    })?;
                }
            }
        }
    }
    Ok(hooks)
}

/// The caller's trace context (`traceparent`), if it sent a valid one.
#[derive(Debug, Clone, Default)]
pub struct RequestTrace(pub Option<TraceContext>);

/// Puts each request in a span, a child of the caller's `traceparent` when
/// it sent one (a malformed one starts a new trace, as the W3C spec asks),
/// and answers with `traceresponse` naming that span.
async fn trace_layer(
    State(_state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| TraceContext::parse(value.trim()).ok());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned(),
        );
    let span = tracing::info_span!(
        target: "plait::server",
        "request",
        otel.name = %format!("{} {route}", request.method()),
        method = %request.method(),
        route = %route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let context = TraceContext::enter_trace(&span, parent.as_ref());
    request.extensions_mut().insert(RequestTrace(parent));
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length != "0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    // A request refused before its body was read leaves the rest of the
    // body on the connection, which cannot carry another request: say so,
    // so that the client does not reuse it.
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(value) = HeaderValue::from_str(&context.to_traceparent()) {
        response.headers_mut().insert("traceresponse", value);
    }
    response
}
