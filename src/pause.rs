//! `cnibox pause`: waits until SIGTERM or SIGINT, then exits 0. The main
//! container of the DaemonSet whose init container installed cnibox: a
//! `FROM scratch` image has no shell or sleep to do it. A front-door
//! subcommand, never installed as a plugin link.

use nix::sys::signal::{SigSet, Signal};

pub fn main(args: &[String]) -> i32 {
    if !args.is_empty() {
        eprintln!("usage: cnibox pause (waits for SIGTERM or SIGINT)");
        return 2;
    }
    // Blocked and waited for rather than handled: as PID 1 of a container a
    // signal without a handler would be ignored, and this needs no handler.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block().and_then(|()| signals.wait()) {
        eprintln!("cnibox pause: {e}");
        return 1;
    }
    0
}
