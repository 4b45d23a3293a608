//! Listeners and connection lifecycle: the data plane (optionally TLS, on one
//! single-threaded event loop per worker thread) and the admin plane, HTTP/1.1 and HTTP/2
//! on each (hyper-util's auto builder), and graceful shutdown that stops accepting, drains
//! in-flight requests and streams within the configured deadline, then returns.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::config::{Config, ConfigError, Loaded, Problem, StoreKind};
use crate::guard::Guards;
use crate::metrics::Metrics;
use crate::proxy;
use crate::snapshot::Snapshot;
use crate::state::{FileStore, MemoryStore, StartupError, State, Store};
use crate::wire::body::{self, Body};
use crate::worker;

mod accept;
mod conn;
mod io;
mod tls;

pub use crate::gateway::Gateway;
pub use accept::raise_nofile_limit;

/// What the admin listener serves from.
struct AdminPlane {
    state: Arc<State>,
    guards: Arc<Guards>,
    tokens: Arc<admin::Tokens>,
}

/// Settings of the listeners, taken from the config.
struct ListenSettings {
    header_read_timeout: Duration,
    shutdown_grace: Duration,
    /// `limits.max_header_bytes`, within the bounds validation allows.
    max_header_bytes: usize,
    client_write_timeout: Duration,
}

/// A gateway that is serving; [`Running::shutdown`] stops it gracefully.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    /// The runtime state: every configuration change goes through it.
    pub state: Arc<State>,
    /// The guards and their latest checks.
    pub guards: Arc<Guards>,
    /// `limits.shutdown_grace`: how long [`Running::shutdown`] lets streams run.
    pub shutdown_grace: Duration,
    guard_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The fleet store's thread, following the change log.
    tail: Option<crate::fleet::tail::Tail>,
}

impl Running {
    /// Begin graceful shutdown and wait until every connection has drained (or the
    /// grace deadline has passed).
    pub async fn shutdown(self) {
        self.gateway.start_draining();
        self.guard_task.abort();
        // The fleet's lease goes to another instance at once, not after the drain.
        let guards = Arc::clone(&self.guards);
        let _ = tokio::task::spawn_blocking(move || guards.release()).await;
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // After the drain: the last requests' statistics reach the fleet's totals.
        if let Some(mut tail) = self.tail {
            let _ = tokio::task::spawn_blocking(move || tail.stop()).await;
        }
        self.state.close();
    }

    /// Wait until the gateway stops by itself (it never does unless shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start worker thread {index}: {source}")]
    Worker { index: usize, source: std::io::Error },
    #[error("{0}")]
    State(#[from] StartupError),
}

/// Everything `check` verifies and `serve` needs before binding: the snapshot and TLS.
pub struct Prepared {
    /// The config file as JSON, and its name.
    value: serde_json::Value,
    file: String,
    snapshot: Snapshot,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
    config: Config,
}

/// Build the snapshot and TLS from a loaded config; problems are located in the file.
pub fn prepare(mut loaded: Loaded) -> Result<Prepared, ConfigError> {
    let mut problems: Vec<Problem> = Vec::new();
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => return Err(loaded.error(vec![Problem::new("", e.to_string())])),
    };
    let targeting = std::mem::take(&mut loaded.targeting);
    let snapshot = Snapshot::build(&loaded.config, targeting, &metrics, None).map_err(|p| problems.extend(p)).ok();
    let tls = match &loaded.config.listen.tls {
        None => None,
        Some(t) => tls::acceptor(t).map_err(|p| problems.push(p)).ok(),
    };
    match snapshot {
        Some(snapshot) if problems.is_empty() => Ok(Prepared {
            value: std::mem::take(&mut loaded.value),
            file: loaded.file.clone(),
            snapshot,
            metrics,
            tls,
            config: loaded.config,
        }),
        _ => Err(loaded.error(problems)),
    }
}

impl Prepared {
    /// The config file as JSON, its name, the snapshot and the metrics (what
    /// [`crate::state::State::open`] takes).
    pub fn into_parts(self) -> (serde_json::Value, String, Snapshot, Arc<Metrics>) {
        (self.value, self.file, self.snapshot, self.metrics)
    }
}

