//! Listening sockets (TCP and Unix) and their accept loops.

mod counting;
pub mod tls;

use crate::counted::Counted;
use crate::gateway::Gateway;
use crate::lifecycle::ConnInfo;
use crate::protocol::{serve_connection, stopped, ShutdownWatch};
use counting::CountingIo;
use sluice_config::Server;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a listener listens, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenKey {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// A `server.tls.listen` address.
    Tls(SocketAddr),
}

impl std::fmt::Display for ListenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenKey::Tcp(addr) => write!(f, "{addr}"),
            ListenKey::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenKey::Tls(addr) => write!(f, "tls:{addr}"),
        }
    }
}

/// The data plane's bound sockets.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Each TCP listener with the address the configuration gave it.
    pub tcp: Vec<(SocketAddr, TcpListener)>,
    pub unix: Vec<(PathBuf, UnixListener)>,
    /// TLS listeners with the address the configuration gave them.
    pub tls: Vec<(SocketAddr, TcpListener)>,
}

impl Listeners {
    /// Binds every `server.listen` address and `server.unix` path.
    pub fn bind(server: &Server) -> io::Result<Listeners> {
        Listeners::bind_missing(server, &[])
    }

    /// Takes over the sockets in `inherited` (handed over by the process being upgraded)
    /// whose address `server` still lists, and binds the others. The inherited sockets
    /// used are removed from `inherited`; the rest are left for the caller.
    pub fn adopt(
        server: &Server,
        inherited: &mut Vec<(ListenKey, OwnedFd)>,
    ) -> io::Result<Listeners> {
        let mut adopted = Listeners::default();
        let mut keys = Vec::new();
        for addr in &server.listen {
            let key = ListenKey::Tcp(*addr);
            if let Some(fd) = take(inherited, &key) {
                adopted.tcp.push((
                    *addr,
                    tcp_from_fd(fd).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot take over {key}: {e}"))
                    })?,
                ));
                keys.push(key);
            }
        }
        for addr in server.tls.iter().flat_map(|t| &t.listen) {
            let key = ListenKey::Tls(*addr);
            if let Some(fd) = take(inherited, &key) {
                adopted.tls.push((
                    *addr,
                    tcp_from_fd(fd).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot take over {key}: {e}"))
                    })?,
                ));
                keys.push(key);
            }
        }
        for path in &server.unix {
            let key = ListenKey::Unix(path.clone());
            if let Some(fd) = take(inherited, &key) {
                adopted.unix.push((
                    path.clone(),
                    unix_from_fd(fd).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot take over {key}: {e}"))
                    })?,
                ));
                keys.push(key);
            }
        }
        let bound = Listeners::bind_missing(server, &keys)?;
        adopted.tcp.extend(bound.tcp);
        adopted.unix.extend(bound.unix);
        adopted.tls.extend(bound.tls);
        Ok(adopted)
    }

    /// Binds the addresses and paths of `server` that are not in `skip`.
    fn bind_missing(server: &Server, skip: &[ListenKey]) -> io::Result<Listeners> {
        let mut listeners = Listeners::default();
        for addr in &server.listen {
            if skip.contains(&ListenKey::Tcp(*addr)) {
                continue;
            }
            let listener = bind_tcp(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listeners.tcp.push((*addr, listener));
        }
        for addr in server.tls.iter().flat_map(|t| &t.listen) {
            if skip.contains(&ListenKey::Tls(*addr)) {
                continue;
            }
            let listener = bind_tcp(*addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {addr} (TLS): {e}"))
            })?;
            listeners.tls.push((*addr, listener));
        }
        for path in &server.unix {
            if skip.contains(&ListenKey::Unix(path.clone())) {
                continue;
            }
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

    /// The addresses the TCP listeners (plain and TLS) are bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .chain(&self.tls)
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.unix.is_empty() && self.tls.is_empty()
    }
}

/// Removes the first socket listed under `key`.
fn take(inherited: &mut Vec<(ListenKey, OwnedFd)>, key: &ListenKey) -> Option<OwnedFd> {
    let at = inherited.iter().position(|(k, _)| k == key)?;
    Some(inherited.remove(at).1)
}

