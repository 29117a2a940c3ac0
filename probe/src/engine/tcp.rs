//! TCP connect (df-005-tcpconnect).
//!
//! Refused (RST to the SYN), reset, unreachable (ICMP) and our own deadline are told apart; a
//! censor that drops SYNs shows as `generic_timeout_error`, one that forges RSTs as
//! `connection_refused`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Map;
use tokio::net::{TcpSocket, TcpStream};

use super::Trace;
use crate::failure::{Operation, StepError};
use crate::ooni::{TcpConnect, TcpStatus};

/// Connects to `addr` within `timeout`, from `local` when given, recording the attempt.
pub async fn connect(
    addr: SocketAddr,
    local: Option<IpAddr>,
    trace: &Trace,
    timeout: Duration,
    tags: Option<Vec<String>>,
    transaction_id: i64,
) -> (TcpConnect, Result<TcpStream, StepError>) {
    let t0 = trace.clock.secs();
    let result = match tokio::time::timeout(timeout, open(addr, local)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(StepError::Io {
            op: Operation::Connect,
            target: addr.to_string(),
            source,
        }),
        Err(_) => Err(StepError::Timeout {
            op: Operation::Connect,
            target: addr.to_string(),
            after: timeout,
        }),
    };
    let record = TcpConnect {
        ip: addr.ip().to_string(),
        port: addr.port(),
        status: TcpStatus {
            blocked: None,
            failure: result.as_ref().err().map(|e| e.failure().to_string()),
            success: result.is_ok(),
        },
        t0: Some(t0),
        t: Some(trace.clock.secs()),
        tags,
        transaction_id: Some(transaction_id),
        extra: Map::new(),
    };
    if let Err(e) = &result {
        tracing::debug!(error = %e, "tcp connect failed");
    }
    (record, result)
}

async fn open(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_port_is_connection_refused() {
        // Bind then drop a listener: its port is now closed on loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let trace = Trace::new();
        let (record, result) = connect(addr, None, &trace, Duration::from_secs(2), None, 1).await;
        assert!(result.is_err());
        assert!(!record.status.success);
        assert_eq!(record.status.failure.as_deref(), Some("connection_refused"));
        assert_eq!(record.port, addr.port());
        assert!(record.t.unwrap_or_default() >= record.t0.unwrap_or(f64::MAX));
    }

    #[tokio::test]
    async fn open_port_succeeds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let trace = Trace::new();
        let (record, result) = connect(addr, None, &trace, Duration::from_secs(2), None, 7).await;
        assert!(result.is_ok());
        assert!(record.status.success);
        assert_eq!(record.status.failure, None);
        assert_eq!(record.transaction_id, Some(7));
    }

    #[tokio::test]
    async fn connects_from_the_chosen_local_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let trace = Trace::new();
        let local = IpAddr::from([127, 0, 0, 2]);
        let (_, result) = connect(addr, Some(local), &trace, Duration::from_secs(2), None, 1).await;
        assert!(result.is_ok());
        let (_, peer) = listener.accept().await.expect("accept");
        assert_eq!(peer.ip(), local);
    }
}
