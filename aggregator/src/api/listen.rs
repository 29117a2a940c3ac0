//! The aggregator's accept loop: connection caps and deadlines in front of the routes.
//!
//! A server on the open Internet must not be held by sockets that say nothing. Every connection
//! here is bounded:
//! - a cap in all ([`ConnLimits::max_connections`]) and per source
//!   ([`ConnLimits::max_per_source`]), with the oldest silent connection making room at the cap
//!   (`admission.rs`, shared with the throughput server);
//! - a TLS handshake deadline, and a deadline for a request's head (hyper's
//!   `header_read_timeout`), so a slow-loris client is cut off;
//! - a deadline on writes ([`Stalled`]): a connection whose client stops reading (an export, a
//!   large answer) is closed once a write has made no progress for [`ConnLimits::write_stall`].
//!   Waiting between requests is bounded by the head deadline, which hyper restarts for every
//!   request, and trickling a body by the routes' request deadline; a read deadline on the
//!   socket would also cut a request whose answer takes long to compute (hyper keeps reading
//!   for the client's close while it waits), so there is none;
//! - a cap on the buffered head (`max_buf_size`), so 10,000 open connections cannot each pin
//!   hyper's default 400 KB of buffer.
//!
//! Request bodies have deadlines of their own in the routes (`server.rs`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::api::admission::{Slot, Slots};

/// Caps and deadlines of the accept loop.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one source (IPv4 address or IPv6 /64).
    pub max_per_source: usize,
    /// Time a TLS handshake may take.
    pub handshake: Duration,
    /// Time a request's head may take to arrive, from the connection's start or the end of the
    /// previous response.
    pub header_read: Duration,
    /// Time a write may wait for the client to read.
    pub write_stall: Duration,
    /// Largest buffered request head (and read buffer) per connection.
    pub max_buf_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            // The shipped unit allows 65,536 descriptors; 4,096 connections of at most
            // `max_buf_bytes` each stay far under the memory bound in SECURITY.md.
            max_connections: 4096,
            // A probe opens one or two; a NAT in front of a whole office of them, a few dozen.
            max_per_source: 64,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            write_stall: Duration::from_secs(60),
            max_buf_bytes: 64 * 1024,
        }
    }
}

/// A socket whose writes fail with `TimedOut` once one has waited for the client to read for
/// longer than the limit.
pub struct Stalled<T> {
    inner: T,
    limit: Duration,
    waiting: bool,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Stalled<T> {
    /// Wraps `inner`, failing a write that waits longer than `limit`.
    pub fn new(inner: T, limit: Duration) -> Self {
        Stalled {
            inner,
            limit,
            waiting: false,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// After a write that could not proceed: starts the clock on the first, and fails once it
    /// has run out.
    fn blocked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.waiting {
            self.waiting = true;
            self.deadline.as_mut().reset(Instant::now() + self.limit);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", self.limit.as_secs()),
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// Passes a write's outcome on: a write that went through stops the clock, one that could
    /// not proceed runs it ([`Stalled::blocked`]).
    fn track<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.blocked(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalled<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalled<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` (TLS when `tls` is given) within `limits` until `shutdown`
/// completes; then lets open requests finish for up to ten seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Slots::new(limits.max_connections, limits.max_per_source));
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over a cap: closed before anything is read, so it costs one accept. The address is
        // not logged.
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => Arc::new(slot),
            Err(full) => {
                tracing::debug!("connection refused: {full}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, limits, stop, acceptor) = (
            app.clone(),
            limits.clone(),
            stop_rx.clone(),
            acceptor.clone(),
        );
        tokio::spawn(async move {
            let serving = connection(tcp, peer, acceptor, app, &limits, stop, slot.clone());
            tokio::select! {
                () = serving => {}
                () = slot.evicted() => {
                    tracing::debug!("connection closed to make room for a new one");
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slots.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: &ConnLimits,
    stop: watch::Receiver<bool>,
    slot: Arc<Slot>,
) {
    match acceptor {
        None => {
            http(
                Stalled::new(tcp, limits.write_stall),
                peer,
                app,
                limits,
                stop,
                slot,
            )
            .await
        }
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    http(
                        Stalled::new(tls, limits.write_stall),
                        peer,
                        app,
                        limits,
                        stop,
                        slot,
                    )
                    .await;
                }
                // The peer address is not logged: the aggregator keeps no client IPs.
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: &ConnLimits,
    mut stop: watch::Receiver<bool>,
    slot: Arc<Slot>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // whoami and the network check of uploads read the peer from `ConnectInfo`, as axum's own
    // server would give it.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Busy with a request: no newcomer takes this connection's place now.
        slot.busy();
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.max_buf_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("connection ended: {e}");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_client_does_not_read_fails_and_a_quiet_socket_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut socket = Stalled::new(tcp, Duration::from_millis(300));
            // A quiet spell longer than the limit, with no write waiting, is no stall.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let chunk = vec![0u8; 64 * 1024];
            let mut sent = 0usize;
            loop {
                match socket.write(&chunk).await {
                    Ok(n) => sent += n,
                    Err(e) => return (e.kind(), sent),
                }
            }
        });
        // The client connects and never reads: the buffers fill, then the write times out.
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (kind, sent) = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("stopped in time")
            .expect("task");
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(sent > 0, "writes went through until the buffers filled");
    }
}
