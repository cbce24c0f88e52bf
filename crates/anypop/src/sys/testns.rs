//! Network namespaces and the interfaces in them, for tests, `anypop bench` and the lab: one
//! builder of set-up steps ([`NetSetup`]: veth pairs, addresses, neighbours, routes, forwarding),
//! private namespaces that die with their thread, and entering a named one. Set-up steps are
//! `ip`/`sysctl`/`ethtool` commands judged by their exit status — never parsed — so the machine's
//! own interfaces are never asked about, nor changed: every step runs in the namespace of the
//! thread that applies it.
use std::{fs::File, os::fd::AsRawFd, process::Command};

/// A set-up command that could not be run or did not succeed, with what it printed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {output}")]
pub struct CommandFailed {
    pub command: String,
    pub output: String,
}

/// Runs a command and returns its standard output; fails with its output if it fails.
pub fn run_cmd(args: &[&str]) -> Result<String, CommandFailed> {
    let failed = |output: String| CommandFailed {
        command: args.join(" "),
        output,
    };
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run_cmd`] for tests: panics with the command's output if it fails.
pub fn sh(args: &[&str]) -> String {
    run_cmd(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Moves the calling thread into a new, empty network namespace (nothing is up, not even `lo`).
/// Commands spawned from this thread inherit it; it disappears with the thread, so nothing is
/// left to clean up. Panics when not root or when the kernel refuses.
pub fn enter_private_netns() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create network namespaces: run them as root"
    );
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
}

/// Moves the calling thread into the named namespace `/run/netns/NAME` (`ip netns add`).
pub fn enter_named_netns(name: &str) -> std::io::Result<()> {
    let file = File::open(format!("/run/netns/{name}"))?;
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread moved into a new, empty network namespace (with `lo` up); the namespace
/// and every interface in it go away with the thread. A panic inside is raised again here.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::spawn(move || {
        enter_private_netns();
        sh(&["ip", "link", "set", "lo", "up"]);
        f()
    })
    .join()
    {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The index of an interface of this namespace.
pub fn index_of(ifname: &str) -> u32 {
    let c = std::ffi::CString::new(ifname).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {ifname}");
    i
}

/// Set-up steps for a namespace, written down in order and run by [`NetSetup::apply`] in the
/// namespace of the calling thread (a private one, or a named one a thread has entered).
#[derive(Clone, Debug, Default)]
#[must_use = "nothing is set up until apply()"]
pub struct NetSetup {
    steps: Vec<Vec<String>>,
}

impl NetSetup {
    /// No steps yet.
    pub fn new() -> NetSetup {
        NetSetup::default()
    }

    /// Moves the calling thread into a new, empty namespace ([`enter_private_netns`]) and starts
    /// the steps for it.
    pub fn enter_private() -> NetSetup {
        enter_private_netns();
        NetSetup::new()
    }

    /// Any command, as a step.
    pub fn cmd(mut self, args: &[&str]) -> NetSetup {
        self.steps
            .push(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// Brings `lo` up.
    pub fn lo_up(self) -> NetSetup {
        self.up("lo")
    }

    /// Brings interface `dev` up.
    pub fn up(self, dev: &str) -> NetSetup {
        self.cmd(&["ip", "link", "set", dev, "up"])
    }

    /// Adds the veth pair `name`/`peer` and brings both ends up.
    pub fn veth(self, name: &str, peer: &str) -> NetSetup {
        self.veth_down(name, peer).up(name).up(peer)
    }

    /// Adds the veth pair `name`/`peer`, `name` with the MAC address `mac`, both ends up.
    pub fn veth_mac(self, name: &str, mac: &str, peer: &str) -> NetSetup {
        self.cmd(&[
            "ip", "link", "add", name, "address", mac, "type", "veth", "peer", "name", peer,
        ])
        .up(name)
        .up(peer)
    }

    /// Adds the veth pair `name`/`peer` and leaves both ends down.
    pub fn veth_down(self, name: &str, peer: &str) -> NetSetup {
        self.cmd(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ])
    }

    /// Adds the address `cidr` (e.g. `198.51.100.1/24`) to `dev`.
    pub fn addr(self, cidr: &str, dev: &str) -> NetSetup {
        self.cmd(&["ip", "addr", "add", cidr, "dev", dev])
    }

    /// A permanent neighbour entry: `ip` has MAC `mac` on `dev`.
    pub fn neigh(self, ip: &str, mac: &str, dev: &str) -> NetSetup {
        self.cmd(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
    }

    /// A route to `dst` through the gateway `via`.
    pub fn route(self, dst: &str, via: &str) -> NetSetup {
        self.cmd(&["ip", "route", "add", dst, "via", via])
    }

    /// Turns IPv4 forwarding on for each of `confs`, in order: `net.ipv4.conf.<conf>.forwarding`
    /// (`"all"` or an interface; `bpf_fib_lookup` answers only for interfaces with forwarding
    /// on).
    pub fn forwarding(mut self, confs: &[&str]) -> NetSetup {
        for c in confs {
            self = self.cmd(&[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv4.conf.{c}.forwarding=1"),
            ]);
        }
        self
    }

    /// Turns GRO on for `dev` (a veth takes XDP frames only with NAPI running, which GRO or an
    /// XDP program on it starts).
    pub fn gro(self, dev: &str) -> NetSetup {
        self.cmd(&["ethtool", "-K", dev, "gro", "on"])
    }

    /// Runs the steps in order in the calling thread's namespace, stopping at the first that
    /// fails.
    pub fn apply(&self) -> Result<(), CommandFailed> {
        for step in &self.steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            run_cmd(&args)?;
        }
        Ok(())
    }
}

/// A MAC address as `ip` writes it (`02:00:00:00:0a:00`).
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_the_threads_own_namespace() {
        let (index, forwarding) = in_private_netns(|| {
            NetSetup::new()
                .veth_mac("x0", "02:00:00:00:0a:00", "x1")
                .addr("198.51.100.1/24", "x0")
                .neigh("198.51.100.21", &mac_text([2, 0, 0, 0, 0, 0x21]), "x0")
                .forwarding(&["x0"])
                .apply()
                .unwrap();
            let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/x0/forwarding").unwrap();
            (index_of("x0"), fwd)
        });
        assert!(index > 1, "x0 exists in the namespace");
        assert_eq!(forwarding.trim(), "1");
    }

    #[test]
    fn a_failing_step_stops_the_set_up_with_its_command() {
        let e = in_private_netns(|| {
            NetSetup::new()
                .addr("198.51.100.1/24", "missing0")
                .up("lo")
                .apply()
                .unwrap_err()
        });
        assert!(e.command.contains("missing0"), "{e}");
    }
}
