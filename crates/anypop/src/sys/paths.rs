//! Paths anypop removes: each is proven to lie strictly below the directory anypop owns before
//! anything is deleted, so a strange name (`..`, `/abs`) can never turn a clean-up into the
//! removal of someone else's files.
use std::path::{Component, Path};

use anyhow::bail;

/// Fails unless `path` is strictly below `base`, lexically, with no `..`, `.` or root component
/// after `base` (paths are built by joining names; a symlink planted inside our own
/// directories is removed as a link by `remove_file`/`remove_dir_all`, never followed).
pub fn check_below(base: &Path, path: &Path) -> anyhow::Result<()> {
    let Ok(rest) = path.strip_prefix(base) else {
        bail!(
            "refusing to remove {}: it is not below {}",
            path.display(),
            base.display()
        );
    };
    if rest.as_os_str().is_empty() || !rest.components().all(|c| matches!(c, Component::Normal(_)))
    {
        bail!(
            "refusing to remove {}: it is not strictly below {}",
            path.display(),
            base.display()
        );
    }
    Ok(())
}

/// Removes the file or directory tree `path`, after [`check_below`]`(base, path)`; a path
/// that does not exist is no error.
pub fn remove_below(base: &Path, path: &Path) -> anyhow::Result<()> {
    check_below(base, path)?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let r = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            bail!("removing {}: {e}", path.display())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_strictly_below_the_base_pass() {
        let base = Path::new("/run/anypop");
        assert!(check_below(base, Path::new("/run/anypop/sys_fs_bpf_x")).is_ok());
        assert!(check_below(base, Path::new("/run/anypop/a/b")).is_ok());
        for bad in [
            "/run/anypop",
            "/run",
            "/run/anypop/..",
            "/run/anypop/a/../..",
            "/etc",
        ] {
            assert!(check_below(base, Path::new(bad)).is_err(), "{bad}");
        }
    }
}
