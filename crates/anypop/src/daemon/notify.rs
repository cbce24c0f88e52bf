//! Readiness for service managers: systemd's `Type=notify` waits for `READY=1` on the socket
//! named by `$NOTIFY_SOCKET`, sent once the data plane is attached and the control socket
//! listens — so `systemctl start` returns when the node really serves. Without the variable
//! (run by hand, in tests) this does nothing.
use std::os::unix::net::UnixDatagram;

/// Tells the service manager the daemon is ready, with a one-line status.
pub fn ready(status: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("READY=1\nSTATUS={status}\nMAINPID={}\n", std::process::id());
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), std::path::Path::new(&target))
    };
    if let Err(e) = sent {
        tracing::warn!("telling the service manager we are ready (NOTIFY_SOCKET): {e}");
    }
}
