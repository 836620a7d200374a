//! The members' clock as the log carries it: milliseconds since the Unix epoch. Lease and
//! v2 TTL deadlines are computed from the proposer's clock, written into the entry, so every
//! member computes the same expiry from the same entry.
//!
//! The clock is read from the wall clock once, when the process first asks, and runs on the
//! monotonic clock from then on: a wall-clock step (NTP, an operator, a VM resumed) never
//! moves it. etcd's lessor decides expiry on Go's monotonic clock the same way; without this
//! a leader whose wall clock jumped forward revoked every lease at once, and one whose clock
//! jumped back kept expired leases alive that much longer (found by the chaos suite's
//! `clock-jump`).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the Unix epoch, by a clock that never steps (see the module doc).
pub fn now_ms() -> i64 {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    let (at, wall) = *ANCHOR.get_or_init(|| (Instant::now(), wall_ms()));
    // Chaos builds: read the control file (failpoints armed at run time) on every call.
    #[cfg(feature = "failpoints")]
    chaos::poll();
    wall.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// The wall clock in milliseconds since the Unix epoch (0 before 1970); in a chaos build,
/// moved by the control file's `clock_offset_ms`.
fn wall_ms() -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    #[cfg(feature = "failpoints")]
    let wall = wall.saturating_add(chaos::poll());
    wall
}

/// Chaos builds only (`--features failpoints`): a control file the chaos suite rewrites
/// while the member runs, named by `OXCD_CHAOS_CONTROL` and re-read at most every
/// [`chaos::POLL`] by [`now_ms`] (which the raft loop calls every tick). Each line is
/// `clock_offset_ms=N` (the wall clock, as this file reads it, jumps by N ms forward or
/// back: a time namespace cannot move CLOCK_REALTIME; since [`now_ms`] reads the wall clock
/// only once, such a jump must change nothing, which the `clock-jump` fault checks) or
/// `NAME=ACTIONS`, a failpoint armed at run time in the `fail` crate's syntax (one that
/// disappears from the file is disarmed). A normal build has none of this.
#[cfg(feature = "failpoints")]
pub mod chaos {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    pub const POLL: Duration = Duration::from_millis(50);

    struct Control {
        checked: Option<Instant>,
        text: String,
        offset_ms: i64,
        armed: BTreeMap<String, String>,
    }

    static CONTROL: Mutex<Control> = Mutex::new(Control {
        checked: None,
        text: String::new(),
        offset_ms: 0,
        armed: BTreeMap::new(),
    });

    /// The clock offset now in force, after re-reading the control file when it is due.
    pub fn poll() -> i64 {
        let Some(path) = std::env::var_os("OXCD_CHAOS_CONTROL") else {
            return 0;
        };
        let Ok(mut c) = CONTROL.lock() else {
            return 0;
        };
        if c.checked.is_some_and(|t| t.elapsed() < POLL) {
            return c.offset_ms;
        }
        c.checked = Some(Instant::now());
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text != c.text {
            apply(&mut c, &text);
            c.text = text;
        }
        c.offset_ms
    }

    fn apply(c: &mut Control, text: &str) {
        let mut offset_ms = 0;
        let mut armed = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if name == "clock_offset_ms" {
                offset_ms = value.trim().parse().unwrap_or(0);
            } else {
                armed.insert(name.trim().to_string(), value.trim().to_string());
            }
        }
        for name in c.armed.keys().filter(|n| !armed.contains_key(*n)) {
            fail::remove(name);
        }
        for (name, actions) in &armed {
            if c.armed.get(name) != Some(actions) {
                if let Err(e) = fail::cfg(name.as_str(), actions) {
                    tracing::error!("chaos control: failpoint {name}={actions}: {e}");
                }
            }
        }
        if offset_ms != c.offset_ms {
            tracing::warn!("chaos control: the wall clock is now off by {offset_ms} ms");
        }
        c.offset_ms = offset_ms;
        c.armed = armed;
    }
}
