//! The aggregator's accept loop: connection caps and deadlines in front of the routes.
//!
//! A server on the open Internet must not be held by sockets that say nothing. Every connection
//! here is bounded:
//! - a cap per source ([`ConnLimits::max_per_source`]: one IPv4 address, or one IPv6 /64, the
//!   block one subscriber line gets, RFC 6177 section 2): a connection over it is closed at once,
//!   before a byte of it is read. The per-source counts live in memory for as long as a
//!   connection is open, and an address is never logged or stored (DESIGN "Privacy and safety");
//! - a global cap ([`ConnLimits::max_connections`]). At the cap, a new connection takes the
//!   place of the oldest one that has not yet sent a request ([`Waiting`]); only when every open
//!   connection is busy with requests is the new one closed. So sockets opened and left silent,
//!   from however many sources, cannot lock out a client that asks something at once;
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

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

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

/// Connections open per source, in memory only.
#[derive(Debug, Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// The source a connection counts against: an IPv4 address (also when IPv4-mapped), or the
/// /64 of an IPv6 address.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One open connection's place in [`Sources`], given back when dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    source: IpAddr,
}

impl SourceSlot {
    fn take(sources: &Arc<Sources>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let source = source_of(ip);
        let mut map = sources.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(source).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self
            .sources
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

/// Open connections that have not sent a request yet, oldest first, each with the signal that
/// closes it.
#[derive(Debug, Default)]
struct Waiting(Mutex<BTreeMap<u64, Arc<Notify>>>);

impl Waiting {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the oldest waiting connection; false when none waits.
    fn evict_oldest(&self) -> bool {
        match self.map().pop_first() {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Takes a connection off the [`Waiting`] list when its first request arrives (or it ends).
#[derive(Clone)]
struct FirstRequest {
    waiting: Arc<Waiting>,
    seq: u64,
    seen: Arc<AtomicBool>,
}

impl FirstRequest {
    fn seen(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.waiting.map().remove(&self.seq);
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
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
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
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let sources = Arc::new(Sources::default());
    let waiting = Arc::new(Waiting::default());
    let mut seq: u64 = 0;
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
        // Over its source's cap: closed before anything is read, so it costs one accept.
        let Some(slot) = SourceSlot::take(&sources, peer.ip(), limits.max_per_source) else {
            continue;
        };
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // At the global cap: the oldest silent connection makes room, or, when every
            // connection is busy with requests, this one is closed.
            Err(_) if waiting.evict_oldest() => {
                let freed = open.clone().acquire_owned();
                match tokio::time::timeout(Duration::from_secs(1), freed).await {
                    Ok(Ok(permit)) => permit,
                    _ => continue,
                }
            }
            Err(_) => continue,
        };
        let _ = tcp.set_nodelay(true);
        seq += 1;
        let close = Arc::new(Notify::new());
        waiting.map().insert(seq, close.clone());
        let first = FirstRequest {
            waiting: waiting.clone(),
            seq,
            seen: Arc::new(AtomicBool::new(false)),
        };
        let (app, limits, stop, acceptor) = (
            app.clone(),
            limits.clone(),
            stop_rx.clone(),
            acceptor.clone(),
        );
        tokio::spawn(async move {
            let serving = connection(tcp, peer, acceptor, app, &limits, stop, first.clone());
            tokio::select! {
                () = serving => {}
                () = close.notified() => {}
            }
            first.seen();
            drop((permit, slot));
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), open.acquire_many(all)).await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: &ConnLimits,
    stop: watch::Receiver<bool>,
    first: FirstRequest,
) {
    match acceptor {
        None => {
            http(
                Stalled::new(tcp, limits.write_stall),
                peer,
                app,
                limits,
                stop,
                first,
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
                        first,
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
    first: FirstRequest,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // whoami and the network check of uploads read the peer from `ConnectInfo`, as axum's own
    // server would give it.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        first.seen();
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

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            source_of(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn a_source_gets_its_cap_and_its_slots_back() {
        let sources = Arc::new(Sources::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let one = SourceSlot::take(&sources, ip, 2).expect("first");
        let two = SourceSlot::take(&sources, ip, 2).expect("second");
        assert!(SourceSlot::take(&sources, ip, 2).is_none());
        assert!(SourceSlot::take(&sources, "192.0.2.2".parse().expect("ip"), 2).is_some());
        drop((one, two));
        assert!(SourceSlot::take(&sources, ip, 2).is_some());
        assert!(
            sources
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
                <= 1
        );
    }

    #[test]
    fn the_oldest_waiting_connection_is_closed_first_and_served_ones_never() {
        let waiting = Arc::new(Waiting::default());
        for seq in 1..=3 {
            waiting.map().insert(seq, Arc::new(Notify::new()));
        }
        let served = FirstRequest {
            waiting: waiting.clone(),
            seq: 1,
            seen: Arc::new(AtomicBool::new(false)),
        };
        served.seen();
        assert!(waiting.evict_oldest());
        assert_eq!(waiting.map().keys().copied().collect::<Vec<_>>(), vec![3]);
        assert!(waiting.evict_oldest());
        assert!(!waiting.evict_oldest(), "nothing left to evict");
    }

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
