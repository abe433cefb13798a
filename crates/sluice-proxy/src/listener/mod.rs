//! Listening sockets (TCP and Unix) and their accept loops.

mod counting;

use crate::gateway::Gateway;
use crate::lifecycle::ConnInfo;
use crate::protocol::{http_builder, serve_connection};
use counting::CountingIo;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use sluice_config::Server;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

/// The data plane's bound sockets.
#[derive(Debug, Default)]
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    pub unix: Vec<(PathBuf, UnixListener)>,
}

impl Listeners {
    /// Binds every `server.listen` address and `server.unix` path.
    pub fn bind(server: &Server) -> io::Result<Listeners> {
        let mut listeners = Listeners::default();
        for addr in &server.listen {
            listeners.tcp.push(
                bind_tcp(*addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?,
            );
        }
        for path in &server.unix {
            let listener = bind_unix(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on unix:{}: {e}", path.display()),
                )
            })?;
            listeners.unix.push((path.clone(), listener));
        }
        Ok(listeners)
    }

    /// The addresses the TCP listeners are bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Binds a Unix socket, replacing a stale socket file that nobody listens on.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ))
            }
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    UnixListener::bind(path)
}

/// Accepts connections on every listener until `shutdown` turns true.
/// Each connection is watched by `graceful`, which the caller drains afterwards.
pub async fn run_accept_loops(
    listeners: Listeners,
    gateway: Arc<Gateway>,
    graceful: Arc<GracefulShutdown>,
    shutdown: watch::Receiver<bool>,
) {
    let http = Arc::new(http_builder(&gateway.snapshot().config.server.limits));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners.tcp {
        let (http, gateway, graceful, mut shutdown) = (
            Arc::clone(&http),
            Arc::clone(&gateway),
            Arc::clone(&graceful),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = shutdown.wait_for(|s| *s) => break,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let io =
                            TokioIo::new(CountingIo::new(stream, Arc::clone(&gateway.metrics)));
                        let conn = ConnInfo {
                            peer: Some(peer),
                            proto: "http",
                        };
                        tokio::spawn(serve_connection(
                            Arc::clone(&http),
                            io,
                            Arc::clone(&gateway),
                            conn,
                            graceful.watcher(),
                        ));
                    }
                    Err(e) => accept_error(e).await,
                }
            }
        });
    }
    for (path, listener) in listeners.unix {
        let (http, gateway, graceful, mut shutdown) = (
            Arc::clone(&http),
            Arc::clone(&gateway),
            Arc::clone(&graceful),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = shutdown.wait_for(|s| *s) => break,
                };
                match accepted {
                    Ok((stream, _)) => {
                        let io =
                            TokioIo::new(CountingIo::new(stream, Arc::clone(&gateway.metrics)));
                        let conn = ConnInfo {
                            peer: None,
                            proto: "http",
                        };
                        tokio::spawn(serve_connection(
                            Arc::clone(&http),
                            io,
                            Arc::clone(&gateway),
                            conn,
                            graceful.watcher(),
                        ));
                    }
                    Err(e) => accept_error(e).await,
                }
            }
            drop(listener);
            let _ = std::fs::remove_file(&path);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Out of file descriptors or similar: log, pause, and keep accepting.
async fn accept_error(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
