//! Reading a file an operator or a network file names, without trusting it to be a file.
//!
//! `--config /dev/zero` once read 2.1 GB before a ulimit stopped it, and a FIFO made `check`
//! wait forever. So files are opened without blocking, checked to be regular files *on the
//! opened descriptor* (the path may change between a check and the open), and read up to a
//! limit, with an error saying which.
use std::{
    fmt,
    fs::{File, Metadata, OpenOptions},
    io::{self, Read},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use super::names::path_excerpt;

/// Largest network file read: far above any real network (the scale test's 1,000 rules and
/// 64 services are under 200 kB; big blocklists belong in `src_file`s).
pub const NETWORK_FILE_LIMIT: u64 = 64 << 20;

/// Largest `src_file` read: a full IPv4 + IPv6 routing table (about 1.2 million prefixes) is
/// under 30 MB; the bench's 100,000-prefix blocklist is 1.6 MB.
pub const PREFIX_FILE_LIMIT: u64 = 256 << 20;

/// A file that could not be read, with what it was for.
#[derive(Debug)]
pub struct ReadError {
    /// What the file is, e.g. "the network file", "src_file", "the capture".
    pub what: String,
    pub path: PathBuf,
    pub kind: ReadErrorKind,
}

/// Why a file could not be read; its `Display` says what to do.
#[derive(Debug)]
pub enum ReadErrorKind {
    /// It could not be opened (or examined once open).
    Open(io::Error),
    /// It is a FIFO, a device, a directory or a socket.
    NotRegular(&'static str),
    /// It holds more than the limit allows.
    TooLarge { limit: u64 },
    /// Reading failed half-way.
    Read(io::Error),
    /// It is not UTF-8 text ([`read_bounded_text`] only); 1-based line of the first bad byte.
    NotText { line: usize },
}

impl fmt::Display for ReadErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadErrorKind::Open(e) if e.kind() == io::ErrorKind::NotFound => {
                write!(f, "{e}; check the path")
            }
            ReadErrorKind::Open(e) => write!(f, "{e}; check the path and its permissions"),
            ReadErrorKind::NotRegular(kind) => write!(
                f,
                "it is {kind}, not a regular file; name a regular file (pipes and devices could block or never end)"
            ),
            ReadErrorKind::TooLarge { limit } => write!(
                f,
                "it is larger than {} MiB, the most anypop reads here; is it the right file?",
                limit >> 20
            ),
            ReadErrorKind::Read(e) => write!(f, "{e}"),
            ReadErrorKind::NotText { line } => {
                write!(f, "line {line} is not UTF-8 text; is it the right file?")
            }
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read {} {}: {}",
            self.what,
            path_excerpt(&self.path),
            self.kind
        )
    }
}

impl std::error::Error for ReadError {}

/// Opens `path` for reading if it is a regular file, returning it with its metadata.
///
/// - The path is examined first (following links), so a device is refused before it is opened:
///   opening some devices does something (a watchdog starts, a tape rewinds).
/// - It is opened with `O_NONBLOCK`, so a FIFO swapped in after that check does not block the
///   open, and with `O_NOCTTY`, so a terminal does not become ours.
/// - The opened descriptor is examined again (`fstat`), and that is the check that counts: it is
///   the file that will be read, whatever the path points to by now.
pub fn open_regular(path: &Path, what: &str) -> Result<(File, Metadata), ReadError> {
    let err = |kind| ReadError {
        what: what.to_owned(),
        path: path.to_owned(),
        kind,
    };
    let before = std::fs::metadata(path).map_err(|e| err(ReadErrorKind::Open(e)))?;
    if !before.is_file() {
        return Err(err(ReadErrorKind::NotRegular(file_kind(&before))));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| err(ReadErrorKind::Open(e)))?;
    let meta = file.metadata().map_err(|e| err(ReadErrorKind::Open(e)))?;
    if !meta.is_file() {
        return Err(err(ReadErrorKind::NotRegular(file_kind(&meta))));
    }
    Ok((file, meta))
}

/// Reads a whole regular file of at most `limit` bytes ([`open_regular`] says what is refused).
/// The size on record is checked first, then at most `limit + 1` bytes are read, so a file that
/// grows (or lies about its size, as /proc files do) is still bounded.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path, what)?;
    let err = |kind| ReadError {
        what: what.to_owned(),
        path: path.to_owned(),
        kind,
    };
    if meta.len() > limit {
        return Err(err(ReadErrorKind::TooLarge { limit }));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| err(ReadErrorKind::Read(e)))?;
    if bytes.len() as u64 > limit {
        return Err(err(ReadErrorKind::TooLarge { limit }));
    }
    Ok(bytes)
}

/// [`read_bounded`] for text: refuses a file that is not UTF-8, naming the line, never quoting it.
pub fn read_bounded_text(path: &Path, limit: u64, what: &str) -> Result<String, ReadError> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        ReadError {
            what: what.to_owned(),
            path: path.to_owned(),
            kind: ReadErrorKind::NotText { line },
        }
    })
}

fn file_kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("anypop-read-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn devices_fifos_and_directories_are_refused() {
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "the network file").unwrap_err();
        assert!(matches!(e.kind, ReadErrorKind::NotRegular(_)), "{e}");
        assert!(e.to_string().contains("character device"), "{e}");
        let d = dir().join("fifo");
        let _ = std::fs::remove_file(&d);
        let c = std::ffi::CString::new(d.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&d, 1 << 20, "src_file").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_bounded(&dir(), 1 << 20, "src_file").unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        std::fs::remove_file(&d).unwrap();
    }

    #[test]
    fn sizes_are_bounded_and_text_is_checked() {
        let f = dir().join("sized");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_bounded(&f, 10, "x").unwrap().len(), 10);
        let e = read_bounded(&f, 9, "x").unwrap_err();
        assert!(
            matches!(e.kind, ReadErrorKind::TooLarge { limit: 9 }),
            "{e}"
        );
        std::fs::write(&f, b"ok\nsecret \xff here\n").unwrap();
        let e = read_bounded_text(&f, 100, "x").unwrap_err().to_string();
        assert!(
            e.contains("line 2 is not UTF-8") && !e.contains("secret"),
            "{e}"
        );
        let e = read_bounded(Path::new("/nonexistent/x"), 9, "the network file").unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read the network file"),
            "{e}"
        );
        std::fs::remove_file(&f).unwrap();
    }
}