/// Bind both listeners and start serving: the data plane on `limits.workers` threads of
/// its own, the admin plane on the caller's runtime.
///
/// Each worker thread runs a single-threaded event loop and accepts from the same listening
/// socket; a connection, its requests, their upstream connections and their streams all stay
/// on the thread that accepted it. Nothing on the request path waits for or wakes another
/// thread, which on a multi-threaded work-stealing runtime costs more than the proxying itself.
pub async fn start(prepared: Prepared) -> Result<Running, StartError> {
    let Prepared { value, file, mut snapshot, metrics, tls, config } = prepared;
    // The state directory is locked before anything listens: a second sluice on the same
    // directory stops here, with the lock's path in the message.
    let mut fleet = None;
    let store: Box<dyn Store> = match (config.state.kind(), &config.state.dir) {
        (StoreKind::Redis, dir) => {
            let store = Arc::new(open_fleet(&config, dir.as_deref(), &metrics)?);
            if !snapshot.feedback.key_in_config() {
                if let Some(key) = fleet_feedback_key(&store, dir.as_deref())? {
                    snapshot.feedback.use_key(&key);
                }
            }
            // Feedback and track signals count once for the whole fleet.
            let dedup = crate::fleet::dedup::FleetDedup::new(store.redis.clone());
            snapshot.feedback.dedup.share(Arc::new(dedup));
            fleet = Some(Arc::clone(&store));
            Box::new(store)
        }
        (StoreKind::File, Some(dir)) => {
            let store = FileStore::open(dir).map_err(StartupError::from)?;
            if !snapshot.feedback.key_in_config() {
                let key = crate::state::feedback_key(dir, crate::snapshot::random_key).map_err(StartupError::from)?;
                snapshot.feedback.use_key(&key);
            }
            Box::new(store)
        }
        _ => {
            tracing::warn!("no `state.dir`: runtime changes are kept in memory only and lost on restart");
            if !snapshot.feedback.key_in_config() && !config.metrics.is_empty() {
                tracing::warn!("no `state.dir` and no `feedback.key`: response tokens are signed with a key of this process's own, and feedback on them is refused after a restart");
            }
            Box::new(MemoryStore::default())
        }
    };
    if let Some(store) = &fleet {
        // The guards and experiments decide on the fleet's totals from the first check.
        let flags: Vec<String> = crate::state::Docs::from_config_value(&value).flags.keys().cloned().collect();
        match crate::fleet::stats::read_totals(store, &flags) {
            Ok(totals) => metrics.set_fleet_totals(totals),
            Err(e) => {
                tracing::warn!(error = %e, "the fleet's statistics cannot be read now: the guards hold until they can");
                metrics.set_fleet_totals(Default::default());
            }
        }
    }
    let state = Arc::new(State::open(store, value, &file, snapshot, metrics)?);
    let tail = match &fleet {
        Some(store) => Some(
            crate::fleet::tail::Tail::spawn(Arc::clone(&state), Arc::clone(store))
                .map_err(|e| StartupError::Change(format!("cannot start the fleet thread: {e}")))?,
        ),
        None => None,
    };
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
    };
    let data = bind(config.listen.data).await?;
    let admin = bind(config.listen.admin).await?;
    let data_addr = data.local_addr().map_err(|source| StartError::Bind { addr: config.listen.data, source })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind { addr: config.listen.admin, source })?;
    let data = data.into_std().map_err(|source| StartError::Bind { addr: data_addr, source })?;
    let nofile = accept::raise_nofile_limit();
    let data_slots = accept::Slots::new("data", accept::data_cap(config.limits.max_connections, nofile));
    let admin_slots = accept::Slots::new("admin", accept::ADMIN_CONNECTIONS);
    let settings = Arc::new(ListenSettings {
        header_read_timeout: config.limits.header_read_timeout.0,
        shutdown_grace: config.limits.shutdown_grace.0,
        max_header_bytes: usize::try_from(config.limits.max_header_bytes.0).unwrap_or(usize::MAX),
        client_write_timeout: config.limits.client_write_timeout.0,
    });
    let gateway = Arc::clone(state.gateway());
    let tokens = Arc::new(admin::Tokens::from_config(&config.admin));
    let (stop, stopped) = watch::channel(false);

    let workers = config.limits.workers();
    let mut finished = Vec::with_capacity(workers);
    for index in 0..workers {
        let worker = Worker {
            index,
            listener: data.try_clone().map_err(|source| StartError::Bind { addr: data_addr, source })?,
            gateway: Arc::clone(&gateway),
            tls: tls.clone(),
            settings: Arc::clone(&settings),
            stopped: stopped.clone(),
            slots: Arc::clone(&data_slots),
        };
        finished.push(worker.spawn().map_err(|source| StartError::Worker { index, source })?);
    }
    let mut guards = Guards::new(Arc::clone(&state), tokio::runtime::Handle::current());
    if let Some(store) = fleet {
        guards = guards.with_lease(Arc::new(crate::fleet::lease::Lease::new(store)));
    }
    let guards = Arc::new(guards);
    let guard_task = tokio::spawn(Arc::clone(&guards).run(crate::guard::SystemClock));
    tokio::spawn(sample_history(Arc::clone(&gateway)));
    let plane = Arc::new(AdminPlane { state: Arc::clone(&state), guards: Arc::clone(&guards), tokens });
    let settings_grace = settings.shutdown_grace;
    let task = tokio::spawn(run_admin(plane, admin, admin_slots, settings, finished, stopped));
    tracing::info!(
        %data_addr,
        %admin_addr,
        workers,
        max_connections = data_slots.cap(),
        descriptors = nofile,
        revision = state.revision(),
        "sluice is serving"
    );
    let shutdown_grace = settings_grace;
    Ok(Running { data_addr, admin_addr, gateway, state, guards, shutdown_grace, guard_task, stop, task, tail })
}

