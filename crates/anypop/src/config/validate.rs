//! Raw network file → validated [`Network`]. Every problem is collected with its line, the item
//! and field it concerns, what is wrong and what to do; nothing stops at the first mistake.
//!
//! The sections are checked in the order they depend on each other: defaults, nodes
//! ([`super::nodes`]), profiles and services ([`super::services`]), then rules
//! ([`super::rules`]), which refer to all of them. What is odd but may be meant (a prefix with
//! host bits, a service with every backend drained) is a warning on [`Network::warnings`].
use std::path::Path;

use toml::Spanned;

use super::{
    ConfigError, Defaults, FragmentPolicy, Network, Problem, XdpModeSetting,
    names::{excerpt, shorten_message},
    nodes,
    raw::*,
    rules, services,
};

/// Collects problems and warnings while walking the file.
pub(super) struct Checker<'a> {
    text: &'a str,
    /// Byte offsets of the file's newlines: a span's line is a binary search, so a file with
    /// many problems is not rescanned once per problem.
    newlines: Vec<usize>,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(text: &'a str) -> Checker<'a> {
        Checker {
            text,
            newlines: text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset) + 1
    }

    pub(super) fn at<T>(
        &mut self,
        span: &Spanned<T>,
        item: &str,
        field: &str,
        message: impl Into<String>,
    ) {
        let line = self.line(span.span().start);
        self.push(line, item, field, message);
    }

    pub(super) fn push(
        &mut self,
        line: usize,
        item: &str,
        field: &str,
        message: impl Into<String>,
    ) {
        self.problems.push(problem(line, item, field, message));
    }

    pub(super) fn warn(
        &mut self,
        line: usize,
        item: &str,
        field: &str,
        message: impl Into<String>,
    ) {
        self.warnings.push(problem(line, item, field, message));
    }
}

fn problem(line: usize, item: &str, field: &str, message: impl Into<String>) -> Problem {
    Problem {
        line,
        item: item.to_owned(),
        field: field.to_owned(),
        message: message.into(),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A TOML or shape error (one per file: the parser stops there). Its message may quote the
/// input ("unknown field `…`", "invalid type: string \"…\""), so it is shortened.
fn toml_error(c: &Checker, origin: &str, e: toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| c.line(s.start)).unwrap_or(0);
    let msg = shorten_message(e.message().trim());
    let hint = if msg.contains("unknown field") {
        " (a typo? see docs/NETWORK.md for the fields each table takes)"
    } else {
        ""
    };
    ConfigError::single(origin, line, "", "", format!("{msg}{hint}"))
}

pub fn validate(text: &str, origin: &str, base_dir: &Path) -> Result<Network, ConfigError> {
    let mut c = Checker::new(text);
    let raw: RawNetwork = toml::from_str(text).map_err(|e| toml_error(&c, origin, e))?;
    let defaults = check_defaults(&mut c, raw.defaults.as_ref());
    let (nodes, address_lines) = nodes::check_nodes(&mut c, &raw.nodes);
    let profiles = services::check_profiles(&mut c, &raw.profiles);
    let services = services::check_services(&mut c, &raw.services, &nodes);
    // Backends a service lists, also from services with problems of their own.
    let served = raw
        .services
        .iter()
        .filter_map(|s| s.get_ref().backends.as_ref())
        .flat_map(|b| b.get_ref().iter().map(String::as_str))
        .collect();
    nodes::check_addresses(&mut c, &nodes, &address_lines, &served);
    let rules = rules::check_rules(&mut c, &raw.rules, base_dir, &services, &profiles);
    if !c.problems.is_empty() {
        return Err(ConfigError {
            origin: origin.to_owned(),
            problems: c.problems,
        });
    }
    Ok(Network {
        defaults,
        services: services.items,
        profiles: profiles.items,
        rules,
        nodes,
        source_text_hash: fnv1a(c.text.as_bytes()),
        origin: origin.to_owned(),
        warnings: c.warnings,
    })
}

fn check_defaults(c: &mut Checker, d: Option<&Spanned<RawDefaults>>) -> Defaults {
    let mut defaults = Defaults::default();
    let Some(d) = d else {
        return defaults;
    };
    let d = d.get_ref();
    if let Some(f) = &d.fragments {
        match f.get_ref().as_str() {
            "drop" => defaults.fragments = FragmentPolicy::Drop,
            "pass" => defaults.fragments = FragmentPolicy::Pass,
            other => c.at(
                f,
                "defaults",
                "fragments",
                format!(
                    "{} is not a policy; use \"drop\" or \"pass\"",
                    excerpt(other)
                ),
            ),
        }
    }
    if let Some(v) = &d.new_source_cap {
        match u32::try_from(*v.get_ref()) {
            Ok(n) => defaults.new_source_cap = n,
            Err(_) => c.at(
                v,
                "defaults",
                "new_source_cap",
                "must be between 0 (no cap) and 4294967295",
            ),
        }
    }
    if let Some(mode) = d
        .xdp_mode
        .as_ref()
        .and_then(|m| parse_xdp_mode(c, m, "defaults"))
    {
        defaults.xdp_mode = mode;
    }
    for (field, v, target) in [
        (
            "flow_table_size",
            &d.flow_table_size,
            &mut defaults.flow_table_size,
        ),
        (
            "bucket_table_size",
            &d.bucket_table_size,
            &mut defaults.bucket_table_size,
        ),
    ] {
        if let Some(v) = v {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1024..=100_000_000).contains(&n) => *target = n,
                _ => c.at(
                    v,
                    "defaults",
                    field,
                    "must be between 1024 and 100000000 entries",
                ),
            }
        }
    }
    defaults
}

/// `xdp_mode = "native" | "auto"` (defaults and nodes).
pub(super) fn parse_xdp_mode(
    c: &mut Checker,
    m: &Spanned<String>,
    item: &str,
) -> Option<XdpModeSetting> {
    match m.get_ref().as_str() {
        "native" => Some(XdpModeSetting::Native),
        "auto" => Some(XdpModeSetting::Auto),
        other => {
            c.at(
                m,
                item,
                "xdp_mode",
                format!(
                    "{} is not a mode; use \"native\" or \"auto\"",
                    excerpt(other)
                ),
            );
            None
        }
    }
}
