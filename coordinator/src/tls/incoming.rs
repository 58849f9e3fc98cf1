//! Accepting TLS connections: a TCP accept loop that runs each handshake in its own task, with a
//! timeout, and hands the finished ones to tonic (as a `Stream`) or axum (as a `Listener`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::ServerTls;

/// How long a client may take to complete the TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; past this, accepting waits for one to finish.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Finished handshakes not yet taken by the server.
const ACCEPTED_BACKLOG: usize = 64;

/// Which application protocols (ALPN) a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// The gRPC listener: `h2` only.
    Grpc,
    /// The HTTP listener: `h2` and `http/1.1`.
    Http,
}

/// A handshake that completed.
struct Accepted {
    stream: TlsStream<TcpStream>,
    remote: SocketAddr,
}

/// The TLS connections of a TCP listener, each with the server configuration current when it
/// was accepted (a reload applies to new connections). A `Stream` for tonic's
/// `serve_with_incoming_shutdown` and an `axum::serve::Listener`. Dropping it stops accepting and
/// closes the listening socket.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<Accepted>,
    local_addr: Option<SocketAddr>,
    accept_loop: JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` (TCP_NODELAY set on every connection).
    pub(super) fn new(listener: TcpListener, tls: Arc<ServerTls>, protocols: Protocols) -> Self {
        let local_addr = listener.local_addr().ok();
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let accept_loop = tokio::spawn(accept_loop(listener, tls, protocols, tx));
        TlsIncoming {
            accepted,
            local_addr,
            accept_loop,
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted
            .poll_recv(cx)
            .map(|next| next.map(|conn| Ok(conn.stream)))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => (conn.stream, conn.remote),
            None => {
                // Only if the accept loop panicked: no more connections.
                tracing::error!("the TLS accept loop stopped; no new HTTP connections");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener has no local address",
            )
        })
    }
}

/// Accepts TCP connections and spawns one handshake task per connection, until the receiver
/// is dropped (then the [`TlsIncoming`] aborts this task).
async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    protocols: Protocols,
    tx: mpsc::Sender<Accepted>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                accept_error(err).await;
                continue;
            }
        };
        // A custom incoming does not get the servers' own TCP_NODELAY (see `nodelay` in lib.rs).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let acceptor = TlsAcceptor::from(tls.config(protocols));
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            match handshake {
                Ok(Ok(stream)) => {
                    // Fails only when the server stopped accepting: the connection is dropped.
                    let _ = tx.send(Accepted { stream, remote }).await;
                }
                Ok(Err(err)) => tracing::debug!(%remote, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(
                    %remote,
                    timeout_s = HANDSHAKE_TIMEOUT.as_secs(),
                    "TLS handshake timed out"
                ),
            }
        });
    }
}

/// Handles a failed `accept`: errors of one connection are skipped; others (out of file
/// descriptors, for instance) are logged and accepting pauses for a second, as axum and hyper do.
async fn accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