/// At start (each series' baseline) and then on every boundary of the history's 10 s
/// steps (by the wall clock), add what each variation gained to its history
/// (`metrics::history`). It lives as long as the admin plane's runtime.
async fn sample_history(gateway: Arc<Gateway>) {
    let step = crate::metrics::history::FINE.step as f64;
    // The baselines, at once: what is served from now on counts in the current step.
    gateway.metrics.sample_history(unix_now() as u64);
    loop {
        let now = unix_now();
        let next = ((now / step).floor() + 1.0) * step;
        tokio::time::sleep(Duration::from_secs_f64((next - now).max(0.001))).await;
        // Rounded: a wake-up a hair before the boundary still samples at it.
        gateway.metrics.sample_history(unix_now().round() as u64);
    }
}

/// The wall clock, in Unix seconds.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The fleet store of `config` (nothing is connected yet: start-up reads it).
fn open_fleet(
    config: &Config,
    dir: Option<&std::path::Path>,
    metrics: &Metrics,
) -> Result<crate::fleet::RedisStore, StartupError> {
    let Some(redis) = &config.state.redis else {
        return Err(StartupError::Change("`store: redis` needs `state.redis`".into()));
    };
    let redis = crate::fleet::Redis::new(redis).map_err(StartupError::Change)?;
    metrics.enable_fleet();
    let link = crate::fleet::Link::new();
    tracing::info!(redis = %redis.shown, instance = %link.instance, "the fleet store is Redis");
    Ok(crate::fleet::RedisStore::open(redis, link, dir)?)
}

/// The key that signs response tokens in a fleet: Redis's (made once, the same for every
/// instance), kept in `state.dir` too for a start while Redis is down.
fn fleet_feedback_key(
    store: &crate::fleet::RedisStore,
    dir: Option<&std::path::Path>,
) -> Result<Option<Vec<u8>>, StartupError> {
    match store.feedback_key(crate::snapshot::random_key()) {
        Ok(key) => {
            if let Some(dir) = dir {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&key[..32.min(key.len())]);
                let local = crate::state::feedback_key(dir, || bytes).map_err(StartupError::from)?;
                if local != key {
                    let path = dir.join(crate::state::FEEDBACK_KEY);
                    tracing::warn!(path = %path.display(), "the state directory's response-token key is not the fleet's: the fleet's is used");
                }
            }
            Ok(Some(key))
        }
        Err(e) => match dir {
            Some(dir) if dir.join(crate::state::FEEDBACK_KEY).exists() => {
                tracing::warn!(error = %e, "the fleet's response-token key cannot be read now: using the copy in the state directory");
                Ok(Some(crate::state::feedback_key(dir, crate::snapshot::random_key).map_err(StartupError::from)?))
            }
            _ => {
                tracing::warn!(error = %e, "the fleet's response-token key cannot be read now: this process signs with a key of its own until a restart");
                Ok(None)
            }
        },
    }
}

/// Serve the admin plane until told to stop, and on until every worker has drained.
async fn run_admin(
    gateway: Arc<AdminPlane>,
    admin: TcpListener,
    slots: Arc<accept::Slots>,
    settings: Arc<ListenSettings>,
    finished: Vec<oneshot::Receiver<()>>,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&settings));
    let all_finished = async move {
        for worker in finished {
            let _ = worker.await;
        }
    };
    tokio::pin!(all_finished);
    let mut stopping = false;
    loop {
        tokio::select! {
            (stream, slot) = accept::next(&admin, &slots) => {
                spawn_admin_connection(stream, slot, &gateway, &builder, &settings);
            }
            _ = stopped.wait_for(|s| *s), if !stopping => {
                stopping = true;
                tracing::info!(grace = ?settings.shutdown_grace, "shutting down: draining connections");
            }
            // Admin connections are not drained: they answer (`/readyz` says 503) until
            // every worker is done.
            _ = &mut all_finished => return tracing::info!("shut down"),
        }
    }
}

