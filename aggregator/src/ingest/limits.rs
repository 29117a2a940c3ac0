//! Resource bounds of the aggregator: what a flood of uploads, exports or new keys can take.
//!
//! The aggregator faces the governments whose shutdowns it records (SECURITY.md). Every
//! resource an anonymous client can make it spend has a cap here, checked before the work:
//! - [`ByteBudget`]: decompressed upload bytes in flight across all uploads. An upload reserves
//!   its working set before its body is read; when the budget is spent the server answers 503
//!   with `Retry-After` instead of queueing the bytes in memory.
//! - [`Slots`]: concurrent exports (each streams, but holds a reader and a thread).
//! - [`KeyLimits`]: lines one key may have accepted per hour, and keys registered on first use
//!   per hour, so that neither a runaway probe nor a crowd of fresh keys can flood the store.
//! - [`Turns`]: uploads doing processor work (signatures, verdicts) at once, as many as there
//!   are cores, so that searches and the store keep a share of the machine under any upload.
//!
//! Counters live in memory only: they hold keys (pseudonymous, SECURITY.md "What we protect"),
//! never an address, and a restart forgets them.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a client told "busy" should wait before it tries again (`Retry-After`, RFC 9110
/// section 10.2.3).
pub const RETRY_AFTER_SECS: u64 = 5;

/// A budget of bytes, shared by every upload in flight.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// Bytes reserved from a [`ByteBudget`], returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
}

impl Reservation {
    /// How many bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ByteBudget {
    /// A budget of `total` bytes (at most `u32::MAX`, the semaphore's unit).
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, u32::MAX as usize);
        ByteBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Reserves `bytes` (at most the whole budget) at once, or `None` when that much is not
    /// free now. Never waits: a client that finds the server busy is told to come back.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let bytes = bytes.clamp(1, self.total);
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.permits
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|permit| Reservation {
                _permit: permit,
                bytes,
            })
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// The whole budget.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// A fixed number of slots for one kind of long request (exports).
#[derive(Debug, Clone)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Self {
        Slots(Arc::new(Semaphore::new(n.max(1))))
    }

    /// A slot, or `None` when all are taken.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// Turns at the processors for the uploads in flight: at most as many verify and score a line
/// at once as the machine has cores. Fifty uploads at once otherwise make fifty runnable
/// threads, and a researcher's search, which needs a few milliseconds of processor, waits
/// behind all of them (BENCHMARKS.md, "SQLite and ClickHouse side by side"). An upload waits
/// for a turn a line at a time, and holds none while it reads its body or the store writes.
#[derive(Debug)]
pub struct Turns {
    free: Mutex<usize>,
    returned: Condvar,
}

/// A turn, given back when dropped.
#[derive(Debug)]
pub struct Turn<'a>(&'a Turns);

impl Turns {
    /// `n` turns (at least one).
    pub fn new(n: usize) -> Self {
        Turns {
            free: Mutex::new(n.max(1)),
            returned: Condvar::new(),
        }
    }

    /// One turn per core.
    pub fn per_core() -> Self {
        Turns::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Waits for a turn.
    pub fn take(&self) -> Turn<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.returned.notify_one();
    }
}

/// How far below the server's other work an upload's processor work runs, in nice(2) steps.
/// Under load the machine's processors are all busy; a search then needs a few milliseconds of
/// processor at once, in this process and in the store, while fifty uploads verify and score
/// for as long as they are given. At niceness 10 an upload thread weighs about a tenth of a
/// thread at 0 in Linux's scheduler (CFS weights, `sched(7)`), so searches, the store and the
/// detectors go first, and uploads still take every processor cycle nothing else wants.
pub const UPLOAD_NICENESS: i32 = 10;

/// Runs `work` (one upload: reading, verifying, scoring and storing its lines) on a thread of
/// its own whose niceness is `niceness` (0: as the server's; `serve --upload-niceness`,
/// [`UPLOAD_NICENESS`] by default), and hands back its result. A thread of its
/// own, because lowering a thread's priority cannot be undone without privileges: a thread of
/// a shared pool, once lowered, would later serve searches at that priority. Uploads in flight
/// are bounded by the upload budget and the connection limit, which bound these threads. Elsewhere than Linux, where
/// setpriority(2) would lower the whole process, the thread runs at normal priority.
pub fn spawn_upload<T, F>(
    niceness: i32,
    work: F,
) -> std::io::Result<tokio::sync::oneshot::Receiver<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("upload".into())
        .spawn(move || {
            lower_priority(niceness);
            // The receiver is gone only when the request was dropped; nothing to tell.
            let _ = tx.send(work());
        })?;
    Ok(rx)
}

/// Lowers the calling thread's priority by `niceness`; a failure (a sandbox that forbids it)
/// leaves it as it was.
fn lower_priority(niceness: i32) {
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
    #[cfg(target_os = "linux")]
    {
        // On Linux, PRIO_PROCESS with no pid names the calling thread (setpriority(2), "BUGS").
        if niceness == 0 {
            return;
        }
        // setpriority(2) sets a value, not a step: the step is taken from where the thread is,
        // so that a server already running niced is never raised.
        let from = rustix::process::getpriority_process(None).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(None, (from + niceness).min(19)) {
            tracing::debug!("upload thread keeps its priority: {e}");
        }
    }
}

/// Per-key and new-key limits, over fixed one-hour windows.
#[derive(Debug)]
pub struct KeyLimits {
    lines_per_key_hour: u64,
    new_keys_per_hour: u64,
    window: Duration,
    state: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    lines: HashMap<String, u64>,
    new_keys: u64,
}