/// A listening TCP socket received from another process.
pub fn tcp_from_fd(fd: OwnedFd) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    listener.local_addr()?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// A listening Unix socket received from another process.
pub fn unix_from_fd(fd: OwnedFd) -> io::Result<UnixListener> {
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.local_addr()?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
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
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
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

/// One running accept loop.
struct Running {
    key: ListenKey,
    /// The listening socket, shared with its accept loop, to hand over on upgrade.
    socket: Arc<dyn AsFd + Send + Sync>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The accept loops of the data plane. Each listener has its own, so a reload can add
/// and remove listeners while the others (and every open connection) carry on.
#[derive(Debug)]
pub struct AcceptLoops {
    running: Vec<Running>,
    gateway: Arc<Gateway>,
    shutdown: ShutdownWatch,
    /// Set once the sockets belong to a new process: stopping then leaves the Unix
    /// socket files in place for it.
    handed_over: Arc<AtomicBool>,
}

impl AcceptLoops {
    /// Starts accepting on `listeners`. Every connection holds a clone of
    /// `shutdown.done` until it ends, so the caller can wait for the last one.
    pub fn start(listeners: Listeners, gateway: Arc<Gateway>, shutdown: ShutdownWatch) -> Self {
        let mut loops = AcceptLoops {
            running: Vec::new(),
            gateway,
            shutdown,
            handed_over: Arc::new(AtomicBool::new(false)),
        };
        loops.spawn(listeners);
        loops
    }

    fn spawn(&mut self, listeners: Listeners) {
        for (addr, listener) in listeners.tcp {
            self.spawn_one(ListenKey::Tcp(addr), listener, || {});
        }
        for (addr, listener) in listeners.tls {
            self.spawn_one(ListenKey::Tls(addr), Secure(listener), || {});
        }
        for (path, listener) in listeners.unix {
            // A stopped Unix listener takes its socket file with it, unless a new
            // process listens on it now.
            let handed_over = Arc::clone(&self.handed_over);
            self.spawn_one(ListenKey::Unix(path.clone()), listener, move || {
                if !handed_over.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&path);
                }
            });
        }
    }

    fn spawn_one<A: Acceptor + AsFd + Sync>(
        &mut self,
        key: ListenKey,
        listener: A,
        on_end: impl FnOnce() + Send + 'static,
    ) {
        let (stop, own) = watch::channel(false);
        let gateway = Arc::clone(&self.gateway);
        let shutdown = self.shutdown.clone();
        let listener = Arc::new(listener);
        let socket: Arc<dyn AsFd + Send + Sync> = listener.clone();
        let task = tokio::spawn(async move {
            run_accept_loop(&*listener, gateway, shutdown, own).await;
            on_end();
        });
        self.running.push(Running {
            key,
            socket,
            stop,
            task,
        });
    }

    /// A copy of every listening socket, to pass to the process taking over.
    pub fn sockets(&self) -> io::Result<Vec<(ListenKey, OwnedFd)>> {
        self.running
            .iter()
            .map(|r| Ok((r.key.clone(), r.socket.as_fd().try_clone_to_owned()?)))
            .collect()
    }

    /// From now on, stopping leaves Unix socket files for the process that took them over.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
    }

    /// Binds what `server` lists and is not listening yet. Nothing changes on error.
    pub fn bind_new(&self, server: &Server) -> io::Result<Listeners> {
        let keys: Vec<ListenKey> = self.running.iter().map(|r| r.key.clone()).collect();
        Listeners::bind_missing(server, &keys)
    }

    /// Starts the listeners bound by [`AcceptLoops::bind_new`] and stops those `server`
    /// no longer lists. Connections accepted by a stopped listener carry on.
    pub fn reconcile(&mut self, added: Listeners, server: &Server) {
        let wanted = |key: &ListenKey| match key {
            ListenKey::Tcp(addr) => server.listen.contains(addr),
            ListenKey::Unix(path) => server.unix.contains(path),
            ListenKey::Tls(addr) => server.tls.as_ref().is_some_and(|t| t.listen.contains(addr)),
        };
        let (keep, stop): (Vec<Running>, Vec<Running>) =
            self.running.drain(..).partition(|r| wanted(&r.key));
        self.running = keep;
        for r in stop {
            tracing::info!(listener = %r.key, "stopped listening");
            let _ = r.stop.send(true);
        }
        if !added.is_empty() {
            for key in added
                .tcp
                .iter()
                .map(|(a, _)| ListenKey::Tcp(*a))
                .chain(added.tls.iter().map(|(a, _)| ListenKey::Tls(*a)))
                .chain(added.unix.iter().map(|(p, _)| ListenKey::Unix(p.clone())))
            {
                tracing::info!(listener = %key, "listening");
            }
            self.spawn(added);
        }
    }

    /// Waits for every accept loop to end (after the shutdown signal).
    pub async fn join(self) {
        for r in self.running {
            let _ = r.task.await;
        }
    }
}

