//! `[carry]`: the daemon writes its results to a drive that appears at a mount point, so that
//! a volunteer can plug in a stick during a shutdown and carry the evidence out (docs/carry.md,
//! "The daemon's `[carry]`").
//!
//! Every few seconds the task looks at the configured path. When a drive is mounted there (the
//! path is on another device than its parent, or `/proc/self/mountinfo` lists it: proc(5)), it
//! writes an incremental export with the same code as `vantage export`
//! ([`crate::carry::export`]: written through a partial file, synced, read back and checked,
//! and only then marked exported), and logs "carried N results to PATH/FILE". It writes to the
//! same drive again only when new results exist, and not more often than once an hour while
//! the drive stays in; after a failure (a full drive: ENOSPC), not before the drive is taken out
//! and put back, since a full drive stays full. A failure removes the partial file and marks
//! nothing exported, so the next drive gets everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::config::ConfigError;
use super::{Control, DaemonError, Shared, Wake};
use crate::carry::{ExportError, Selection};

/// `[carry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CarrySection {
    /// The mount point a drive appears at, e.g. `/media/vantage`; off while unset.
    pub path: Option<PathBuf>,
    /// How often the path is looked at, in seconds.
    pub check_seconds: u64,
}

impl Default for CarrySection {
    fn default() -> Self {
        CarrySection {
            path: None,
            check_seconds: 5,
        }
    }
}

/// `[carry]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarryPlan {
    /// The mount point, without a trailing slash.
    pub path: PathBuf,
    /// How often it is looked at.
    pub every: Duration,
}

/// While the same drive stays in, it is written again (when new results exist) at most this
/// often.
const REWRITE: Duration = Duration::from_secs(3600);

impl CarrySection {
    /// Checks the section: an absolute path that is not the data directory, and an interval.
    /// The path need not exist yet: the drive is plugged in later.
    pub(super) fn plan(
        &self,
        data_dir: &Path,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<Option<CarryPlan>, ConfigError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        if !path.is_absolute() {
            return Err(invalid(
                "carry.path",
                format!("{:?} must be an absolute path", path.display().to_string()),
            ));
        }
        let path: PathBuf = path.components().collect();
        if path == data_dir || path.parent().is_none() {
            return Err(invalid(
                "carry.path",
                format!(
                    "{} must be a mount point of its own for a removable drive",
                    path.display()
                ),
            ));
        }
        if !(1..=3600).contains(&self.check_seconds) {
            return Err(invalid(
                "carry.check_seconds",
                format!("{} is outside 1..=3600", self.check_seconds),
            ));
        }
        Ok(Some(CarryPlan {
            path,
            every: Duration::from_secs(self.check_seconds),
        }))
    }
}

/// The device of the drive mounted at `path`, if one is: `path` is a directory on another
/// device than its parent (a drive's root), or a mount point `/proc/self/mountinfo` lists (a
/// bind mount on the same device).
pub fn mounted(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    let parent = std::fs::metadata(path.parent()?).ok()?;
    (meta.dev() != parent.dev() || in_mountinfo(path)).then(|| meta.dev())
}

/// Whether `/proc/self/mountinfo` (proc(5): the fifth field is the mount point, with space,
/// tab, newline and backslash written as octal escapes) lists `path`.
fn in_mountinfo(path: &Path) -> bool {
    use std::io::Read as _;
    let mut text = String::new();
    let Ok(file) = std::fs::File::open("/proc/self/mountinfo") else {
        return false;
    };
    // A few hundred mounts at most on a probe; a bound keeps a strange system harmless.
    if file.take(4 << 20).read_to_string(&mut text).is_err() {
        return false;
    }
    let want = path.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape(m) == want)
}

fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The name of an export on a drive: the probe's key (a prefix, safe in a file name), so that
/// probes sharing a stick do not overwrite each other, and the time it was written.
fn file_name(key: &str, now: std::time::SystemTime) -> String {
    let key: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let stamp: String = crate::ooni::ooni_timestamp(now)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let (date, time) = stamp.split_at(stamp.len().min(8));
    format!("vantage-{key}-{date}T{time}Z.jsonl.gz")
}

/// The drive last written to (or failed on) while it stays mounted.
struct Written {
    device: u64,
    at: Instant,
    failed: bool,
}

/// Looks at the mount point every few seconds and exports to a drive that appears there.
pub(super) async fn carry(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut last: Option<Written> = None;
    loop {
        let plan = ctl.plan();
        let at = plan.carry.as_ref().map(|c| Instant::now() + c.every);
        match ctl.until(at).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(c) = plan.carry.clone() else {
            continue;
        };
        let Some(device) = mounted(&c.path) else {
            if last.take().is_some() {
                tracing::info!("carry: the drive at {} was taken out", c.path.display());
            }
            continue;
        };
        if let Some(w) = &last
            && w.device == device
            && (w.failed || w.at.elapsed() < REWRITE)
        {
            continue;
        }
        let file = c.path.join(file_name(
            &shared.identity.public_key(),
            std::time::SystemTime::now(),
        ));
        let job = {
            let (shared, file) = (shared.clone(), file.clone());
            tokio::task::spawn_blocking(move || export_to(&shared, &file))
        };
        let Some(done) = ctl.unless_stopped(job).await else {
            return Ok(());
        };
        let failed = match done {
            Ok(Ok(Some(count))) => {
                tracing::info!("carried {count} results to {}", file.display());
                false
            }
            Ok(Ok(None)) => {
                tracing::debug!("carry: nothing new for the drive at {}", c.path.display());
                false
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "carry to {} failed: {e}; nothing is marked exported, the next drive gets \
                     everything",
                    c.path.display()
                );
                true
            }
            Err(e) => {
                tracing::error!("carry to {} did not finish: {e}", c.path.display());
                true
            }
        };
        last = Some(Written {
            device,
            at: Instant::now(),
            failed,
        });
    }
}

/// One incremental export to `file`, on its own store connection (it runs on a blocking
/// thread: a slow stick must not hold up the other tasks). `None` when there was nothing new.
fn export_to(shared: &Shared, file: &Path) -> Result<Option<u64>, ExportError> {
    let mut store = crate::store::Store::open(&shared.store_path)?;
    let selection = Selection {
        skip_empty: true,
        ..Selection::default()
    };
    let created = i64::try_from(super::unix_now()).unwrap_or(i64::MAX);
    Ok(
        crate::carry::export(&mut store, &shared.identity, file, &selection, created)?
            .map(|m| m.count),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_on_the_parents_device_is_no_drive() {
        let dir = std::env::temp_dir().join(format!("vantage-carry-mount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(mounted(&dir), None);
        assert_eq!(mounted(&dir.join("absent")), None);
        // /proc is a mount point of its own on every Linux system.
        assert!(mounted(Path::new("/proc")).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape("/media/my\\040stick"), "/media/my stick");
        assert_eq!(unescape("/a\\134b"), "/a\\b");
    }

    #[test]
    fn file_names_carry_the_key_and_time() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(
            file_name("ab+/cd=EFghijklmnop", t),
            "vantage-abcdEFghijkl-20261130T005320Z.jsonl.gz"
        );
    }
}
