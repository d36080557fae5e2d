//! What `/proc/<pid>/stat` says about a process: alive (not a zombie) and its start
//! time (field 22), which tells a reused pid from the container's process.

/// The process state letter and start time of `pid`, or None when it does not exist.
#[must_use]
pub fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line: the fields after the last `)` (the command may
/// hold spaces and parentheses) start with field 3 (state); field 22 is the start time.
#[must_use]
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live `pid` (None: gone or a zombie).
#[must_use]
pub fn start_time(pid: i32) -> Option<u64> {
    match stat(pid)? {
        ('Z' | 'X' | 'x', _) => None,
        (_, start) => Some(start),
    }
}

/// True when `pid` is alive and started at `start`.
#[must_use]
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_names() {
        let line =
            "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn self_is_alive() {
        let me = std::process::id() as i32;
        let start = start_time(me).expect("own stat");
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
    }
}
