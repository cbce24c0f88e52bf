//! The network file: one TOML document describing services, rate-limit profiles, rules and nodes.
//! Every node reads the same file and takes its part.
//!
//! - [`raw`]: the file as written (serde, with spans for line numbers);
//! - [`validate`]: raw → [`Network`], collecting *every* problem with its line and a fix, by
//!   section: `nodes`, `services` (and profiles), `rules`; values are parsed by [`values`];
//! - [`names`]: what a name may be (also for `--node` on the command line), and short excerpts
//!   of bad input for messages;
//! - [`read`]: bounded reads of regular files only (the network file, `src_file`s, and for other
//!   modules, e.g. a capture).
//!
//! Turning a [`Network`] into kernel tables is the next layer's job: [`crate::compile`].
pub mod names;
mod nodes;
pub mod raw;
pub mod read;
mod rules;
pub mod sample;
mod services;
#[cfg(test)]
pub(crate) mod tests;
pub mod validate;
pub mod values;

pub use read::{ReadError, read_bounded};

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
    /// What looks wrong but may be meant (a prefix with host bits, every backend of a service
    /// drained): the file is valid, and these should be shown. See [`Network::warning_lines`].
    pub warnings: Vec<Problem>,
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

/// Problems shown by [`ConfigError`]'s `Display`: a hostile file can have millions, and the
/// first ones are the ones to fix.
pub const MAX_SHOWN_PROBLEMS: usize = 200;

/// `FILE:LINE: item: field: message`, as every problem and warning is shown.
fn format_problem(origin: &str, p: &Problem) -> String {
    let loc = if p.line > 0 {
        format!("{origin}:{}", p.line)
    } else {
        origin.to_owned()
    };
    let mut parts = vec![loc];
    if !p.item.is_empty() {
        parts.push(p.item.clone());
    }
    if !p.field.is_empty() {
        parts.push(p.field.clone());
    }
    format!("{}: {}", parts.join(": "), p.message)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().take(MAX_SHOWN_PROBLEMS).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", format_problem(&self.origin, p))?;
        }
        if let Some(more) = self.problems.len().checked_sub(MAX_SHOWN_PROBLEMS)
            && more > 0
        {
            write!(
                f,
                "\n{}: … and {more} more problems not shown; fix the ones above first",
                self.origin
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a network file (and the `src_file`s it names, relative to its directory).
/// The file must be a regular file of at most [`read::NETWORK_FILE_LIMIT`] bytes.
pub fn load(path: &Path) -> Result<Network, ConfigError> {
    let origin = names::escape_controls(&path.display().to_string());
    let text = read::read_bounded_text(path, read::NETWORK_FILE_LIMIT, "the network file")
        .map_err(|e| {
            ConfigError::single(
                &origin,
                0,
                "",
                "",
                format!("cannot read the network file: {}", e.kind),
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
            const LISTED: usize = 20;
            let mut names: Vec<&str> = self
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .take(LISTED)
                .collect();
            let more = format!("and {} more", self.nodes.len().saturating_sub(LISTED));
            if self.nodes.len() > LISTED {
                names.push(&more);
            }
            ConfigError::single(
                &self.origin,
                0,
                "",
                "",
                format!(
                    "no node named {}; the file defines: {}. Pass one of them with --node",
                    names::excerpt(name),
                    if names.is_empty() {
                        "(no nodes)".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })
    }

    /// The warnings, one line each, formatted as problems are (`FILE:LINE: item: field: …`);
    /// print them (e.g. with a "warning: " prefix) where the file is checked or applied.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|w| format_problem(&self.origin, w))
            .collect()
    }

    /// The network if it has no warnings, else the warnings as errors: for a strict check
    /// (`check --strict`), where a prefix with host bits or a drained service must be fixed.
    pub fn strict(self) -> Result<Network, ConfigError> {
        if self.warnings.is_empty() {
            return Ok(self);
        }
        Err(ConfigError {
            origin: self.origin,
            problems: self.warnings,
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
