//! Zero-downtime binary upgrade: the running process hands its listening sockets to a new one over `server.upgrade_socket`, then drains and exits.
//!
//! The exchange, on one connection to the upgrade socket:
//! 1. new → old: `sluice-upgrade 1`
//! 2. old → new: one message holding `sluice-upgrade 1`, one line per socket (`tcp ADDR`,
//!    `tls ADDR`, `unix PATH`, `admin ADDR`, `upgrade PATH`) and `end`, with the sockets themselves
//!    attached (SCM_RIGHTS) in the order of the lines;
//! 3. new → old: `ready` once it accepts on every one of them;
//! 4. old → new: `draining PID`; the old process stops accepting, drains and exits.
//!
//! Both processes accept on the same sockets until step 3, and a socket is never closed
//! while either holds it, so no connection is refused. If the new process goes away
//! before step 3, the upgrade is abandoned and the old one serves on as if nothing happened.

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use sluice_proxy::{Handoff, ListenKey};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

const HELLO: &str = "sluice-upgrade 1";
/// At most this many sockets travel in one message (the kernel's limit is 253).
const MAX_SOCKETS: usize = 250;
/// The longest a step of the exchange may take before it is abandoned.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the new process may take to start accepting once it has the sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One socket handed over, as its line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    /// A data-plane listener.
    Data(ListenKey),
    Admin(SocketAddr),
    /// The upgrade socket itself, so the next upgrade finds the new process there.
    Upgrade(PathBuf),
}

impl Socket {
    fn line(&self) -> Option<String> {
        let path_line = |kind: &str, path: &Path| {
            path.to_str()
                .filter(|p| !p.contains('\n'))
                .map(|p| format!("{kind} {p}"))
        };
        match self {
            Socket::Data(ListenKey::Tcp(addr)) => Some(format!("tcp {addr}")),
            Socket::Data(ListenKey::Unix(path)) => path_line("unix", path),
            Socket::Data(ListenKey::Tls(addr)) => Some(format!("tls {addr}")),
            Socket::Admin(addr) => Some(format!("admin {addr}")),
            Socket::Upgrade(path) => path_line("upgrade", path),
        }
    }

    fn parse(line: &str) -> Result<Socket, String> {
        let (kind, rest) = line
            .split_once(' ')
            .ok_or_else(|| format!("unexpected line `{line}`"))?;
        let addr = || {
            rest.parse::<SocketAddr>()
                .map_err(|e| format!("bad address in `{line}`: {e}"))
        };
        Ok(match kind {
            "tcp" => Socket::Data(ListenKey::Tcp(addr()?)),
            "unix" => Socket::Data(ListenKey::Unix(PathBuf::from(rest))),
            "tls" => Socket::Data(ListenKey::Tls(addr()?)),
            "admin" => Socket::Admin(addr()?),
            "upgrade" => Socket::Upgrade(PathBuf::from(rest)),
            _ => return Err(format!("unexpected line `{line}`")),
        })
    }
}

/// The sockets a new process received from the running one.
#[derive(Debug)]
pub struct Inherited {
    sockets: Vec<(Socket, OwnedFd)>,
    stream: UnixStream,
}

impl Inherited {
    /// Takes the data-plane listeners out.
    pub fn data(&mut self) -> Vec<(ListenKey, OwnedFd)> {
        let (data, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition::<Vec<_>, _>(|(s, _)| matches!(s, Socket::Data(_)));
        self.sockets = rest;
        data.into_iter()
            .filter_map(|(s, fd)| match s {
                Socket::Data(key) => Some((key, fd)),
                _ => None,
            })
            .collect()
    }

    /// Takes the socket named `socket` out, if it was handed over.
    pub fn take(&mut self, socket: &Socket) -> Option<OwnedFd> {
        let at = self.sockets.iter().position(|(s, _)| s == socket)?;
        Some(self.sockets.remove(at).1)
    }

    /// Tells the old process this one accepts now; returns the old one's pid.
    pub async fn ready(mut self) -> Result<u32, String> {
        let exchange = async {
            self.stream.write_all(b"ready\n").await?;
            read_line(&mut self.stream).await
        };
        let line = tokio::time::timeout(STEP_TIMEOUT, exchange)
            .await
            .map_err(|_| "the running process did not answer".to_string())?
            .map_err(|e| e.to_string())?;
        line.strip_prefix("draining ")
            .and_then(|pid| pid.parse().ok())
            .ok_or_else(|| format!("unexpected answer `{line}`"))
    }
}

/// Connects to the running process at `path` and receives its listening sockets.
pub async fn take_over(path: &Path) -> Result<Inherited, String> {
    let place = path.display();
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(|e| {
            format!("cannot reach a running sluice at {place} (server.upgrade_socket): {e}")
        })?;
        stream
            .write_all(format!("{HELLO}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let (text, fds) = receive(&stream).await.map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(HELLO) {
            return Err(format!("{place} does not speak the upgrade protocol"));
        }
        let names = lines
            .take_while(|l| *l != "end")
            .map(Socket::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if names.len() != fds.len() {
            return Err(format!(
                "received {} sockets for {} names",
                fds.len(),
                names.len()
            ));
        }
        Ok(Inherited {
            sockets: names.into_iter().zip(fds).collect(),
            stream,
        })
    };
    tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the running process at {place} did not hand its sockets over"))?
}

/// Reads the old process's message up to its `end` line, with the sockets attached.
async fn receive(stream: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut fds = Vec::new();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(b"\nend\n") {
        let n = stream
            .async_io(Interest::READABLE, || {
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = recvmsg(
                    stream,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    return Err(io::Error::other("too many sockets in one message"));
                }
                Ok(msg.bytes)
            })
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the running process closed the connection",
            ));
        }
        text.extend_from_slice(&buf[..n]);
        if text.len() > 1 << 20 {
            return Err(io::Error::other("the socket list is too long"));
        }
    }
    String::from_utf8(text)
        .map(|t| (t, fds))
        .map_err(|_| io::Error::other("the socket list is not UTF-8"))
}