/// One data-plane worker thread.
struct Worker {
    index: usize,
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    settings: Arc<ListenSettings>,
    stopped: watch::Receiver<bool>,
    /// The data plane's connection cap, shared by the workers.
    slots: Arc<accept::Slots>,
}

impl Worker {
    /// Start the thread; the receiver completes when it has drained and stopped.
    fn spawn(self) -> std::io::Result<oneshot::Receiver<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (done, finished) = oneshot::channel();
        // Log to the subscriber of the thread that started the server (the global one in
        // `sluice serve`; a scoped one in tests).
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        std::thread::Builder::new().name(format!("sluice-worker-{}", self.index)).spawn(move || {
            let _logging = tracing::dispatcher::set_default(&dispatch);
            worker::set_index(self.index);
            runtime.block_on(self.run());
            // Dropping the runtime drops what is left: connections past the grace period
            // and idle upstream connections.
            drop(runtime);
            let _ = done.send(());
        })?;
        Ok(finished)
    }

    /// Accept until told to stop, then drain within the grace period.
    async fn run(self) {
        let Worker { index, listener, gateway, tls, settings, mut stopped, slots } = self;
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!(worker = index, error = %e, "cannot watch the data listener"),
        };
        // Each connection holds a receiver: the sender sees them all gone once drained.
        let (drain, _) = watch::channel(());
        let cut = tokio_util::sync::CancellationToken::new();
        worker::set_cut(cut.clone());
        let signal = stopped.clone();
        let builder = Arc::new(connection_builder(&settings));
        loop {
            tokio::select! {
                (stream, slot) = accept::next(&listener, &slots) => {
                    let g = Arc::clone(&gateway);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let snapshot = g.snapshot();
                        async move { Ok::<_, Infallible>(proxy::handle(snapshot, req).await) }
                    });
                    let on_stop = Some((signal.clone(), drain.subscribe()));
                    spawn_connection(stream, slot, tls.clone(), &builder, on_stop, &settings, service);
                }
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        drop(listener);
        tracing::debug!(worker = index, connections = drain.receiver_count(), "draining");
        tokio::select! {
            _ = drain.closed() => tracing::debug!(worker = index, "all connections drained"),
            _ = tokio::time::sleep(settings.shutdown_grace) => {
                tracing::warn!(worker = index, "shutdown grace period over; ending the remaining streams");
                // Streams end with an error event saying why; what has not finished
                // writing it by then is dropped with the runtime.
                cut.cancel();
                let _ = tokio::time::timeout(CUT_FLUSH, drain.closed()).await;
            }
        }
    }
}

/// Admin connections are not drained on shutdown: they answer until the process exits.
fn spawn_admin_connection(
    stream: TcpStream,
    slot: accept::Slot,
    plane: &Arc<AdminPlane>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    settings: &ListenSettings,
) {
    let p = Arc::clone(plane);
    let service = service_fn(move |req: Request<Incoming>| {
        let p = Arc::clone(&p);
        async move {
            if req.uri().path().starts_with("/admin/v1/") {
                return Ok::<_, Infallible>(admin::handle(Arc::clone(&p.state), &p.guards, &p.tokens, req).await);
            }
            if admin::ui::is_console(req.uri().path()) {
                return Ok::<_, Infallible>(admin::ui::serve(&req));
            }
            Ok::<_, Infallible>(admin_handle(&p.state, req))
        }
    });
    spawn_connection(stream, slot, None, builder, None, settings, service);
}

