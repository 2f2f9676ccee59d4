//! The hub's own accept loop: TCP, optional TLS, then HTTP/1.1 (with
//! upgrades) for the axum router.
//!
//! It exists because `axum::serve` cannot do what a hub on the internet
//! needs before the first request reaches the router:
//!
//! - **TLS** (rustls through tokio-rustls), with an optional client
//!   certificate whose names are read once per connection
//!   ([`PeerCertificate`]) and put into every request's extensions.
//! - **A connection cap** (`limits.max_connections`): a [`Semaphore`] permit
//!   is taken at accept and lives inside the connection's I/O object, so it
//!   is held for the connection's whole life, including after a WebSocket
//!   upgrade (the upgraded stream owns the same I/O object). Without a free
//!   permit the new connection is closed at once (plain HTTP first gets a
//!   fixed `503`), counted as `hub_limit_rejections_total{limit="connections"}`.
//! - **A handshake deadline** (`limits.handshake_timeout`): TLS handshake and
//!   the first request's headers must both be done within it, or the
//!   connection is dropped and counted (`limit="handshake_timeout"`); this
//!   stops slowloris clients from holding permits. Later requests on a
//!   kept-alive connection get the same time for their headers (hyper's
//!   `header_read_timeout`), which also closes idle kept-alive connections.
//! - The peer address as `ConnectInfo<SocketAddr>` in every request, for
//!   per-address limits.
//!
//! Shutdown: on the cancellation token the loop stops accepting, every
//! HTTP connection is told to finish its request and close
//! (`graceful_shutdown`), connections still in their handshake are dropped,
//! and [`serve`] returns when all are gone or the grace period ends.
//! Upgraded WebSockets are no longer HTTP connections: the gateway tracks
//! and drains them after [`serve`] returns.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

use crate::metrics::{Limit, Metrics};
use crate::tls::PeerCertificate;

/// The answer to a plain-HTTP connection over the cap, written before the
/// connection is closed; TLS connections are closed without a word.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 5\r\n\
Connection: close\r\n\
Content-Type: application/json\r\n\
Content-Length: 79\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"connection limit reached\"}}\n";

/// At most one warning per this period about refused connections; each is
/// counted, so the log only needs to say that it is happening.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Longest pause after repeated accept errors (for example, out of file
/// descriptors), so the loop neither spins nor gives up.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections the kernel may queue before `accept` (capped by
/// `net.core.somaxconn`). A reconnect storm sends thousands of SYNs at once;
/// with tokio's default of 1,024 the overflow is dropped and each dropped
/// device waits a whole SYN retransmission (1 s, then 3 s) before retrying.
pub const LISTEN_BACKLOG: u32 = 16 * 1024;

/// Binds the hub's listening socket with [`LISTEN_BACKLOG`] (and
/// `SO_REUSEADDR`, so a restart does not wait for old connections' TIME_WAIT).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How the listener treats each connection.
#[derive(Clone)]
pub struct ListenerSettings {
    /// TLS on every connection, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time from accept to complete TLS handshake and first request headers.
    pub handshake_timeout: Duration,
    /// Time HTTP connections get to finish after shutdown is requested.
    pub grace: Duration,
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("grace", &self.grace)
            .finish()
    }
}

