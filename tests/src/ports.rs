//! Loopback ports for test processes, reserved for the whole life of the process that took them.
//!
//! A port is drawn at random below the kernel's ephemeral range, so no outgoing connection is ever
//! given it, and reserved with an exclusive `flock` on `/tmp/berqenas-test-ports/PORT`, so no other
//! test process (nextest runs each test in its own) takes it between the pick and a coordinator's
//! restart on it. The lock file stays open until the process exits; the kernel drops the lock then,
//! so a crashed test leaves nothing to clean up. Within one process a port is never handed out
//! twice: a second `flock` on a fresh open of the same file conflicts with the first.

use rustix::fs::{flock, FlockOperation};
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

/// Where the lock files live, one per reserved port.
const LOCK_DIR: &str = "/tmp/berqenas-test-ports";

/// The ports tests draw from, as long as they stay below the ephemeral range.
const TEST_PORTS: Range<u16> = 10_000..32_000;

/// The lock files of the ports this process holds; never closed, so never released before exit.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback TCP port nobody listens on, that no other test process holds and that this
/// process has not handed out before. It stays reserved until the process exits, so a
/// coordinator can be restarted on it any number of times.
pub fn free_port() -> u16 {
    use rand::Rng;
    let range = test_ports();
    std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("create {LOCK_DIR}: {e}"));
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port = rng.gen_range(range.clone());
        if let Some(lock) = reserve(port) {
            HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(lock);
            return port;
        }
    }
    panic!("no free loopback port in {}–{}", range.start, range.end - 1)
}

/// `TEST_PORTS` cut off where this host's ephemeral range (`ip_local_port_range`) begins.
fn test_ports() -> Range<u16> {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32_768);
    let end = TEST_PORTS.end.min(start);
    assert!(
        end > TEST_PORTS.start + 1_000,
        "the ephemeral range starts at {start}, leaving too few test ports above {}",
        TEST_PORTS.start
    );
    TEST_PORTS.start..end
}

/// The lock on `port`, if no other holder has it and it can be bound right now.
fn reserve(port: u16) -> Option<File> {
    let path = Path::new(LOCK_DIR).join(port.to_string());
    let mut file = File::options().create(true).truncate(false).write(true).open(&path).ok()?;
    flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
    TcpListener::bind(("127.0.0.1", port)).ok()?;
    // Who holds it, for whoever looks into the directory; the lock, not this, is the reservation.
    let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_never_handed_out_twice_in_one_process() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }

    #[test]
    fn a_held_port_cannot_be_reserved_again() {
        let port = free_port();
        assert!(reserve(port).is_none(), "port {port} reserved twice");
    }

    #[test]
    fn ports_stay_below_the_ephemeral_range() {
        let range = test_ports();
        for _ in 0..20 {
            assert!(range.contains(&free_port()));
        }
    }
}
