//! Parsers of the network file's values (ranges, ports, durations, rates, prefixes, protocols,
//! TCP flags). Each returns what is wrong and how to write it instead; the caller adds the location.
use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;

use super::{Protocol, names::excerpt};

/// "N" or "LO-HI" (also a bare integer) → inclusive range within `min..=max`.
pub fn parse_range(v: &toml::Value, min: u64, max: u64) -> Result<(u64, u64), String> {
    let (lo, hi) = match v {
        toml::Value::Integer(i) => (*i, *i),
        toml::Value::String(s) => {
            let s = s.trim();
            let q = excerpt(s);
            match s.split_once('-') {
                Some((a, b)) => (
                    a.trim().parse::<i64>().map_err(|_| {
                        format!("{q} is not a range; write LOW-HIGH, e.g. \"{min}-{max}\"")
                    })?,
                    b.trim().parse::<i64>().map_err(|_| {
                        format!("{q} is not a range; write LOW-HIGH, e.g. \"{min}-{max}\"")
                    })?,
                ),
                None => {
                    let n = s.parse::<i64>().map_err(|_| {
                        format!("{q} is not a number or a range; write N or LOW-HIGH")
                    })?;
                    (n, n)
                }
            }
        }
        other => {
            return Err(format!(
                "expected a number or a \"LOW-HIGH\" string, found {}",
                other.type_str()
            ));
        }
    };
    if lo < min as i64 || hi > max as i64 || lo < 0 {
        return Err(format!("{lo}-{hi} is outside {min}-{max}"));
    }
    if lo > hi {
        return Err(format!(
            "{lo}-{hi} is an empty range (start above end); write LOW-HIGH with LOW <= HIGH"
        ));
    }
    Ok((lo as u64, hi as u64))
}

/// Port specification: one range, or an array of them (services only).
pub fn parse_ports(v: &toml::Value) -> Result<Vec<(u16, u16)>, String> {
    let items: Vec<&toml::Value> = match v {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err("empty list; give at least one port or range".into());
    }
    items
        .into_iter()
        .map(|i| parse_range(i, 1, 65535).map(|(a, b)| (a as u16, b as u16)))
        .collect()
}

/// "500ms", "30s", "5m", "1h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let q = excerpt(s);
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().map_err(|_| {
        format!("{q} is not a duration; write e.g. \"500ms\", \"30s\", \"5m\", \"1h\"")
    })?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => {
            return Err(format!(
                "unknown unit {} in {q}; use ms, s, m or h",
                excerpt(u)
            ));
        }
    };
    if !(0.0..=86_400.0 * 7.0).contains(&secs) {
        return Err(format!("{q} is out of range (0 to 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Bits per second: a number, or a string like "4Mbit", "500kbit", "1G".
pub fn parse_bps(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i > 0 => Ok(*i as u64),
        toml::Value::Integer(_) => Err("must be above zero".into()),
        toml::Value::String(s) => {
            let t = s.trim();
            let q = excerpt(t);
            let split = t
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num
                .parse()
                .map_err(|_| format!("{q} is not a rate; write e.g. \"4Mbit\" or 4000000"))?;
            let unit = unit.trim().to_ascii_lowercase();
            let unit = unit
                .strip_suffix("bit")
                .or_else(|| unit.strip_suffix("bps"))
                .unwrap_or(&unit);
            let mult = match unit {
                "" => 1.0,
                "k" => 1e3,
                "m" => 1e6,
                "g" => 1e9,
                _ => {
                    return Err(format!("unknown unit in {q}; use bit, Kbit, Mbit or Gbit"));
                }
            };
            let v = (n * mult) as u64;
            if v == 0 {
                return Err("must be above zero".into());
            }
            Ok(v)
        }
        other => Err(format!(
            "expected a number or a string like \"4Mbit\", found {}",
            other.type_str()
        )),
    }
}

/// A source prefix as written: "198.18.0.0/15", "2001:db8::/32", or an address (a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The prefix with its host bits cleared: what the rule matches.
    pub net: IpNet,
    /// The address part had bits set below the prefix length ("10.1.2.3/8"): probably a typo for
    /// a longer prefix or one host, so it is worth a warning.
    pub host_bits: bool,
}

/// Parses a prefix or an address; `None` if it is neither (the caller decides how much of the
/// input it may quote).
pub fn parse_prefix(s: &str) -> Option<Prefix> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(Prefix {
            net: n.trunc(),
            host_bits: n.trunc() != n,
        });
    }
    s.parse::<IpAddr>().ok().map(|a| Prefix {
        net: IpNet::from(a),
        host_bits: false,
    })
}

/// What to say about a prefix written with host bits.
pub fn host_bits_message(written: &IpNet) -> String {
    format!(
        "{written} has host bits set and is read as {}; write that, or {}/{} for the one host",
        written.trunc(),
        written.addr(),
        written.max_prefix_len()
    )
}

pub fn parse_protocol(s: &str) -> Option<Protocol> {
    match s.trim().to_ascii_lowercase().as_str() {
        "udp" => Some(Protocol::Udp),
        "tcp" => Some(Protocol::Tcp),
        "icmp" | "icmpv6" => Some(Protocol::Icmp),
        _ => None,
    }
}

/// "SYN,!ACK" → (mask, value): the named flags must be set, the `!` ones clear. A flag both
/// required and forbidden ("SYN,!SYN") can match no packet, so it is refused, not resolved.
pub fn parse_tcp_flags(s: &str) -> Result<(u8, u8), String> {
    let mut mask = 0u8;
    let mut value = 0u8;
    let mut cleared = 0u8;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (neg, name) = match part.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, part),
        };
        let bit = match name.to_ascii_uppercase().as_str() {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            _ => {
                return Err(format!(
                    "unknown flag {}; use FIN SYN RST PSH ACK URG ECE CWR, '!' for must-be-clear, e.g. \"SYN,!ACK\"",
                    excerpt(name)
                ));
            }
        };
        mask |= bit;
        if neg {
            cleared |= bit;
        } else {
            value |= bit;
        }
        if value & cleared & bit != 0 {
            return Err(format!(
                "{} is both required and forbidden, so no packet can match; name each flag once",
                name.to_ascii_uppercase()
            ));
        }
    }
    if mask == 0 {
        return Err("no flags given; e.g. \"SYN,!ACK\"".into());
    }
    Ok((mask, value))
}