/// The running process's side: what it hands over besides its data-plane listeners.
pub struct Offer {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// A copy of the admin listener, which does not change while the process runs.
    pub admin: Option<(SocketAddr, OwnedFd)>,
    /// Asks the serve loop for its current listeners.
    pub handoffs: mpsc::Sender<Handoff>,
}

/// Accepts upgrades until one succeeds, then returns: from then on the new process
/// accepts, and this one should drain and exit.
pub async fn offer(offer: Offer) {
    loop {
        let stream = match offer.listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("upgrade socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match hand_over(&offer, stream).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("upgrade abandoned; this process serves on: {e}"),
        }
    }
}

async fn hand_over(offer: &Offer, mut stream: UnixStream) -> Result<(), String> {
    let peer = stream.peer_cred().map_err(|e| e.to_string())?;
    let uid = rustix::process::getuid().as_raw();
    if peer.uid() != uid && peer.uid() != 0 {
        return Err(format!(
            "refused a connection from uid {}: upgrades come from the same user",
            peer.uid()
        ));
    }
    let hello = tokio::time::timeout(STEP_TIMEOUT, read_line(&mut stream))
        .await
        .map_err(|_| "no greeting from the new process".to_string())?
        .map_err(|e| e.to_string())?;
    if hello != HELLO {
        return Err(format!("unexpected greeting `{hello}`"));
    }
    tracing::info!(
        pid = peer.pid(),
        "a new process asks for the listening sockets"
    );

    let (reply, sockets) = oneshot::channel();
    offer
        .handoffs
        .send(reply)
        .await
        .map_err(|_| "the data plane is stopping".to_string())?;
    let data = sockets
        .await
        .map_err(|_| "the data plane is stopping".to_string())?
        .map_err(|e| format!("cannot copy the listening sockets: {e}"))?;
    let mut sockets: Vec<(Socket, OwnedFd)> = data
        .into_iter()
        .map(|(key, fd)| (Socket::Data(key), fd))
        .collect();
    let copy = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(|e| e.to_string());
    if let Some((addr, fd)) = &offer.admin {
        sockets.push((Socket::Admin(*addr), copy(fd.as_fd())?));
    }
    sockets.push((
        Socket::Upgrade(offer.path.clone()),
        copy(offer.listener.as_fd())?,
    ));
    send(&mut stream, &sockets)
        .await
        .map_err(|e| format!("cannot send the sockets: {e}"))?;
    drop(sockets);

    let ready = tokio::time::timeout(READY_TIMEOUT, read_line(&mut stream))
        .await
        .map_err(|_| "the new process did not become ready".to_string())?
        .map_err(|e| format!("the new process went away before it was ready ({e})"))?;
    if ready != "ready" {
        return Err(format!("unexpected message `{ready}`"));
    }
    let bye = format!("draining {}\n", std::process::id());
    // The new process accepts whatever comes of this answer.
    let _ = stream.write_all(bye.as_bytes()).await;
    tracing::info!(
        pid = peer.pid(),
        "the new process accepts on the listening sockets now"
    );
    Ok(())
}

/// Sends the socket list with the sockets attached.
async fn send(stream: &mut UnixStream, sockets: &[(Socket, OwnedFd)]) -> io::Result<()> {
    let mut text = format!("{HELLO}\n");
    let mut fds = Vec::with_capacity(sockets.len());
    for (socket, fd) in sockets {
        match socket.line() {
            Some(line) => {
                text.push_str(&line);
                text.push('\n');
                fds.push(fd.as_fd());
            }
            None => tracing::warn!(
                ?socket,
                "not handed over: its path is not valid UTF-8 or has a line break"
            ),
        }
    }
    text.push_str("end\n");
    if fds.len() > MAX_SOCKETS {
        return Err(io::Error::other(format!(
            "{} listening sockets; at most {MAX_SOCKETS} can be handed over",
            fds.len()
        )));
    }
    let bytes = text.as_bytes();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("the socket list does not fit"));
            }
            Ok(sendmsg(
                &*stream,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )?)
        })
        .await?;
    // The sockets went with the first byte; the rest of the text follows plainly.
    stream.write_all(&bytes[sent..]).await
}

/// Reads one short line, without its newline.
async fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() > 256 {
            return Err(io::Error::other("line too long"));
        }
    }
    String::from_utf8(line).map_err(|_| io::Error::other("line is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_lines_round_trip() {
        let sockets = [
            Socket::Data(ListenKey::Tcp("127.0.0.1:8080".parse().expect("addr"))),
            Socket::Data(ListenKey::Tcp("[::1]:443".parse().expect("addr"))),
            Socket::Data(ListenKey::Tls("0.0.0.0:443".parse().expect("addr"))),
            Socket::Data(ListenKey::Unix(PathBuf::from("/run/sluice data.sock"))),
            Socket::Admin("127.0.0.1:9901".parse().expect("addr")),
            Socket::Upgrade(PathBuf::from("/run/sluice-upgrade.sock")),
        ];
        for socket in sockets {
            let line = socket.line().expect("a line");
            assert_eq!(Socket::parse(&line), Ok(socket));
        }
        assert_eq!(
            Socket::Data(ListenKey::Unix(PathBuf::from("/tmp/a\nb"))).line(),
            None
        );
        assert!(Socket::parse("tcp nonsense").is_err());
        assert!(Socket::parse("udp 127.0.0.1:1").is_err());
        assert!(Socket::parse("end").is_err());
    }
}
