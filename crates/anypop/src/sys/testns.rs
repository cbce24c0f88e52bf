//! For tests of the probes: a private network namespace with interfaces the test creates, so the
//! machine's own interfaces are never asked about (nor changed). Setting up uses `ip`/`tc`/
//! `ethtool` commands, judged by their exit status.
use std::process::Command;

/// Runs `f` on a thread moved into a new, empty network namespace (with `lo` up); the namespace
/// and every interface in it go away with the thread. A panic inside is raised again here.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create network namespaces: run them as root"
    );
    match std::thread::spawn(move || {
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        sh(&["ip", "link", "set", "lo", "up"]);
        f()
    })
    .join()
    {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Runs a command and returns its standard output; panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The index of an interface of this namespace.
pub fn index_of(ifname: &str) -> u32 {
    let c = std::ffi::CString::new(ifname).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {ifname}");
    i
}
