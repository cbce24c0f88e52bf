//! The daemon's control socket: how `anypop apply` reaches a running daemon.
//!
//! A Unix stream socket in the daemon's run directory (the directory 0700, the socket 0600, and
//! the peer's credentials checked: root or the daemon's own user only). One request and one
//! answer per connection, as JSON lines. Requests are handed to the daemon's loop, which serves
//! them one at a time, so two concurrent `apply` runs are serialized and each gets the answer to
//! its own request. If the daemon dies mid-request, the client sees the connection close at once.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

/// Longest request line accepted (a path and a few flags).
const MAX_REQUEST: u64 = 64 * 1024;

/// What a client asks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Apply this network file (an absolute path); it becomes the daemon's watched file.
    Apply {
        config: PathBuf,
        /// Apply what can be applied live even if some changes need a restart.
        allow_restart_needed: bool,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    /// What happened (or why not), for the operator.
    pub message: String,
    /// Changes in the file that only a restart of the daemon makes live.
    #[serde(default)]
    pub restart_needed: Vec<String>,
}

/// A request waiting for the daemon's loop, with the way back to its client.
pub struct Pending {
    pub request: Request,
    reply: mpsc::Sender<Answer>,
}

impl Pending {
    pub fn answer(self, a: Answer) {
        let _ = self.reply.send(a);
    }
}

/// The listening side, owned by the daemon.
pub struct ControlServer {
    requests: mpsc::Receiver<Pending>,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket of a dead daemon: the caller holds the node's
    /// lock) and serves connections on a thread of its own.
    pub fn bind(path: &Path) -> anyhow::Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("creating the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| path.display().to_string())?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let tx = tx.clone();
                    // One thread per connection: a client that never sends cannot block others.
                    let _ = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || serve_one(conn, &tx));
                }
            })
            .context("starting the control thread")?;
        Ok(ControlServer { requests: rx })
    }

    /// The next request, waiting at most `wait` (the daemon's loop calls this instead of
    /// sleeping, so a request is served at once).
    pub fn next(&self, wait: Duration) -> Option<Pending> {
        self.requests.recv_timeout(wait).ok()
    }
}

/// Reads one request, hands it to the loop, writes its answer.
fn serve_one(conn: UnixStream, to_loop: &mpsc::Sender<Pending>) {
    let answer = match read_request(&conn) {
        Ok(request) => {
            let (reply, back) = mpsc::channel();
            if to_loop.send(Pending { request, reply }).is_err() {
                return;
            }
            match back.recv() {
                Ok(a) => a,
                Err(_) => return, // the daemon is stopping: the client sees the close
            }
        }
        Err(e) => Answer {
            ok: false,
            message: format!("{e:#}"),
            restart_needed: Vec::new(),
        },
    };
    let mut conn = conn;
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    if let Ok(line) = serde_json::to_string(&answer) {
        let _ = conn.write_all(format!("{line}\n").as_bytes());
    }
}

fn read_request(conn: &UnixStream) -> anyhow::Result<Request> {
    let cred = peer_uid(conn)?;
    let me = unsafe { libc::geteuid() };
    if cred != 0 && cred != me {
        bail!("refused: only root (or the daemon's own user) may control the daemon");
    }
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(conn.take(MAX_REQUEST))
        .read_line(&mut line)
        .context("reading the request")?;
    serde_json::from_str(line.trim()).context("not a request anypop understands")
}

/// The user id of the process at the other end of `conn` (SO_PEERCRED).
fn peer_uid(conn: &UnixStream) -> anyhow::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        bail!("SO_PEERCRED: {}", std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Sends `request` to the daemon listening on `path` and waits for its answer (at most
/// `timeout`). A daemon that dies meanwhile closes the connection: that is reported at once.
pub fn ask(
    path: &Path,
    node: &str,
    request: &Request,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let mut conn = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no anypop daemon runs node {node} here ({} does not answer); start it with anypop run",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow!(
            "{}: permission denied; run anypop apply as root",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!(
            "connecting to the daemon of node {node} ({})",
            path.display()
        )),
    })?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let line = serde_json::to_string(request)?;
    let gone = || {
        anyhow!(
            "the daemon of node {node} closed the connection without answering (it stopped or died); see its log"
        )
    };
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    };
    conn.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| {
            if closed(&e) {
                gone()
            } else {
                anyhow::Error::new(e)
                    .context(format!("sending the request to the daemon of node {node}"))
            }
        })?;
    let mut answer = String::new();
    match BufReader::new(conn.take(16 << 20)).read_line(&mut answer) {
        Ok(0) => Err(gone()),
        Err(e) if closed(&e) => Err(gone()),
        Ok(_) => serde_json::from_str(answer.trim())
            .map_err(|e| anyhow!("the daemon's answer is garbled ({e}): {answer:.200}")),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!(
                "the daemon of node {node} did not answer within {} s; see its log",
                timeout.as_secs()
            )
        }
        Err(e) => Err(e).context("reading the daemon's answer"),
    }
}
