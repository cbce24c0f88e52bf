//! The network file: one TOML document describing services, rate-limit profiles, rules and nodes.
//! Every node reads the same file and takes its part.
//!
//! - [`raw`]: the file as written (serde, with spans for line numbers);
//! - [`validate`]: raw → [`Network`], collecting *every* problem with its line and a fix;
//! - [`compile`]: [`Network`] → kernel map entries for one node and one generation slot.
pub mod compile;
pub mod raw;
#[cfg(test)]
mod tests;
pub mod validate;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use ipnet::{Ipv4Net, Ipv6Net};

/// A validated network file.
#[derive(Clone, Debug)]
pub struct Network {
    pub defaults: Defaults,
    pub services: Vec<Service>,
    pub profiles: Vec<Profile>,
    pub rules: Vec<Rule>,
    pub nodes: Vec<Node>,
    /// FNV-1a hash of the file's bytes: identifies a config version in logs and status.
    pub source_text_hash: u64,
    /// Where it came from (file name), for messages.
    pub origin: String,
}

/// Fragment policy for non-first IPv4 fragments and IPv6 fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentPolicy {
    Drop,
    Pass,
}

/// How XDP is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpModeSetting {
    /// Native only; fail if the driver cannot.
    Native,
    /// Native, falling back to generic with a warning.
    Auto,
}

#[derive(Clone, Debug)]
pub struct Defaults {
    pub fragments: FragmentPolicy,
    pub new_source_cap: u32,
    pub xdp_mode: XdpModeSetting,
    pub flow_table_size: u32,
    pub bucket_table_size: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            fragments: FragmentPolicy::Drop,
            new_source_cap: 20_000,
            xdp_mode: XdpModeSetting::Native,
            flow_table_size: 1_000_000,
            bucket_table_size: 1_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
    Icmp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// A per-source rate limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    pub pps: Option<u64>,
    /// Bits per second.
    pub bps: Option<u64>,
    /// Bucket depth in seconds of traffic at the rate.
    pub burst: f64,
    pub block: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub protocol: Protocol,
    /// Inclusive ranges; empty for ICMP.
    pub ports: Vec<(u16, u16)>,
    /// Backend node names with their weights (0 = draining).
    pub backends: Vec<(String, u32)>,
    pub limit: Option<Limit>,
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub limit: Limit,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Deny,
    /// Forward and skip rate limits (trusted sources).
    Allow,
    /// Apply the named profile.
    Limit(String),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// Services it applies to; empty = every service.
    pub services: Vec<String>,
    /// Source prefixes (from `src` and `src_file`); both empty = any source.
    pub src_v4: Vec<Ipv4Net>,
    pub src_v6: Vec<Ipv6Net>,
    /// Protocols; empty = any.
    pub protocols: Vec<Protocol>,
    pub src_ports: Option<(u16, u16)>,
    pub dst_ports: Option<(u16, u16)>,
    /// (mask, value): `flags & mask == value`.
    pub tcp_flags: Option<(u8, u8)>,
    pub length: Option<(u16, u16)>,
    pub ttl: Option<(u8, u8)>,
    pub icmp_type: Option<(u8, u8)>,
    pub line: usize,
}

impl Rule {
    pub fn has_src(&self) -> bool {
        !self.src_v4.is_empty() || !self.src_v6.is_empty()
    }

    pub fn applies_to(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == service)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Pop,
    Backend,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// POP: its interfaces; backend: its one interface.
    pub interfaces: Vec<String>,
    /// POP: outer source of IPIP.
    pub tunnel_source: Option<Ipv4Addr>,
    /// Backend: outer destination of IPIP.
    pub address: Option<Ipv4Addr>,
    pub xdp_mode: Option<XdpModeSetting>,
    /// Backend: POPs allowed to send IPIP here (empty = all POPs).
    pub pops: Vec<String>,
    /// Backend: a kernel IPIP tunnel decapsulates and replies go into it (tunnel-compatible mode).
    pub tunnel_mode: bool,
    pub line: usize,
}

impl Node {
    /// Whether this node may fall back to generic XDP.
    pub fn xdp_mode_auto(&self, defaults: &Defaults) -> bool {
        self.xdp_mode.unwrap_or(defaults.xdp_mode) == XdpModeSetting::Auto
    }
}

/// One thing wrong with a network file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; 0 when the problem is not tied to a line.
    pub line: usize,
    /// The item, e.g. `service "rust-eu"`.
    pub item: String,
    /// The field, e.g. `ports`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every problem found in a network file (never only the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(
        origin: &str,
        line: usize,
        item: &str,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin: origin.to_owned(),
            problems: vec![Problem {
                line,
                item: item.to_owned(),
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let loc = if p.line > 0 {
                format!("{}:{}", self.origin, p.line)
            } else {
                self.origin.clone()
            };
            let mut parts = vec![loc];
            if !p.item.is_empty() {
                parts.push(p.item.clone());
            }
            if !p.field.is_empty() {
                parts.push(p.field.clone());
            }
            write!(f, "{}: {}", parts.join(": "), p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a network file (and the `src_file`s it names, relative to its directory).
pub fn load(path: &Path) -> Result<Network, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            &origin,
            0,
            "",
            "",
            format!("cannot read the network file: {e}; check the --config path"),
        )
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, &origin, base)
}

/// Validates a network file given as text. `base_dir` resolves relative `src_file` paths.
pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Network, ConfigError> {
    validate::validate(text, origin, base_dir)
}

impl Network {
    /// The node called `name`, or an error listing the nodes that exist.
    pub fn node(&self, name: &str) -> Result<&Node, ConfigError> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            ConfigError::single(
                &self.origin,
                0,
                "",
                "",
                format!(
                    "no node named {name:?}; the file defines: {}. Pass one of them with --node",
                    if names.is_empty() {
                        "(no nodes)".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })
    }

    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    /// Backend nodes, in file order: their position is the backend index in the kernel tables.
    pub fn backend_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Backend)
    }
}
