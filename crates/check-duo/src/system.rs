//! The core's clock and waiting ports, as the operating system provides them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use check_duo_core::ports::{Clock, Wait};

/// The system's wall and monotonic clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// Waiting by sleeping the thread (the pipe mode holds one request per process).
pub struct Sleep;

impl Wait for Sleep {
    fn wait(&self, d: Duration) {
        std::thread::sleep(d);
    }
}
