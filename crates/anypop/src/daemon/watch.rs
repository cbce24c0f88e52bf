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
    settle: Duration,
    last_check: Instant,
}

impl FileWatch {
    pub fn new(path: &Path) -> FileWatch {
        FileWatch::with_settle(path, SETTLE)
    }

    /// A watch whose changes must hold still for `settle` (tests use their own margins).
    pub fn with_settle(path: &Path, settle: Duration) -> FileWatch {
        let mut w = FileWatch {
            path: path.to_owned(),
            seen: None,
            settling: None,
            settle,
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
                if since.elapsed() >= self.settle {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `w` until it reports a change or `within` passes; true if it did.
    fn changes_within(w: &mut FileWatch, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if w.changed() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_file_being_written_is_taken_only_once_it_holds_still() {
        let dir = std::env::temp_dir().join(format!("anypop-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("net.toml");
        std::fs::write(&path, "a").unwrap();
        let settle = Duration::from_secs(1);
        let mut w = FileWatch::with_settle(&path, settle);
        // A slow writer: the file grows every 50 ms for 0.6 s. Each write restarts the
        // settling, so nothing is reported while it goes on (a stall of a whole second between
        // two writes would be needed to report a half-written file).
        let mut text = String::from("a");
        let writing = Instant::now();
        while writing.elapsed() < Duration::from_millis(600) {
            text.push('b');
            std::fs::write(&path, &text).unwrap();
            assert!(!w.changed(), "reported while still being written");
            std::thread::sleep(Duration::from_millis(50));
        }
        let done = Instant::now();
        assert!(changes_within(&mut w, Duration::from_secs(10)));
        assert!(done.elapsed() >= settle, "reported before it settled");
        // Once per change.
        assert!(!changes_within(&mut w, Duration::from_millis(1500)));
        // Another file, after an apply named it.
        let other = dir.join("other.toml");
        std::fs::write(&other, "x").unwrap();
        w.switch_to(&other);
        std::fs::write(&path, "changed, but no longer ours").unwrap();
        std::fs::write(&other, "xy").unwrap();
        assert!(changes_within(&mut w, Duration::from_secs(10)));
        assert_eq!(w.path(), other);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
