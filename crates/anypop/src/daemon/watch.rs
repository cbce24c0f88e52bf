//! The network file's watch: a changed file is applied without a signal — but only once it has
//! stopped changing. An editor or a script that writes the file in place leaves it half-written
//! for a moment, and a half-written file can still parse (a truncated blocklist, a missing rule):
//! so a change is taken only when size and modification time have held still for [`SETTLE`].
//! The safe way to publish is still atomic: write a temporary file beside it, then rename it
//! over the watched one (docs/OPERATIONS.md).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

/// How often the file is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a changed file must stay unchanged before it is applied.
pub const SETTLE: Duration = Duration::from_secs(1);

type Stamp = (SystemTime, u64);

/// Notices when the network file changes on disk (modification time or size).
pub struct FileWatch {
    path: PathBuf,
    seen: Option<Stamp>,
    /// A change not yet settled: its stamp and since when it has held.
    settling: Option<(Stamp, Instant)>,
    last_check: Instant,
}

impl FileWatch {
    pub fn new(path: &Path) -> FileWatch {
        let mut w = FileWatch {
            path: path.to_owned(),
            seen: None,
            settling: None,
            last_check: Instant::now(),
        };
        w.seen = w.stamp();
        w
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Watches `path` from now on (after `anypop apply` made another file the daemon's own).
    pub fn switch_to(&mut self, path: &Path) {
        self.path = path.to_owned();
        self.mark_seen();
    }

    fn stamp(&self) -> Option<Stamp> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// Takes the file as it is now as seen (after a reload for another reason).
    pub fn mark_seen(&mut self) {
        self.seen = self.stamp();
        self.settling = None;
    }

    /// True once per settled change (a file that vanished counts when it comes back).
    pub fn changed(&mut self) -> bool {
        if self.last_check.elapsed() < CHECK_EVERY {
            return false;
        }
        self.last_check = Instant::now();
        let Some(now) = self.stamp() else {
            self.settling = None;
            return false;
        };
        if Some(now) == self.seen {
            self.settling = None;
            return false;
        }
        match self.settling {
            Some((stamp, since)) if stamp == now => {
                if since.elapsed() >= SETTLE {
                    self.seen = Some(now);
                    self.settling = None;
                    return true;
                }
            }
            _ => self.settling = Some((now, Instant::now())),
        }
        false
    }
}