/// A listening socket of either kind.
trait Acceptor: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + counting::Reset + 'static;
    /// Connections start with a TLS handshake.
    const SECURE: bool = false;
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

/// A TCP listener whose connections speak TLS.
struct Secure(TcpListener);

impl AsFd for Secure {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Acceptor for Secure {
    type Stream = TcpStream;
    const SECURE: bool = true;
    async fn next(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        self.0.next().await
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn next(&self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        Ok((self.accept().await?.0, None))
    }
}

async fn run_accept_loop<A: Acceptor>(
    listener: &A,
    gateway: Arc<Gateway>,
    shutdown: ShutdownWatch,
    mut own: watch::Receiver<bool>,
) {
    let mut stop = shutdown.signal.clone();
    // Connections open on this listener, for `server.limits.max_connections`.
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.next() => accepted,
            () = stopped(&mut stop) => break,
            () = stopped(&mut own) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let snapshot = gateway.snapshot();
                let counted = match snapshot.config.server.limits.max_connections {
                    Some(max) => match Counted::take(&open, max) {
                        Some(counted) => Some(counted),
                        None => {
                            tokio::spawn(refuse(stream, max));
                            continue;
                        }
                    },
                    None => None,
                };
                let io = CountingIo::new(stream, Arc::clone(&gateway.metrics));
                let http = Arc::clone(&snapshot.http);
                let (gateway, shutdown) = (Arc::clone(&gateway), shutdown.clone());
                if A::SECURE {
                    let Some(tls) = snapshot.tls.clone() else {
                        continue;
                    };
                    let timeout = snapshot.config.server.limits.header_read_timeout;
                    tokio::spawn(async move {
                        if let Some((io, conn)) = handshake(&tls, io, peer, timeout).await {
                            serve_connection(http, io, gateway, conn, shutdown).await;
                        }
                        drop(counted);
                    });
                } else {
                    let conn = ConnInfo::new(peer, "http", None);
                    tokio::spawn(async move {
                        serve_connection(http, io, gateway, conn, shutdown).await;
                        drop(counted);
                    });
                }
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// The TLS handshake of a new connection, bounded by the header read timeout.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &tls::TlsState,
    io: S,
    peer: Option<SocketAddr>,
    timeout: Duration,
) -> Option<(tokio_rustls::server::TlsStream<S>, ConnInfo)> {
    let stream = match tokio::time::timeout(timeout, tls.acceptor.accept(io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(?peer, "TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!(
                ?peer,
                "TLS handshake not finished within the header read timeout"
            );
            return None;
        }
    };
    let client_subject = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(tls::subject)
        .and_then(|s| {
            let clean: String = s.chars().filter(|c| !c.is_control()).collect();
            http::HeaderValue::from_str(&clean).ok()
        });
    Some((stream, ConnInfo::new(peer, "https", client_subject)))
}

/// Answers a connection over the listener's limit with a 503 and closes it; a client
/// that does not read gets at most a second.
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, max: usize) {
    const BODY: &str = "{\"type\":\"urn:sluice:problem:overloaded\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"too many connections to this listener (server.limits.max_connections)\"}";
    tracing::debug!(
        max,
        "connection refused: the listener is at server.limits.max_connections"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Out of file descriptors or similar: log, pause, and keep accepting.
async fn accept_error(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
