//! Durations as lifeboat's flags and files write them: `90s`, `10m`, `1.5h` (a bare number is
//! seconds).
use std::time::Duration;

/// Parse a duration; at most a year (longer is a typo, and `Instant` arithmetic must not
/// overflow).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 90s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (s, m or h)")),
    };
    if !(0.0..=366.0 * 86400.0).contains(&secs) {
        return Err(format!("duration {s:?} is out of range (at most a year)"));
    }
    Ok(Duration::from_secs_f64(secs))
}