/// What every connection task shares.
struct Shared {
    /// The application; cloned per request (cheap: it is an `Arc` inside).
    app: Router,
    /// TLS, when configured.
    tls: Option<TlsAcceptor>,
    /// See [`ListenerSettings::handshake_timeout`].
    handshake_timeout: Duration,
    /// For the limit counters.
    metrics: Arc<Metrics>,
    /// Cancelled when the hub stops.
    shutdown: CancellationToken,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets HTTP
/// connections finish (bounded by `settings.grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // Semaphore::new panics above MAX_PERMITS; no machine holds that many.
    let permits = Arc::new(Semaphore::new(
        settings.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let plain = settings.tls.is_none();
    let shared = Arc::new(Shared {
        app,
        tls: settings.tls,
        handshake_timeout: settings.handshake_timeout,
        metrics,
        shutdown: shutdown.clone(),
    });
    let tasks = TaskTracker::new();
    let mut backoff = Duration::ZERO;
    let mut cap_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(err) if is_connection_error(&err) => {
                debug!(%err, "connection failed before accept");
                continue;
            }
            Err(err) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                warn!(%err, ?backoff, "accept failed; pausing");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.metrics.limit(Limit::Connections);
            if cap_warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                cap_warned = Some(Instant::now());
                warn!(
                    max_connections = settings.max_connections,
                    "connection limit reached: refusing new connections \
                     (counted in hub_limit_rejections_total{{limit=\"connections\"}})"
                );
            }
            debug!(%peer, "connection refused: connection limit reached");
            if plain {
                // A fresh socket's send buffer is empty, so this does not
                // block; a short write only shortens a courtesy.
                let _ = stream.try_write(OVER_CAPACITY);
            }
            continue;
        };
        // Small frames (acks, commands, API answers) must leave at once: with
        // Nagle's algorithm a write waits for the peer's delayed ACK of the
        // previous one, which puts tens of milliseconds on a command round trip.
        if let Err(err) = stream.set_nodelay(true) {
            debug!(%err, "could not set TCP_NODELAY on a connection");
        }
        tasks.spawn(handle(Arc::clone(&shared), stream, peer, permit));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(settings.grace, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            open = tasks.len(),
            "HTTP connections still open at the shutdown deadline"
        );
    }
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection: TLS (if configured), then HTTP until it closes.
async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + shared.handshake_timeout;
    let Some(acceptor) = &shared.tls else {
        let io = Permitted {
            io: stream,
            _permit: permit,
        };
        serve_http(&shared, io, peer, None, deadline).await;
        return;
    };
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => handshake,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            // Scanners and misconfigured clients make these common: counted,
            // logged at debug only.
            shared.metrics.limit(Limit::TlsHandshake);
            debug!(%peer, %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.limit(Limit::HandshakeTimeout);
            debug!(%peer, "connection dropped: TLS handshake not done in time");
            return;
        }
    };
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| PeerCertificate::from_der(der));
    let io = Permitted {
        io: tls,
        _permit: permit,
    };
    serve_http(&shared, io, peer, certificate, deadline).await;
}

/// HTTP/1.1 with upgrades on `io` until it closes, the first request misses
/// `deadline`, or shutdown.
async fn serve_http<I>(
    shared: &Shared,
    io: I,
    peer: SocketAddr,
    certificate: Option<PeerCertificate>,
    deadline: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let app = shared.app.clone();
        let requested = Arc::clone(&requested);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            if let Some(certificate) = &certificate {
                extensions.insert(certificate.clone());
            }
            let mut app = app.clone();
            app.call(request.map(axum::body::Body::new))
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        .keep_alive(true);
    let mut connection = pin!(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
    );
    let first_request_due = tokio::time::sleep_until(deadline);
    let mut first_request_due = pin!(first_request_due);
    let mut waiting_for_first = true;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    if err.is_timeout() && !requested.load(Ordering::Relaxed) {
                        shared.metrics.limit(Limit::HandshakeTimeout);
                        debug!(%peer, "connection dropped: no request headers in time");
                    } else {
                        debug!(%peer, %err, "HTTP connection ended with an error");
                    }
                }
                return;
            }
            _ = &mut first_request_due, if waiting_for_first => {
                waiting_for_first = false;
                if !requested.load(Ordering::Relaxed) {
                    shared.metrics.limit(Limit::HandshakeTimeout);
                    debug!(%peer, "connection dropped: no request headers in time");
                    return;
                }
            }
            _ = shared.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection's I/O together with its connection-cap permit, so the
/// permit is released exactly when the I/O object is dropped, whether by
/// hyper or, after an upgrade, by the WebSocket task.
struct Permitted<I> {
    /// The TCP or TLS stream.
    io: I,
    /// Held, never read.
    _permit: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Permitted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Permitted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_capacity_answer_is_well_formed() {
        let text = std::str::from_utf8(OVER_CAPACITY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .expect("Content-Length");
        assert_eq!(length.parse::<usize>().expect("number"), body.len());
        serde_json::from_str::<serde_json::Value>(body).expect("JSON body");
    }
}
