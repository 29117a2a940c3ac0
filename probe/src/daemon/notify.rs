//! systemd's readiness protocol (`sd_notify(3)`), without libsystemd: one datagram of
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`, a path or, after `@`, a name in
//! Linux's abstract namespace. Outside systemd the variable is unset and nothing is sent.
//!
//! The daemon says `READY=1` once it is measuring, `RELOADING=1` then `READY=1` around a
//! configuration reload (SIGHUP), `STOPPING=1` on SIGTERM, and `WATCHDOG=1` at half the
//! interval systemd asks for in `$WATCHDOG_USEC` (`sd_watchdog_enabled(3)`), so that a
//! daemon whose scheduler hangs is restarted.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Address)>,
}

#[derive(Debug, Clone)]
enum Address {
    Path(std::path::PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a no-op notifier when it is unset or unusable.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET")
            .filter(|v| !v.is_empty())
            .and_then(|v| {
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec();
                let address = match bytes.strip_prefix(b"@") {
                    #[cfg(target_os = "linux")]
                    Some(name) => Address::Abstract(name.to_vec()),
                    #[cfg(not(target_os = "linux"))]
                    Some(_) => return None,
                    None => Address::Path(v.into()),
                };
                // Non-blocking: if the manager stops reading, a full queue must not stall the
                // daemon's main loop (and with it SIGTERM handling).
                match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                    Ok(socket) => Some((socket, address)),
                    Err(e) => {
                        tracing::warn!("cannot open a socket to notify systemd: {e}");
                        None
                    }
                }
            });
        Notifier { target }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `READY=1`); failures are logged, never fatal: the daemon's work
    /// matters more than telling systemd about it.
    pub fn send(&self, state: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        let sent = match address {
            Address::Path(path) => socket.send_to(state.as_bytes(), path),
            #[cfg(target_os = "linux")]
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
            }
        };
        match sent {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::debug!("systemd's notification queue is full; dropped {state:?}");
            }
            Err(e) => tracing::warn!("cannot notify systemd ({state:?}): {e}"),
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` when it is set for this process
/// (`$WATCHDOG_PID` unset or ours), as `sd_watchdog_enabled(3)` recommends.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("vantage-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().expect("socket"),
                Address::Path(path),
            )),
        };
        assert!(notifier.enabled());
        notifier.send("READY=1\nSTATUS=measuring");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=measuring");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("vantage-notify-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().expect("socket"),
                Address::Abstract(name.into_bytes()),
            )),
        };
        notifier.send("WATCHDOG=1");
        let mut buf = [0u8; 16];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let notifier = Notifier { target: None };
        assert!(!notifier.enabled());
        notifier.send("READY=1");
    }
}
