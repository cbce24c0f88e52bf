//! The running kernel: its release (`uname`) and whether a path is a mounted bpffs (`statfs`).
use std::path::Path;

/// The kernel's release (`6.1.0-18-amd64`), empty if `uname` fails.
pub fn release() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `path` is a mounted bpffs (the filesystem's magic number, not a mount-table lookup,
/// so a bind mount or an unusual mount table cannot fool it).
pub fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_filesystems() {
        let r = release();
        assert!(r.starts_with(|c: char| c.is_ascii_digit()), "{r:?}");
        assert!(!is_bpffs(Path::new("/proc")));
        assert!(!is_bpffs(Path::new("/nonexistent/anypop")));
    }
}
