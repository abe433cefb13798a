//! Listening sockets (TCP and Unix) and their accept loops.

mod counting;

use crate::gateway::Gateway;
use crate::lifecycle::ConnInfo;
use crate::protocol::{http_builder, serve_connection, stopped, Http, ShutdownWatch};
use counting::CountingIo;
use sluice_config::Server;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

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

/// Accepts connections on every listener until `shutdown.signal` turns true. Each
/// connection holds a clone of `shutdown.done` until it ends, so the caller can wait for
/// the last one.
pub async fn run_accept_loops(
    listeners: Listeners,
    gateway: Arc<Gateway>,
    shutdown: ShutdownWatch,
) {
    let http = Arc::new(http_builder(&gateway.snapshot().config.server.limits));
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners.tcp {
        tasks.spawn(run_accept_loop(
            listener,
            Arc::clone(&http),
            Arc::clone(&gateway),
            shutdown.clone(),
        ));
    }
    for (path, listener) in listeners.unix {
        let (http, gateway, shutdown) = (Arc::clone(&http), Arc::clone(&gateway), shutdown.clone());
        tasks.spawn(async move {
            run_accept_loop(listener, http, gateway, shutdown).await;
            let _ = std::fs::remove_file(&path);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A listening socket of either kind.
trait Acceptor: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and, for TCP, the peer's address.
    fn next(&self) -> impl Future<Output = io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn next(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (stream, peer) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Some(peer)))
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn next(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        Ok((self.accept().await?.0, None))
    }
}

async fn run_accept_loop<A: Acceptor>(
    listener: A,
    http: Arc<Http>,
    gateway: Arc<Gateway>,
    shutdown: ShutdownWatch,
) {
    let mut stop = shutdown.signal.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.next() => accepted,
            () = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let io = CountingIo::new(stream, Arc::clone(&gateway.metrics));
                let conn = ConnInfo {
                    peer,
                    proto: "http",
                };
                tokio::spawn(serve_connection(
                    Arc::clone(&http),
                    io,
                    Arc::clone(&gateway),
                    conn,
                    shutdown.clone(),
                ));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of file descriptors or similar: log, pause, and keep accepting.
async fn accept_error(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
