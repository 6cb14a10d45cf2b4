//! Test hooks: failpoints and a skewable clock. Without the `faults` feature (release builds)
//! every function here is a no-op or the plain system clock; `scripts/test` builds with it.
//!
//! - `LIFEBOAT_FAILPOINTS=name=ACTION[;name=ACTION…]`: at [`point`]`(name)` the process is
//!   killed with SIGKILL (`kill`), sleeps (`sleep=MS`, so a test can kill it from outside at a
//!   known moment), or writes its pid to a file and sleeps (`pause=FILE`).
//! - `LIFEBOAT_CLOCK_SKEW_SECONDS=±N`: [`now`] runs N seconds ahead (or behind) of the system
//!   clock, like `faketime -f`, for the wall-clock times lifeboat writes and compares (lock
//!   times, snapshot times). Monotonic timers are not affected.

/// A named point where a test can kill or stall the process.
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "faults")]
    enabled::point(name);
    #[cfg(not(feature = "faults"))]
    let _ = name;
}

/// The wall clock lifeboat uses for the times it records and compares.
pub fn now() -> jiff::Timestamp {
    #[cfg(feature = "faults")]
    {
        let skew = std::env::var("LIFEBOAT_CLOCK_SKEW_SECONDS")
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        if skew != 0 {
            return jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(skew))
                .unwrap_or_else(|_| jiff::Timestamp::now());
        }
    }
    jiff::Timestamp::now()
}

#[cfg(feature = "faults")]
mod enabled {
    pub fn point(name: &str) {
        let Ok(spec) = std::env::var("LIFEBOAT_FAILPOINTS") else {
            return;
        };
        for rule in spec.split(';') {
            let Some((n, action)) = rule.trim().split_once('=') else {
                continue;
            };
            if n != name {
                continue;
            }
            tracing::warn!(failpoint = name, action, "failpoint reached");
            if action == "kill" {
                // SIGKILL: no destructors, no clean-up, exactly like `kill -9`.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            } else if let Some(ms) = action.strip_prefix("sleep=") {
                let ms = ms.parse().unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            } else if let Some(file) = action.strip_prefix("pause=") {
                let _ = std::fs::write(file, std::process::id().to_string());
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
        }
    }
}
