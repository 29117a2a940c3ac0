//! Who gets a connection: caps in all and per source, and who makes room at the cap. Shared by
//! the aggregator's accept loop (`listen.rs`) and the throughput server (`throughput.rs`).
//!
//! A source is one IPv4 address, or one IPv6 /64, the smallest prefix a single subscriber is
//! usually given (RFC 6177 section 3), so that one host cannot take every place by cycling
//! through its own addresses. A connection over its source's cap is refused at once. At the
//! global cap, a new connection takes the place of the oldest one that has not sent its request
//! yet, which is told to close; only when every connection is busy with a request is the new one
//! refused. So sockets opened and left silent, from however many sources, cannot lock out a
//! client that asks for something at once. Counts live in memory for as long as a connection is
//! open; no address is logged or kept (SECURITY.md, "What we protect").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The source a connection is counted against: an IPv4 address (also when written as an
/// IPv4-mapped IPv6 address, RFC 4291 section 2.5.5.2), or an IPv6 /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// Which cap a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The server's cap.
    #[error("{0} connections at once, all of them downloading")]
    Server(usize),
    /// The source's cap.
    #[error("{0} connections at once from one source, the most it takes from one")]
    Source(usize),
}

/// Connections being served, in all and per source. A source leaves the map when its last
/// connection ends, so no address is kept longer than its connections last.
pub struct Slots {
    connections: usize,
    per_source: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// The next connection's number; numbers only grow, so the smallest waiting is the oldest.
    next: u64,
    /// Connections counted against `Slots::connections`.
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Connections that have not sent their request yet, oldest first, with the signal that
    /// closes each.
    waiting: BTreeMap<u64, Arc<Notify>>,
    /// Connections told to close to make room, not counted in `total` any more.
    evicted: HashSet<u64>,
}

/// One connection's place; given back on drop.
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
    id: u64,
    close: Arc<Notify>,
}

impl Slots {
    /// At most `connections` in all and `per_source` from one source.
    pub fn new(connections: usize, per_source: usize) -> Slots {
        Slots {
            connections: connections.max(1),
            per_source: per_source.max(1),
            held: Mutex::new(Held::default()),
        }
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.held().total
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // The counters stay consistent whatever panicked while holding the lock: each update
        // is a few single steps under it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `peer`: none when its source is at its cap; at the global
    /// cap, the place of the oldest connection that has not sent its request, which is told to
    /// close; none when every connection is downloading.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Full> {
        let source = source_of(peer);
        let mut held = self.held();
        if held.by_source.get(&source).copied().unwrap_or(0) >= self.per_source {
            return Err(Full::Source(self.per_source));
        }
        if held.total >= self.connections {
            let Some((oldest, close)) = held.waiting.pop_first() else {
                return Err(Full::Server(self.connections));
            };
            close.notify_one();
            held.evicted.insert(oldest);
            held.total -= 1;
        }
        *held.by_source.entry(source).or_insert(0) += 1;
        held.total += 1;
        let id = held.next;
        held.next += 1;
        let close = Arc::new(Notify::new());
        held.waiting.insert(id, close.clone());
        Ok(Slot {
            slots: self.clone(),
            source,
            id,
            close,
        })
    }
}

impl Slot {
    /// The request arrived: the connection is downloading, and no newcomer evicts it.
    pub fn busy(&self) {
        self.slots.held().waiting.remove(&self.id);
    }

    /// Completes once the connection has been evicted to make room.
    pub async fn evicted(&self) {
        self.close.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held();
        held.waiting.remove(&self.id);
        if !held.evicted.remove(&self.id) {
            held.total = held.total.saturating_sub(1);
        }
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(source_of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[tokio::test]
    async fn slots_cap_each_source_evict_the_oldest_idle_and_come_back_on_drop() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let slots = Arc::new(Slots::new(5, 2));
        let counts = |slots: &Slots| {
            let held = slots.held();
            (held.total, held.by_source.len(), held.waiting.len())
        };
        let a1 = slots.take(ip("192.0.2.1")).expect("first");
        let a2 = slots.take(ip("::ffff:192.0.2.1")).expect("second");
        assert_eq!(
            slots.take(ip("192.0.2.1")).err(),
            Some(Full::Source(2)),
            "a third from one address"
        );
        // Another address in the same IPv6 /64 is the same source.
        let b1 = slots.take(ip("2001:db8::1")).expect("v6");
        let b2 = slots.take(ip("2001:db8::2")).expect("v6 again");
        assert_eq!(
            slots.take(ip("2001:db8::ffff")).err(),
            Some(Full::Source(2))
        );
        let c1 = slots.take(ip("198.51.100.1")).expect("fifth");
        assert_eq!(counts(&slots), (5, 3, 5));
        // Full: a newcomer takes the place of the oldest connection still without a request.
        a1.busy();
        a2.busy();
        let d1 = slots.take(ip("203.0.113.9")).expect("in b1's place");
        tokio::time::timeout(Duration::from_millis(100), b1.evicted())
            .await
            .expect("b1 is told to close");
        assert_eq!(counts(&slots), (5, 4, 3));
        // Every connection downloading: the newcomer is refused.
        for s in [&b2, &c1, &d1] {
            s.busy();
        }
        assert_eq!(
            slots.take(ip("203.0.113.10")).err(),
            Some(Full::Server(5)),
            "all five are downloading"
        );
        // The evicted one closing frees nothing more; a finished download does.
        drop(b1);
        assert_eq!(counts(&slots), (5, 4, 0));
        assert!(slots.take(ip("203.0.113.10")).is_err());
        drop(a1);
        let e1 = slots.take(ip("203.0.113.10")).expect("after a drop");
        assert_eq!(counts(&slots), (5, 5, 1));
        // A source is forgotten with its last connection.
        drop((a2, b2, c1, d1, e1));
        assert_eq!(counts(&slots), (0, 0, 0));
    }
}
