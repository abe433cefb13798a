//! `sluice run` and `sluice validate`: load the configuration, start the runtime, bind the
//! listeners, serve until SIGTERM or SIGINT, drain, exit.

use crate::cli::{LogFormat, RunArgs, ValidateArgs};
use sluice_config::{Config, ConfigErrors};
use sluice_proxy::reload::{self, Loader};
use sluice_proxy::{Gateway, Listeners, Reloader, Snapshot, Trigger};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    init_logging(args.log_format);
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
    match runtime.block_on(serve(gateway, args.config)) {
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

async fn serve(gateway: Arc<Gateway>, path: Option<PathBuf>) -> Result<(), String> {
    let snapshot = gateway.snapshot();
    let config = &snapshot.config;
    let listeners = Listeners::bind(&config.server).map_err(|e| e.to_string())?;
    let admin = match config.admin.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    for addr in listeners.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    for (path, _) in &listeners.unix {
        tracing::info!(path = %path.display(), "listening on unix socket");
    }
    tracing::info!(config = %config.source, version = env!("CARGO_PKG_VERSION"), "sluice started");

    let (reloader, requests) = reload::channel();
    let load: Loader = {
        let path = path.clone();
        Box::new(move || load(path.as_deref()))
    };
    tokio::spawn(reload_on_sighup(reloader.clone()));
    if let Some(path) = path.filter(|_| config.server.watch_config) {
        tokio::spawn(watch_file(path, reloader.clone()));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(listener) = admin {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin listening");
        }
        let mut stop = stop_rx.clone();
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
    let drained = sluice_proxy::serve(gateway, listeners, shutdown_signal(), requests, load).await;
    let _ = stop_tx.send(true);
    tracing::info!(drained, "sluice stopped");
    Ok(())
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}
