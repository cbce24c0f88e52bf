//! The network file exactly as written: serde structures with spans, so every later check can
//! name the line. Unknown keys are errors, so a typo never silently does nothing.
use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default)]
    pub defaults: Option<Spanned<RawDefaults>>,
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<RawService>>,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<Spanned<RawProfile>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
    #[serde(default, rename = "node")]
    pub nodes: Vec<Spanned<RawNode>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub fragments: Option<Spanned<String>>,
    pub new_source_cap: Option<Spanned<i64>>,
    pub xdp_mode: Option<Spanned<String>>,
    pub flow_table_size: Option<Spanned<i64>>,
    pub bucket_table_size: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Spanned<String>,
    pub vip: Spanned<String>,
    pub protocol: Spanned<String>,
    pub ports: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub backends: Option<Spanned<Vec<String>>>,
    pub weights: Option<Spanned<BTreeMap<String, i64>>>,
    pub limit: Option<Spanned<RawLimit>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub pps: Option<Spanned<i64>>,
    pub bps: Option<Spanned<toml::Value>>,
    pub burst: Option<Spanned<f64>>,
    pub block: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: Spanned<String>,
    pub pps: Option<Spanned<i64>>,
    pub bps: Option<Spanned<toml::Value>>,
    pub burst: Option<Spanned<f64>>,
    pub block: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<Spanned<String>>,
    pub action: Spanned<String>,
    pub profile: Option<Spanned<String>>,
    pub services: Option<Spanned<Vec<String>>>,
    pub src: Option<Spanned<Vec<String>>>,
    pub src_file: Option<Spanned<String>>,
    pub protocol: Option<Spanned<toml::Value>>,
    pub src_ports: Option<Spanned<toml::Value>>,
    pub dst_ports: Option<Spanned<toml::Value>>,
    pub tcp_flags: Option<Spanned<String>>,
    pub length: Option<Spanned<toml::Value>>,
    pub ttl: Option<Spanned<toml::Value>>,
    pub icmp_type: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub interfaces: Option<Spanned<Vec<String>>>,
    pub interface: Option<Spanned<String>>,
    pub tunnel_source: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub xdp_mode: Option<Spanned<String>>,
    pub pops: Option<Spanned<Vec<String>>>,
    /// Backend: "native" (our XDP decapsulates) or "tunnel" (a kernel IPIP tunnel does).
    pub mode: Option<Spanned<String>>,
}
