//! cfssl's log lines on stderr: `2006/01/02 15:04:05 [INFO] message`.

use time::OffsetDateTime;

/// cfssl's `-loglevel`: 0 debug, 1 info (the default), 2 warning, 3 error, 4 critical, 5 fatal.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    level: u8,
}

impl Log {
    pub const INFO: u8 = 1;
    pub const WARNING: u8 = 2;

    pub fn new(level: u8) -> Log {
        Log { level }
    }

    /// Warnings only: for commands that print their own summary.
    pub fn quiet() -> Log {
        Log::new(Self::WARNING)
    }

    pub fn info(&self, message: &str) {
        if self.level <= Self::INFO {
            eprintln!("{} [INFO] {message}", timestamp());
        }
    }

    pub fn warning(&self, message: &str) {
        if self.level <= Self::WARNING {
            eprintln!("{} [WARNING] {message}", timestamp());
        }
    }
}

/// Local time, as Go's `log` prints it (UTC when the local offset is unknown).
fn timestamp() -> String {
    let now = OffsetDateTime::now_local().unwrap_or_else(|_| OffsetDateTime::now_utc());
    oxcd_gocompat::timestamp::log_std(now)
}
