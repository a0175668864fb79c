//! Code shared by the test programs. They run as static binaries in images
//! that hold nothing else, so they resolve names with their own DNS client
//! ([`dns`]) instead of glibc's NSS, which does not work statically linked.

pub mod dns;
pub mod http;
pub mod load;
pub mod proxy;

/// Makes SIGTERM and SIGINT end the process at once. Needed because a
/// container's PID 1 ignores signals it installs no handler for, and
/// `docker stop` would otherwise wait out the whole grace period.
pub fn exit_on_terminate() {
    extern "C" fn on_signal(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only calls an async-signal-safe function.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Set once SIGTERM or SIGINT came (see [`note_terminate`]).
pub static TERMINATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes SIGTERM and SIGINT only set [`TERMINATING`]: a server that shuts
/// down gracefully (finishes its open connections) watches it.
pub fn note_terminate() {
    extern "C" fn on_signal(_: libc::c_int) {
        // An atomic store is async-signal-safe.
        TERMINATING.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}