/// Why a line was refused by [`KeyLimits`]; the text is the reason a probe sees, and a probe
/// keeps such lines queued to send later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// The key used its hourly allowance.
    #[error("rate limited: this key sent more than {0} lines this hour, retry later")]
    Lines(u64),
    /// Too many keys were registered this hour.
    #[error("rate limited: more than {0} new keys this hour, retry later")]
    NewKeys(u64),
}

impl KeyLimits {
    /// `lines_per_key_hour` lines per key and `new_keys_per_hour` first-use registrations per
    /// hour (0 means no limit, for tests and imports).
    pub fn new(lines_per_key_hour: u64, new_keys_per_hour: u64) -> Self {
        Self::with_window(
            lines_per_key_hour,
            new_keys_per_hour,
            Duration::from_secs(3600),
        )
    }

    /// The same with another window length (tests).
    pub fn with_window(lines_per_key_hour: u64, new_keys_per_hour: u64, window: Duration) -> Self {
        KeyLimits {
            lines_per_key_hour,
            new_keys_per_hour,
            window,
            state: Mutex::new(Windows {
                started: Instant::now(),
                lines: HashMap::new(),
                new_keys: 0,
            }),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::new(0, 0)
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.elapsed() >= self.window {
            // A new window: the map of the last one goes, so it never outgrows the keys of
            // one hour (themselves bounded by `new_keys_per_hour` and the key table).
            w.started = Instant::now();
            w.lines = HashMap::new();
            w.new_keys = 0;
        }
        w
    }

    /// Counts one line of `key` against its allowance; `Err` when the allowance is spent.
    pub fn take_line(&self, key: &str) -> Result<(), Limited> {
        if self.lines_per_key_hour == 0 {
            return Ok(());
        }
        let mut w = self.windows();
        let n = match w.lines.get_mut(key) {
            Some(n) => n,
            None => w.lines.entry(key.to_string()).or_insert(0),
        };
        if *n >= self.lines_per_key_hour {
            return Err(Limited::Lines(self.lines_per_key_hour));
        }
        *n += 1;
        Ok(())
    }

    /// Counts one first-use registration; `Err` when this hour's are spent.
    pub fn take_new_key(&self) -> Result<(), Limited> {
        if self.new_keys_per_hour == 0 {
            return Ok(());
        }
        let mut w = self.windows();
        if w.new_keys >= self.new_keys_per_hour {
            return Err(Limited::NewKeys(self.new_keys_per_hour));
        }
        w.new_keys += 1;
        Ok(())
    }
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits::unlimited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_than_the_turns_work_at_once_and_every_waiter_gets_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let turns = Turns::new(2);
        let (now, most, done) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _turn = turns.take();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        now.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 160);
        assert_eq!(most.load(Ordering::SeqCst), 2, "two turns, two at once");
    }

    #[test]
    fn the_budget_refuses_what_it_does_not_have_and_gets_it_back_on_drop() {
        let budget = ByteBudget::new(100);
        let a = budget.try_reserve(60).expect("60 of 100");
        assert!(budget.try_reserve(60).is_none());
        let b = budget.try_reserve(40).expect("the other 40");
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
        drop(b);
        // More than the whole budget asks for the whole budget, not forever.
        assert_eq!(budget.try_reserve(1_000).expect("all").bytes(), 100);
    }

    #[test]
    fn a_key_gets_its_lines_per_window_and_new_keys_are_counted() {
        // A window of a second: every take below must fall in the first one, which a loaded
        // machine could stretch past a window of a fraction of a second.
        let limits = KeyLimits::with_window(3, 2, Duration::from_secs(1));
        for _ in 0..3 {
            limits.take_line("k").expect("within the allowance");
        }
        assert_eq!(limits.take_line("k"), Err(Limited::Lines(3)));
        // Another key has its own allowance.
        limits.take_line("other").expect("own allowance");
        limits.take_new_key().expect("first");
        limits.take_new_key().expect("second");
        assert_eq!(limits.take_new_key(), Err(Limited::NewKeys(2)));
        assert!(
            Limited::Lines(3).to_string().starts_with("rate limited"),
            "a probe keeps rate-limited lines queued by this prefix"
        );
        std::thread::sleep(Duration::from_millis(1100));
        limits.take_line("k").expect("a new window");
        limits.take_new_key().expect("a new window");
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = KeyLimits::unlimited();
        for _ in 0..10_000 {
            limits.take_line("k").expect("no limit");
            limits.take_new_key().expect("no limit");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_upload_runs_lower_than_the_server_and_the_server_stays_where_it_was() {
        let own = || rustix::process::getpriority_process(None).expect("getpriority");
        let server = own();
        let upload = spawn_upload(UPLOAD_NICENESS, own)
            .expect("thread")
            .blocking_recv()
            .expect("result");
        assert_eq!(upload, (server + UPLOAD_NICENESS).min(19));
        let same = spawn_upload(0, own)
            .expect("thread")
            .blocking_recv()
            .expect("result");
        assert_eq!(same, server);
        assert_eq!(own(), server, "the caller's priority is untouched");
        // From a server thread already niced by 3, an upload goes 10 lower still, never up.
        let from_niced = std::thread::spawn(move || {
            rustix::process::setpriority_process(None, server + 3).expect("lower");
            spawn_upload(UPLOAD_NICENESS, own)
                .expect("thread")
                .blocking_recv()
                .expect("result")
        })
        .join()
        .expect("thread");
        assert_eq!(from_niced, (server + 3 + UPLOAD_NICENESS).min(19));
    }
}
