//! `events [--stats] [--interval D] ID`: stats lines as JSON (containerd's shape).

use super::{Ctx, Error};
use crate::cli::Events;
use crate::state::Status;
use std::time::Duration;

/// Parses `5s`, `500ms`, `1m`, `2h` or plain seconds.
pub fn parse_interval(s: &str) -> Result<Duration, Error> {
    let bad = || Error::Refused(format!("invalid interval {s:?}: use e.g. 5s, 500ms, 1m"));
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn stats_line(id: &str, st: &crate::state::State) -> Result<serde_json::Value, Error> {
    let s = match &st.cgroup {
        Some(cg) => cg.stats()?,
        None => crate::cgroup::Stats {
            pids_current: super::query::pids(st)?.len() as u64,
            ..Default::default()
        },
    };
    Ok(serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": { "usage": { "total": s.cpu_usage_ns } },
            "memory": { "usage": { "usage": s.memory_usage, "limit": s.memory_limit } },
            "pids": { "current": s.pids_current, "limit": s.pids_limit },
        }
    }))
}

/// `events`.
pub fn events(ctx: &Ctx, e: &Events) -> Result<(), Error> {
    let interval = parse_interval(&e.interval)?;
    let (dir, st) = ctx.open(&e.id)?;
    drop(dir);
    if e.stats {
        println!("{}", stats_line(&e.id, &st)?);
        return Ok(());
    }
    while st.status() != Status::Stopped {
        println!("{}", stats_line(&e.id, &st)?);
        std::thread::sleep(interval);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_interval;
    use std::time::Duration;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert!(parse_interval("x").is_err());
    }
}
