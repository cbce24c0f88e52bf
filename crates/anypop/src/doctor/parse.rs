//! Parsers of `ethtool` and `ip route get` output.
use std::collections::BTreeMap;

use super::{Channels, Feature, RouteAnswer};

/// `ethtool -k` output (`large-receive-offload: off [fixed]`) → feature name → state.
pub fn parse_features(text: &str) -> BTreeMap<String, Feature> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            let mut words = rest.split_whitespace();
            let on = match words.next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some((
                name.to_string(),
                Feature {
                    on,
                    fixed: rest.contains("[fixed]"),
                },
            ))
        })
        .collect()
}

/// `ethtool -l` output: "Pre-set maximums:" then "Current hardware settings:", each with
/// `RX:`, `TX:`, `Other:`, `Combined:` lines.
pub fn parse_channels(text: &str) -> Option<Channels> {
    let mut ch = Channels::default();
    let mut current = None;
    let mut seen = false;
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with("Pre-set maximums") {
            current = Some(false);
            continue;
        }
        if l.starts_with("Current hardware settings") {
            current = Some(true);
            continue;
        }
        let Some(cur) = current else { continue };
        let Some((key, value)) = l.split_once(':') else {
            continue;
        };
        let v = value.trim().parse::<u32>().ok();
        match (cur, key.trim()) {
            (false, "RX") => ch.max_rx = v,
            (false, "Combined") => ch.max_combined = v,
            (true, "RX") => {
                ch.rx = v;
                seen = true;
            }
            (true, "Combined") => {
                ch.combined = v;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(ch)
}

/// Whether `ethtool -x` printed an RSS indirection table.
pub fn has_indirection_table(text: &str) -> bool {
    text.contains("RX flow hash indirection table")
}

/// `198.51.100.21 via 10.0.0.1 dev eth0 src 10.0.0.2 uid 0` → dev, via; `local …` → local.
pub fn parse_route_get(text: &str) -> Option<RouteAnswer> {
    let first = text.lines().next()?;
    let w: Vec<&str> = first.split_whitespace().collect();
    let field = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .map(|s| s.to_string())
    };
    if matches!(
        w.first().copied(),
        Some("unreachable" | "blackhole" | "prohibit" | "throw")
    ) {
        return Some(RouteAnswer::None(first.trim().to_string()));
    }
    Some(RouteAnswer::Route {
        dev: field("dev")?,
        via: field("via"),
        local: w.first() == Some(&"local"),
    })
}