/// HTTP/1.1 and HTTP/2 settings of both listeners. One head-size limit for both versions:
/// HTTP/1.1 reads at most `max_header_bytes` before the head must be complete (its read
/// buffer), HTTP/2 refuses a larger header list; both answer 431.
fn connection_builder(settings: &ListenSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's own check closes a head that never completes (`conn`): no
        // timer per request.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(settings.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serve one accepted connection (after the TLS handshake, if any) in its own task; it
/// holds its listener's `slot` until it ends.
/// `on_stop`: the worker's stop signal, and the receiver the connection holds until it
/// ends so the worker knows when it has drained (`None` on the admin plane).
fn spawn_connection<S>(
    stream: TcpStream,
    slot: accept::Slot,
    tls: Option<TlsAcceptor>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    on_stop: Option<(watch::Receiver<bool>, watch::Receiver<()>)>,
    settings: &ListenSettings,
    service: S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let (stop, draining) = on_stop.unzip();
    let serve = conn::Serve {
        builder: Arc::clone(builder),
        idle: settings.header_read_timeout,
        write_timeout: settings.client_write_timeout,
        stop,
    };
    let handshake_timeout = settings.header_read_timeout;
    let write_timeout = settings.client_write_timeout;
    tokio::spawn(async move {
        let _held = (slot, draining);
        let result = match tls {
            None => serve.run(io::WriteDeadline::new(stream, write_timeout), service).await,
            Some(acceptor) => {
                let tls_stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!("TLS handshake timed out"),
                };
                serve.run(io::WriteDeadline::new(tls_stream, write_timeout), service).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// The admin plane: liveness, readiness and metrics. Readiness is `ready`; `degraded: …`
/// (still 200: it serves) when a fleet store cannot be reached or lost its data; 503
/// while draining, or before a fleet store's state was ever served.
fn admin_handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let gateway = state.gateway();
    if req.uri().path() == "/metrics" {
        return body::response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", gateway.metrics.render());
    }
    let (status, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok"),
        "/readyz" if gateway.is_draining() => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        "/readyz" => match state.store_health() {
            crate::state::Health::Ok => (StatusCode::OK, "ready"),
            crate::state::Health::Degraded(why) => {
                return body::response(StatusCode::OK, "text/plain; charset=utf-8", format!("degraded: {why}"));
            }
            crate::state::Health::NotReady(why) => {
                let text = format!("not ready: {why}");
                return body::response(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", text);
            }
        },
        _ => (StatusCode::NOT_FOUND, "not found"),
    };
    body::text(status, text)
}

/// Apply the config file again (SIGHUP, `serve --watch`), given its content just read
/// (`config::read_file`): only what the file changed since its last load (see
/// [`crate::state`]). A file that cannot be read or fails validation changes nothing;
/// the error goes to the log, `sluice_config_reload_errors_total` and
/// `GET /admin/v1/status`. Blocking (it fsyncs the state).
pub fn reload_file(state: &State, path: &std::path::Path, text: Result<String, crate::config::ConfigError>) {
    let file = path.display().to_string();
    let loaded = text.and_then(|text| crate::config::parse(&text, &file, &|name| std::env::var(name).ok()));
    let result = loaded.map_err(|e| e.to_string()).and_then(|loaded| {
        let file = loaded.file.clone();
        let before = state.base();
        for fixed in ["listen", "state", "admin"] {
            if before.get(fixed) != loaded.value.get(fixed) {
                tracing::warn!(section = fixed, "`{fixed}` changed in {file}: it takes effect at the next start");
            }
        }
        if before.pointer("/limits/workers") != loaded.value.pointer("/limits/workers") {
            tracing::warn!("`limits.workers` changed in {file}: it takes effect at the next start");
        }
        let docs = crate::state::Docs::from_config_value(&loaded.value);
        let request = crate::state::Request {
            actor: "file".into(),
            reason: format!("reloaded {file}"),
            if_match: None,
            fence: None,
        };
        match state.apply(crate::state::Change::File { base: loaded.value, docs }, &request) {
            Ok(applied) => Ok(Some(applied.revision)),
            Err(crate::state::ChangeError::Conflict(_)) => Ok(None),
            Err(crate::state::ChangeError::Invalid(problems)) => {
                Err(format!("{file}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
            }
            Err(e) => Err(e.to_string()),
        }
    });
    state.record_reload(result);
}

/// Exit status of a process whose shutdown outlived its grace period (see [`exit_after`]).
pub const FORCED_EXIT_CODE: i32 = 3;

/// How long, once `shutdown_grace` is over, the streams still open have to write the error
/// event that ends them.
const CUT_FLUSH: Duration = Duration::from_millis(500);

/// Time past `shutdown_grace` for the workers to close what is left and stop (more than
/// `CUT_FLUSH`).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// End the process with [`FORCED_EXIT_CODE`] if it is still running `after` from now.
///
/// Each worker enforces the grace period on its own runtime, which a worker busy on the
/// CPU (a long render) never gets back to; this deadline runs on a thread of its own, so
/// neither a busy worker nor a busy admin runtime can hold the process past it.
pub fn exit_after(after: Duration) {
    let spawned = std::thread::Builder::new().name("sluice-shutdown-deadline".into()).spawn(move || {
        std::thread::sleep(after);
        tracing::error!(?after, "shutdown did not finish in time: exiting with the work left undone");
        std::process::exit(FORCED_EXIT_CODE);
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown deadline thread");
    }
}

/// Run until `signal` resolves, then shut down gracefully.
pub async fn serve_until(prepared: Prepared, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(prepared).await?;
    signal.await;
    tracing::info!("shutdown signal received");
    running.shutdown().await;
    Ok(())
}
