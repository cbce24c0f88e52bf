//! Names behind the kernel's indices.

/// Names behind the kernel's indices, for counters and status.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub rules: Vec<String>,
    pub services: Vec<String>,
    pub backends: Vec<String>,
    pub profiles: Vec<String>,
}
