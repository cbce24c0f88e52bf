//! Builds the kernel programs (crates/anypop-ebpf) with aya-build and nightly, so that
//! `cargo build` of the user space always embeds programs built from the same commit.
use std::{env, fs, path::PathBuf};

const PROGRAMS: &[&str] = &["edge", "baseline", "backend", "trafficgen"];

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../anypop-ebpf");
    let root = root.canonicalize()?;
    let root_str = root.to_str().expect("utf-8 path");
    println!("cargo:rerun-if-changed={root_str}/src");
    println!("cargo:rerun-if-changed=../anypop-common/src");
    // aya-build runs `cargo build --package anypop-ebpf` in the current directory. The kernel crate
    // is its own workspace (nightly-only manifest features), so run it from there.
    env::set_current_dir(&root)?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "anypop-ebpf",
            root_dir: root_str,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP=1 (pure host work such as config unit tests) nothing is built; leave
    // empty objects so the crate compiles, and the loader reports them as missing if used.
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for p in PROGRAMS {
        let f = out.join(p);
        if !f.exists() {
            fs::write(&f, [])?;
        }
    }
    Ok(())
}
