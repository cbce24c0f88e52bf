//! What the tests add to the namespace builder of `anypop::sys::testns` ([`NetSetup`]): the t0
//! pair the tests of `anypop run` put their node on, and a thread of its own for each test whose
//! private namespace dies with it.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use anypop::sys::testns::{NetSetup, enter_private_netns, in_private_netns, sh};

/// The tests' own set-up steps.
pub trait TestSteps {
    /// The veth pair t0/t1, t0 with 198.51.100.1/24 and forwarding on: where the tests of
    /// `anypop run` put their node (`lo` is not touched).
    fn t0_pair(self) -> NetSetup;
}

impl TestSteps for NetSetup {
    fn t0_pair(self) -> NetSetup {
        self.veth("t0", "t1")
            .addr("198.51.100.1/24", "t0")
            .forwarding(&["all", "t0"])
    }
}

/// A new namespace with `lo` up and [`TestSteps::t0_pair`] in it, for the calling thread.
pub fn t0_netns() {
    NetSetup::enter_private().lo_up().t0_pair().apply().unwrap();
}

/// Runs `f` on a thread of its own (whose private namespace, if `f` makes one, dies with it) and
/// returns what it returns; a panic inside is raised again here.
pub fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
