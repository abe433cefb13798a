//! `sluice run` and `sluice validate`: load the configuration, start the runtime, bind the
//! listeners, serve until SIGTERM or SIGINT, drain, exit.

use crate::cli::{LogFormat, RunArgs, ValidateArgs};
use crate::upgrade::{self, Inherited, Socket};
use sluice_config::{Config, ConfigErrors};
use sluice_proxy::listener;
use sluice_proxy::reload::{self, Loader};
use sluice_proxy::{Control, Gateway, ListenKey, Listeners, Reloader, Snapshot, Stop, Trigger};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};

/// Loads and validates a file, or the built-in default.
fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => sluice_config::load(p),
        None => sluice_config::default_config(),
    }
}

pub fn validate(args: &ValidateArgs) -> ExitCode {
    // Building the runtime snapshot also catches what only the router can see.
    match load(Some(&args.config)).and_then(|config| Snapshot::build(config, 0, None)) {
        Ok(_) => {
            println!("{}: ok", args.config.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    let _log = init_logging(args.log_format);
    let gateway = match load(args.config.as_deref()).and_then(Gateway::new) {
        Ok(gateway) => gateway,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match build_runtime(gateway.snapshot().config.server.threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(gateway, args.config, args.upgrade)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// The sockets a process listens on.
struct Sockets {
    data: Listeners,
    admin: Option<TcpListener>,
    upgrade: Option<(PathBuf, UnixListener)>,
    /// Set when the sockets came from a running process, which waits to hear we are ready.
    inherited: Option<Inherited>,
    /// Handed over but no longer configured: closed once the old process is gone.
    dropped: Vec<ListenKey>,
}

/// Binds the configured sockets, or with `--upgrade` takes them over from the running
/// process (binding only what it did not have).
async fn open_sockets(config: &Config, upgrade: bool) -> Result<Sockets, String> {
    let server = &config.server;
    let mut inherited = match (upgrade, &server.upgrade_socket) {
        (false, _) => None,
        (true, Some(path)) => Some(upgrade::take_over(path).await?),
        (true, None) => {
            return Err(format!(
                "--upgrade needs server.upgrade_socket in {}: the path where the running sluice waits for upgrades",
                config.source
            ))
        }
    };
    let mut handed = inherited.as_mut().map(Inherited::data).unwrap_or_default();
    let data = Listeners::adopt(server, &mut handed).map_err(|e| e.to_string())?;
    let dropped = handed.into_iter().map(|(key, _)| key).collect();
    let mut take = |socket: Socket| inherited.as_mut().and_then(|i| i.take(&socket));
    let admin = match config.admin.listen {
        Some(addr) => Some(
            match take(Socket::Admin(addr)) {
                Some(fd) => listener::tcp_from_fd(fd),
                None => TcpListener::bind(addr).await,
            }
            .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    let upgrade = match &server.upgrade_socket {
        Some(path) => {
            let listener = match take(Socket::Upgrade(path.clone())) {
                Some(fd) => listener::unix_from_fd(fd),
                None => bind_private(path),
            }
            .map_err(|e| {
                format!(
                    "cannot listen on {} (server.upgrade_socket): {e}",
                    path.display()
                )
            })?;
            Some((path.clone(), listener))
        }
        None => None,
    };
    Ok(Sockets {
        data,
        admin,
        upgrade,
        inherited,
        dropped,
    })
}

/// Binds a Unix socket only its owner can connect to.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = listener::bind_unix(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve(gateway: Arc<Gateway>, path: Option<PathBuf>, upgrade: bool) -> Result<(), String> {
    let snapshot = gateway.snapshot();
    let config = &snapshot.config;
    let sockets = open_sockets(config, upgrade).await?;
    for addr in sockets.data.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    for (path, _) in &sockets.data.unix {
        tracing::info!(path = %path.display(), "listening on unix socket");
    }
    tracing::info!(config = %config.source, version = env!("CARGO_PKG_VERSION"), "sluice started");

    let (reloader, reloads) = reload::channel();
    let load: Loader = {
        let path = path.clone();
        Box::new(move || load(path.as_deref()))
    };
    tokio::spawn(reload_on_sighup(reloader.clone()));
    if let Some(path) = path.filter(|_| config.server.watch_config) {
        tokio::spawn(watch_file(path, reloader.clone()));
    }

    let (stop_admin, admin_stopped) = watch::channel(false);
    let mut admin_copy = None;
    if let Some(listener) = sockets.admin {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin listening");
            admin_copy = listener
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(|fd| (addr, fd));
        }
        let mut stop = admin_stopped.clone();
        let gw = Arc::clone(&gateway);
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = sluice_admin::serve(listener, gw, reloader, stopped).await {
                tracing::error!("admin listener failed: {e}");
            }
        });
    }
    drop(reloader);

    let (handoff_tx, handoffs) = mpsc::channel(1);
    let upgrade_path = sockets.upgrade.as_ref().map(|(path, _)| path.clone());
    let offered = match sockets.upgrade {
        Some((path, listener)) => {
            let offer = upgrade::Offer {
                listener,
                path,
                admin: admin_copy,
                handoffs: handoff_tx,
            };
            tokio::spawn(upgrade::offer(offer))
        }
        None => tokio::spawn(std::future::pending()),
    };
    let (started, ready) = oneshot::channel();
    if let Some(inherited) = sockets.inherited {
        tokio::spawn(tell_ready(inherited, ready, sockets.dropped));
    }
    let shutdown = async {
        let why = tokio::select! {
            () = shutdown_signal() => Stop::Signal,
            Ok(()) = offered => Stop::Upgraded,
        };
        if why == Stop::Upgraded {
            // The new process answers admin requests from now on.
            let _ = stop_admin.send(true);
        }
        why
    };
    let control = Control {
        reloads,
        load,
        handoffs,
        started: Some(started),
    };
    let (why, drained) = sluice_proxy::serve(gateway, sockets.data, shutdown, control).await;
    let _ = stop_admin.send(true);
    // The upgrade socket of a process that handed over belongs to the new one now.
    if let Some(path) = upgrade_path.filter(|_| why == Stop::Signal) {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!(drained, "sluice stopped");
    Ok(())
}

/// Once this process accepts, tells the one it took over from, which then drains.
async fn tell_ready(inherited: Inherited, started: oneshot::Receiver<()>, dropped: Vec<ListenKey>) {
    if started.await.is_err() {
        return;
    }
    match inherited.ready().await {
        Ok(pid) => tracing::info!(
            pid,
            "took the listening sockets over; the previous process drains and exits"
        ),
        Err(e) => tracing::warn!("the previous process did not confirm the upgrade: {e}"),
    }
    for key in dropped {
        tracing::info!(listener = %key, "not listening any more: not in the configuration");
        if let ListenKey::Unix(path) = key {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Reloads on every SIGHUP.
async fn reload_on_sighup(reloader: Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => return tracing::error!("cannot install the SIGHUP handler: {e}"),
    };
    while hup.recv().await.is_some() {
        // The outcome is logged by the serve loop.
        let _ = reloader.reload(Trigger::Signal).await;
    }
}

/// How often the configuration file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads when the file's size, modification time or inode changes (editors that save
/// by renaming a new file into place change the inode).
async fn watch_file(path: PathBuf, reloader: Reloader) {
    fn fingerprint(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len(), meta.ino()))
    }
    let mut last = fingerprint(&path);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = fingerprint(&path);
        // A file being replaced may be missing for a moment: wait for it to come back.
        if now.is_some() && now != last {
            last = now;
            if reloader.reload(Trigger::FileChanged).await.is_err() && reloader.is_closed() {
                return;
            }
        }
    }
}

/// Logs (the access log included) go to stdout through a writer thread that writes them
/// in batches (see [`crate::log_writer`]). Nothing is dropped: a request waits if the
/// writer falls far behind. The returned guard writes what is left when the process ends.
fn init_logging(format: LogFormat) -> Option<crate::log_writer::Guard> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard, ansi) = match crate::log_writer::LogWriter::start(std::io::stdout()) {
        Ok((writer, guard)) => {
            // Access-log lines are formatted by the data path and go to the same writer.
            let style = match format {
                LogFormat::Json => sluice_proxy::access_log::Style::Json,
                LogFormat::Pretty => sluice_proxy::access_log::Style::Pretty,
            };
            let access = writer.clone();
            sluice_proxy::access_log::install(style, move |line| access.write_lines(line));
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            (BoxMakeWriter::new(writer), Some(guard), ansi)
        }
        Err(e) => {
            eprintln!("sluice: cannot start the log writer thread ({e}); logging to stderr");
            (BoxMakeWriter::new(std::io::stderr), None, false)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
    guard
}
