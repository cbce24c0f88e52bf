//! Load, pin, attach and fill the kernel programs.
pub mod prefix_sets;
