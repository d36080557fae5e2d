//! The Redis side of `kv`, free of any I/O so it unit-tests on the host: a RESP2
//! request parser (multibulk and inline), the string store with expiry, and the
//! commands, which write their RESP replies straight into an output buffer.
#![no_std]

extern crate alloc;

#[cfg(test)]
extern crate std;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::ops::Range;

pub mod log;

/// Longest inline command line.
pub const MAX_INLINE: usize = 64 * 1024;
/// Most arguments in one command.
pub const MAX_ARGS: usize = 1024 * 1024;
/// Longest bulk string.
pub const MAX_BULK: usize = 16 * 1024 * 1024;

// ---- parsing ------------------------------------------------------------------------

/// A protocol error: reply with it, then close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| from + p)
}

fn parse_len(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i64, |a, &d| a * 10 + i64::from(d - b'0'));
    Some(if neg { -v } else { v })
}

/// Parses one command from the front of `buf` into `args` (ranges of `buf`).
/// `Ok(None)`: incomplete; `Ok(Some(n))`: a command of `n` bytes (`args` may be empty
/// for an empty inline line: skip it).
pub fn parse(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, ProtocolError> {
    args.clear();
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, args);
    }
    let Some(nl) = line_end(buf, 0) else {
        if buf.len() > 64 {
            return Err(ProtocolError("Protocol error: invalid multibulk length"));
        }
        return Ok(None);
    };
    if nl < 2 || buf[nl - 1] != b'\r' {
        return Err(ProtocolError("Protocol error: invalid multibulk length"));
    }
    let n = match parse_len(&buf[1..nl - 1]) {
        Some(n) if n <= MAX_ARGS as i64 => n,
        _ => return Err(ProtocolError("Protocol error: invalid multibulk length")),
    };
    let mut pos = nl + 1;
    for _ in 0..n.max(0) {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError("Protocol error: expected '$'"));
        }
        let Some(nl) = line_end(buf, pos) else {
            if buf.len() - pos > 64 {
                return Err(ProtocolError("Protocol error: invalid bulk length"));
            }
            return Ok(None);
        };
        if buf[nl - 1] != b'\r' {
            return Err(ProtocolError("Protocol error: invalid bulk length"));
        }
        let len = match parse_len(&buf[pos + 1..nl - 1]) {
            Some(l) if (0..=MAX_BULK as i64).contains(&l) => l as usize,
            _ => return Err(ProtocolError("Protocol error: invalid bulk length")),
        };
        let start = nl + 1;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError("Protocol error: bulk string not terminated"));
        }
        args.push(start..end);
        pos = end + 2;
    }
    Ok(Some(pos))
}

fn parse_inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, ProtocolError> {
    let Some(nl) = line_end(buf, 0) else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError("Protocol error: too big inline request"));
        }
        return Ok(None);
    };
    let end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let mut i = 0;
    while i < end {
        while i < end && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == end {
            break;
        }
        if buf[i] == b'"' || buf[i] == b'\'' {
            // Quoted argument (no escapes): up to the matching quote.
            let q = buf[i];
            let start = i + 1;
            let Some(close) = buf[start..end].iter().position(|&b| b == q) else {
                return Err(ProtocolError(
                    "Protocol error: unbalanced quotes in request",
                ));
            };
            args.push(start..start + close);
            i = start + close + 1;
        } else {
            let start = i;
            while i < end && !buf[i].is_ascii_whitespace() {
                i += 1;
            }
            args.push(start..i);
        }
    }
    Ok(Some(nl + 1))
}

// ---- the store ----------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    /// Expiry time in milliseconds of the caller's clock.
    expires: Option<u64>,
}

/// The key space (one database, strings only).
#[derive(Debug, Default)]
pub struct Store {
    map: BTreeMap<Vec<u8>, Entry>,
    /// Keys with an expiry (for the periodic sweep and INFO).
    volatile: usize,
    /// When on, every change is also encoded here as a log operation (see [`log`]).
    journal: Option<Vec<u8>>,
    /// Lines for INFO's `# Persistence` section (None: in memory only).
    pub persistence: Option<alloc::string::String>,
}

impl Store {
    /// An empty store.
    #[must_use]
    pub fn new() -> Store {
        Store::default()
    }

    fn live(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        let expired = self.map.get(key)?.expires.is_some_and(|t| t <= now);
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(e) => {
                if e.expires.is_some() {
                    self.volatile -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Starts recording changes as log operations (for [`Store::take_journal`]).
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The operations recorded since the last call (empty when journaling is off).
    pub fn take_journal(&mut self) -> Vec<u8> {
        match &mut self.journal {
            Some(j) => core::mem::take(j),
            None => Vec::new(),
        }
    }

    /// Puts back a buffer taken with [`Store::take_journal`] (cleared), to reuse it.
    pub fn return_journal(&mut self, mut buf: Vec<u8>) {
        if let Some(j) = &mut self.journal {
            if j.is_empty() {
                buf.clear();
                *j = buf;
            }
        }
    }

    /// Every live entry as (key, value, expiry).
    pub fn entries(&self, now: u64) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> {
        self.map
            .iter()
            .filter(move |(_, e)| e.expires.is_none_or(|t| t > now))
            .map(|(k, e)| (k.as_slice(), e.value.as_slice(), e.expires))
    }

    /// A user's delete (journaled), unlike expiry.
    fn delete(&mut self, key: &[u8]) -> bool {
        if let Some(j) = &mut self.journal {
            log::encode_del(j, key);
        }
        self.remove(key)
    }

    /// Removes everything (journaled).
    fn flush(&mut self) {
        if let Some(j) = &mut self.journal {
            log::encode_flush(j);
        }
        self.map.clear();
        self.volatile = 0;
    }

    /// Inserts or replaces (journaled).
    fn insert(&mut self, key: &[u8], value: Vec<u8>, expires: Option<u64>) {
        if let Some(j) = &mut self.journal {
            log::encode_set(j, key, &value, expires);
        }
        self.put(key, value, expires);
    }

    /// Inserts or replaces, not journaled (replay).
    fn put(&mut self, key: &[u8], value: Vec<u8>, expires: Option<u64>) {
        if expires.is_some() {
            self.volatile += 1;
        }
        if let Some(old) = self.map.insert(key.to_vec(), Entry { value, expires }) {
            if old.expires.is_some() {
                self.volatile -= 1;
            }
        }
    }

    fn set_expiry(&mut self, key: &[u8], expires: Option<u64>) {
        if let Some(j) = &mut self.journal {
            if self.map.contains_key(key) {
                log::encode_expire(j, key, expires);
            }
        }
        if let Some(e) = self.map.get_mut(key) {
            match (e.expires.is_some(), expires.is_some()) {
                (false, true) => self.volatile += 1,
                (true, false) => self.volatile -= 1,
                _ => {}
            }
            e.expires = expires;
        }
    }

    /// Drops expired keys (call now and then; reads also expire lazily).
    pub fn sweep(&mut self, now: u64) {
        if self.volatile == 0 {
            return;
        }
        let mut dropped = 0;
        self.map.retain(|_, e| {
            let keep = e.expires.is_none_or(|t| t > now);
            if !keep {
                dropped += 1;
            }
            keep
        });
        self.volatile -= dropped;
    }

    /// Keys that have not expired.
    #[must_use]
    pub fn len(&self, now: u64) -> usize {
        if self.volatile == 0 {
            return self.map.len();
        }
        self.map
            .values()
            .filter(|e| e.expires.is_none_or(|t| t > now))
            .count()
    }

    /// True when no live key exists.
    #[must_use]
    pub fn is_empty(&self, now: u64) -> bool {
        self.len(now) == 0
    }
}

// ---- replies ------------------------------------------------------------------------

struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn simple(&mut self, s: &str) {
        self.0.push(b'+');
        self.0.extend_from_slice(s.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }
    fn ok(&mut self) {
        self.0.extend_from_slice(b"+OK\r\n");
    }
    fn err(&mut self, s: &str) {
        self.0.push(b'-');
        self.0.extend_from_slice(s.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }
    fn int(&mut self, n: i64) {
        let _ = write!(self, ":{n}\r\n");
    }
    fn nil(&mut self) {
        self.0.extend_from_slice(b"$-1\r\n");
    }
    fn bulk(&mut self, b: &[u8]) {
        let _ = write!(self, "${}\r\n", b.len());
        self.0.extend_from_slice(b);
        self.0.extend_from_slice(b"\r\n");
    }
    fn array(&mut self, n: usize) {
        let _ = write!(self, "*{n}\r\n");
    }
}

impl core::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Parses a Redis integer argument strictly (no spaces, no `+`, fits `i64`).
#[must_use]
pub fn parse_int(b: &[u8]) -> Option<i64> {
    let s = core::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s == "-0" {
        return None;
    }
    if s.starts_with("-0") {
        return None;
    }
    s.parse().ok()
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), byte-wise.
#[must_use]
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let mut matched = None; // Some(next pattern index) on a one-byte match
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => matched = Some(p + 1),
                b'[' => {
                    let mut j = p + 1;
                    let negate = j < pat.len() && pat[j] == b'^';
                    if negate {
                        j += 1;
                    }
                    let mut hit = false;
                    let mut first = true;
                    while j < pat.len() && (first || pat[j] != b']') {
                        first = false;
                        if pat[j] == b'\\' && j + 1 < pat.len() {
                            hit |= pat[j + 1] == s[i];
                            j += 2;
                        } else if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
                            let (a, b) = (pat[j].min(pat[j + 2]), pat[j].max(pat[j + 2]));
                            hit |= (a..=b).contains(&s[i]);
                            j += 3;
                        } else {
                            hit |= pat[j] == s[i];
                            j += 1;
                        }
                    }
                    if hit != negate {
                        matched = Some((j + 1).min(pat.len()));
                    }
                }
                b'\\' if p + 1 < pat.len() => {
                    if pat[p + 1] == s[i] {
                        matched = Some(p + 2);
                    }
                }
                c => {
                    if c == s[i] {
                        matched = Some(p + 1);
                    }
                }
            }
        }
        match (matched, star) {
            (Some(np), _) => {
                p = np;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep reading commands.
    Continue,
    /// Close once the reply is sent (QUIT).
    Close,
    /// Close every connection and stop the server (SHUTDOWN; no reply, like Redis).
    Shutdown,
}

fn arity_ok(name: &[u8], argc: usize) -> Option<bool> {
    // (name, arity): positive = exact, negative = at least.
    const TABLE: &[(&[u8], i32)] = &[
        (b"ping", -1),
        (b"echo", 2),
        (b"get", 2),
        (b"set", -3),
        (b"del", -2),
        (b"exists", -2),
        (b"incr", 2),
        (b"decr", 2),
        (b"incrby", 3),
        (b"decrby", 3),
        (b"mget", -2),
        (b"mset", -3),
        (b"expire", 3),
        (b"pexpire", 3),
        (b"ttl", 2),
        (b"pttl", 2),
        (b"keys", 2),
        (b"dbsize", 1),
        (b"flushall", -1),
        (b"flushdb", -1),
        (b"select", 2),
        (b"command", -1),
        (b"config", -2),
        (b"info", -1),
        (b"quit", -1),
        (b"client", -2),
        (b"hello", -1),
        (b"shutdown", -1),
    ];
    let (_, a) = TABLE.iter().find(|(n, _)| name.eq_ignore_ascii_case(n))?;
    let argc = argc as i32;
    Some(if *a >= 0 { argc == *a } else { argc >= -a })
}

fn lower(name: &[u8]) -> alloc::string::String {
    alloc::string::String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// Runs one command (`args[0]` is its name) at time `now` (milliseconds), appending
/// the reply to `out`.
pub fn execute(store: &mut Store, args: &[&[u8]], now: u64, out: &mut Vec<u8>) -> After {
    let mut o = Out(out);
    let Some(&name) = args.first() else {
        return After::Continue;
    };
    match arity_ok(name, args.len()) {
        None => {
            let _ = write!(
                o,
                "-ERR unknown command '{}', with args beginning with: ",
                alloc::string::String::from_utf8_lossy(name)
            );
            for a in args.iter().skip(1).take(8) {
                let _ = write!(o, "'{}' ", alloc::string::String::from_utf8_lossy(a));
            }
            o.0.extend_from_slice(b"\r\n");
            return After::Continue;
        }
        Some(false) => {
            let _ = write!(
                o,
                "-ERR wrong number of arguments for '{}' command\r\n",
                lower(name)
            );
            return After::Continue;
        }
        Some(true) => {}
    }
    let cmd = lower(name);
    match cmd.as_str() {
        "ping" => match args.len() {
            1 => o.simple("PONG"),
            2 => o.bulk(args[1]),
            _ => o.err("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => o.bulk(args[1]),
        "get" => match store.live(args[1], now) {
            Some(e) => o.bulk(&e.value),
            None => o.nil(),
        },
        "set" => set(store, args, now, &mut o),
        "del" => {
            let n = args[1..].iter().filter(|k| {
                let live = store.live(k, now).is_some();
                live && store.delete(k)
            });
            let n = n.count();
            o.int(n as i64);
        }
        "exists" => {
            let n = args[1..]
                .iter()
                .filter(|k| store.live(k, now).is_some())
                .count();
            o.int(n as i64);
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match cmd.as_str() {
                "incr" => Some(1),
                "decr" => Some(-1),
                "incrby" => parse_int(args[2]),
                _ => parse_int(args[2]).and_then(i64::checked_neg),
            };
            let Some(by) = by else {
                o.err(NOT_INT);
                return After::Continue;
            };
            let (cur, expires) = match store.live(args[1], now) {
                Some(e) => match parse_int(&e.value) {
                    Some(v) => (v, e.expires),
                    None => {
                        o.err(NOT_INT);
                        return After::Continue;
                    }
                },
                None => (0, None),
            };
            let Some(new) = cur.checked_add(by) else {
                o.err("ERR increment or decrement would overflow");
                return After::Continue;
            };
            let mut v = Vec::new();
            let _ = write!(Out(&mut v), "{new}");
            store.insert(args[1], v, expires);
            o.int(new);
        }
        "mget" => {
            o.array(args.len() - 1);
            for k in &args[1..] {
                match store.live(k, now) {
                    Some(e) => o.bulk(&e.value),
                    None => o.nil(),
                }
            }
        }
        "mset" => {
            if args.len().is_multiple_of(2) {
                o.err("ERR wrong number of arguments for 'mset' command");
            } else {
                for kv in args[1..].chunks_exact(2) {
                    store.insert(kv[0], kv[1].to_vec(), None);
                }
                o.ok();
            }
        }
        "expire" | "pexpire" => {
            let Some(n) = parse_int(args[2]) else {
                o.err(NOT_INT);
                return After::Continue;
            };
            let ms = if cmd == "expire" {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            let Some(ms) = ms else {
                o.err("ERR invalid expire time in 'expire' command");
                return After::Continue;
            };
            if store.live(args[1], now).is_none() {
                o.int(0);
            } else if ms <= 0 {
                store.delete(args[1]);
                o.int(1);
            } else {
                store.set_expiry(args[1], Some(now.saturating_add(ms as u64)));
                o.int(1);
            }
        }
        "ttl" | "pttl" => match store.live(args[1], now) {
            None => o.int(-2),
            Some(Entry { expires: None, .. }) => o.int(-1),
            Some(Entry {
                expires: Some(t), ..
            }) => {
                let left = t.saturating_sub(now) as i64;
                o.int(if cmd == "ttl" {
                    (left + 500) / 1000
                } else {
                    left
                });
            }
        },
        "keys" => {
            let pat = args[1];
            let keys: Vec<&Vec<u8>> = store
                .map
                .iter()
                .filter(|(k, e)| e.expires.is_none_or(|t| t > now) && glob_match(pat, k))
                .map(|(k, _)| k)
                .collect();
            o.array(keys.len());
            for k in keys {
                o.bulk(k);
            }
        }
        "dbsize" => o.int(store.len(now) as i64),
        "flushall" | "flushdb" => {
            store.flush();
            o.ok();
        }
        "select" => match parse_int(args[1]) {
            Some(0) => o.ok(),
            Some(_) => o.err("ERR DB index is out of range"),
            None => o.err(NOT_INT),
        },
        "command" => {
            if args.len() > 1 && args[1].eq_ignore_ascii_case(b"count") {
                o.int(28);
            } else {
                o.array(0);
            }
        }
        "config" => {
            if args[1].eq_ignore_ascii_case(b"get") && args.len() == 3 {
                let p = args[2];
                let aof: &[u8] = if store.persistence.is_some() {
                    b"yes"
                } else {
                    b"no"
                };
                let known: &[(&[u8], &[u8])] =
                    &[(b"save", b""), (b"appendonly", aof), (b"databases", b"1")];
                let hits: Vec<_> = known.iter().filter(|(n, _)| glob_match(p, n)).collect();
                o.array(hits.len() * 2);
                for (n, v) in hits {
                    o.bulk(n);
                    o.bulk(v);
                }
            } else if args[1].eq_ignore_ascii_case(b"resetstat") {
                o.ok();
            } else {
                o.err("ERR CONFIG subcommand not supported (only GET)");
            }
        }
        "info" => {
            let mut s = Vec::new();
            let _ = write!(
                Out(&mut s),
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nserver:septem-kv\r\n\r\n# Keyspace\r\ndb0:keys={},expires={},avg_ttl=0\r\n",
                store.len(now),
                store.volatile
            );
            if let Some(p) = &store.persistence {
                s.extend_from_slice(b"\r\n# Persistence\r\n");
                s.extend_from_slice(p.as_bytes());
            }
            o.bulk(&s);
        }
        "client" => {
            if args[1].eq_ignore_ascii_case(b"getname") {
                o.nil();
            } else {
                o.ok();
            }
        }
        "hello" => match args.get(1).copied() {
            None | Some([b'2']) => {
                o.array(6);
                o.bulk(b"server");
                o.bulk(b"redis");
                o.bulk(b"version");
                o.bulk(b"7.0.0");
                o.bulk(b"proto");
                o.int(2);
            }
            Some(_) => o.err("NOPROTO unsupported protocol version"),
        },
        "quit" => {
            o.ok();
            return After::Close;
        }
        "shutdown" => {
            // In memory nothing is kept; with a log every acknowledged write already
            // is: SAVE/NOSAVE make no difference. NOW and FORCE are what the server
            // does anyway.
            let known: &[&[u8]] = &[b"nosave", b"save", b"now", b"force"];
            if args[1..]
                .iter()
                .all(|a| known.iter().any(|k| a.eq_ignore_ascii_case(k)))
            {
                return After::Shutdown;
            }
            o.err("ERR syntax error");
        }
        _ => o.err("ERR internal: command in table but not implemented"),
    }
    After::Continue
}

fn set(store: &mut Store, args: &[&[u8]], now: u64, o: &mut Out<'_>) {
    let (key, value) = (args[1], args[2]);
    let (mut nx, mut xx, mut keepttl, mut get) = (false, false, false, false);
    let mut expires: Option<u64> = None;
    let mut i = 3;
    while i < args.len() {
        let a = args[i];
        let unit = if a.eq_ignore_ascii_case(b"ex") {
            Some(1000u64)
        } else if a.eq_ignore_ascii_case(b"px") {
            Some(1)
        } else {
            None
        };
        if let Some(unit) = unit {
            if expires.is_some() || keepttl || i + 1 >= args.len() {
                o.err(SYNTAX);
                return;
            }
            match parse_int(args[i + 1]) {
                Some(n) if n > 0 => {
                    expires = Some(now.saturating_add((n as u64).saturating_mul(unit)));
                }
                Some(_) => {
                    o.err("ERR invalid expire time in 'set' command");
                    return;
                }
                None => {
                    o.err(NOT_INT);
                    return;
                }
            }
            i += 2;
            continue;
        }
        if a.eq_ignore_ascii_case(b"nx") && !xx {
            nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") && !nx {
            xx = true;
        } else if a.eq_ignore_ascii_case(b"keepttl") && expires.is_none() {
            keepttl = true;
        } else if a.eq_ignore_ascii_case(b"get") {
            get = true;
        } else {
            o.err(SYNTAX);
            return;
        }
        i += 1;
    }
    let old = store.live(key, now).map(|e| (e.value.clone(), e.expires));
    if get {
        match &old {
            Some((v, _)) => o.bulk(v),
            None => o.nil(),
        }
    }
    if (nx && old.is_some()) || (xx && old.is_none()) {
        if !get {
            o.nil();
        }
        return;
    }
    let expires = if keepttl {
        old.and_then(|(_, t)| t)
    } else {
        expires
    };
    store.insert(key, value.to_vec(), expires);
    if !get {
        o.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec;

    fn run(store: &mut Store, input: &[u8], now: u64) -> String {
        let mut out = Vec::new();
        let mut args = Vec::new();
        let mut pos = 0;
        loop {
            match parse(&input[pos..], &mut args) {
                Ok(None) => break,
                Ok(Some(n)) => {
                    let a: Vec<&[u8]> = args.iter().map(|r| &input[pos..][r.clone()]).collect();
                    pos += n;
                    if !a.is_empty() && execute(store, &a, now, &mut out) == After::Close {
                        break;
                    }
                }
                Err(e) => {
                    out.extend_from_slice(b"-ERR ");
                    out.extend_from_slice(e.0.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    break;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn cmd(store: &mut Store, parts: &[&str], now: u64) -> String {
        let mut req = std::format!("*{}\r\n", parts.len());
        for p in parts {
            req += &std::format!("${}\r\n{}\r\n", p.len(), p);
        }
        run(store, req.as_bytes(), now)
    }

    #[test]
    fn multibulk_parsing_incremental() {
        let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut args = vec![];
        for i in 0..req.len() {
            assert_eq!(parse(&req[..i], &mut args), Ok(None), "prefix {i}");
        }
        assert_eq!(parse(req, &mut args), Ok(Some(req.len())));
        assert_eq!(&req[args[2].clone()], b"hello");
    }

    #[test]
    fn protocol_errors() {
        let mut a = vec![];
        assert!(parse(b"*x\r\n", &mut a).is_err());
        assert!(parse(b"*1\r\n+foo\r\n", &mut a).is_err());
        assert!(parse(b"*1\r\n$-5\r\n", &mut a).is_err());
        assert!(parse(b"*1\r\n$3\r\nfooXX", &mut a).is_err());
        assert!(parse(&[b'a'; MAX_INLINE + 1], &mut a).is_err());
    }

    #[test]
    fn inline_commands() {
        let mut s = Store::new();
        assert_eq!(run(&mut s, b"PING\r\n", 0), "+PONG\r\n");
        assert_eq!(
            run(&mut s, b"set k \"a b\"\nget k\r\n\r\n", 0),
            "+OK\r\n$3\r\na b\r\n"
        );
    }

    #[test]
    fn strings_and_counters() {
        let mut s = Store::new();
        assert_eq!(cmd(&mut s, &["GET", "k"], 0), "$-1\r\n");
        assert_eq!(cmd(&mut s, &["SET", "k", "v"], 0), "+OK\r\n");
        assert_eq!(cmd(&mut s, &["GET", "k"], 0), "$1\r\nv\r\n");
        assert_eq!(cmd(&mut s, &["SET", "k", "w", "NX"], 0), "$-1\r\n");
        assert_eq!(cmd(&mut s, &["SET", "n", "w", "XX"], 0), "$-1\r\n");
        assert_eq!(
            cmd(&mut s, &["SET", "k", "w", "XX", "GET"], 0),
            "$1\r\nv\r\n"
        );
        assert_eq!(cmd(&mut s, &["INCR", "c"], 0), ":1\r\n");
        assert_eq!(cmd(&mut s, &["INCRBY", "c", "41"], 0), ":42\r\n");
        assert_eq!(cmd(&mut s, &["DECRBY", "c", "2"], 0), ":40\r\n");
        assert_eq!(cmd(&mut s, &["DECR", "c"], 0), ":39\r\n");
        assert_eq!(
            cmd(&mut s, &["INCR", "k"], 0),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["INCRBY", "c", "x"], 0),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["SET", "big", "9223372036854775807"], 0),
            "+OK\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["INCR", "big"], 0),
            "-ERR increment or decrement would overflow\r\n"
        );
        assert_eq!(cmd(&mut s, &["MSET", "a", "1", "b", "2"], 0), "+OK\r\n");
        assert_eq!(
            cmd(&mut s, &["MGET", "a", "zz", "b"], 0),
            "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
        );
        assert_eq!(cmd(&mut s, &["EXISTS", "a", "a", "zz"], 0), ":2\r\n");
        assert_eq!(cmd(&mut s, &["DEL", "a", "zz"], 0), ":1\r\n");
        assert_eq!(cmd(&mut s, &["DBSIZE"], 0), ":4\r\n");
        assert_eq!(cmd(&mut s, &["FLUSHALL"], 0), "+OK\r\n");
        assert_eq!(cmd(&mut s, &["DBSIZE"], 0), ":0\r\n");
    }

    #[test]
    fn expiry() {
        let mut s = Store::new();
        assert_eq!(cmd(&mut s, &["SET", "k", "v", "EX", "10"], 1000), "+OK\r\n");
        assert_eq!(cmd(&mut s, &["TTL", "k"], 1000), ":10\r\n");
        assert_eq!(cmd(&mut s, &["PTTL", "k"], 2000), ":9000\r\n");
        assert_eq!(cmd(&mut s, &["GET", "k"], 11_000), "$-1\r\n");
        assert_eq!(cmd(&mut s, &["TTL", "k"], 11_000), ":-2\r\n");
        assert_eq!(cmd(&mut s, &["SET", "k", "v", "PX", "50"], 0), "+OK\r\n");
        assert_eq!(
            cmd(&mut s, &["SET", "k", "v", "EX", "0"], 0),
            "-ERR invalid expire time in 'set' command\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["SET", "k", "v", "EX"], 0),
            "-ERR syntax error\r\n"
        );
        assert_eq!(cmd(&mut s, &["SET", "p", "v"], 0), "+OK\r\n");
        assert_eq!(cmd(&mut s, &["TTL", "p"], 0), ":-1\r\n");
        assert_eq!(cmd(&mut s, &["EXPIRE", "p", "5"], 0), ":1\r\n");
        assert_eq!(cmd(&mut s, &["PEXPIRE", "nope", "5"], 0), ":0\r\n");
        assert_eq!(cmd(&mut s, &["DBSIZE"], 10), ":2\r\n");
        assert_eq!(cmd(&mut s, &["DBSIZE"], 100), ":1\r\n");
        s.sweep(10_000);
        assert_eq!(s.map.len(), 0);
        assert_eq!(s.volatile, 0);
    }

    #[test]
    fn errors_and_admin() {
        let mut s = Store::new();
        assert_eq!(
            cmd(&mut s, &["FOO", "x"], 0),
            "-ERR unknown command 'FOO', with args beginning with: 'x' \r\n"
        );
        assert_eq!(
            cmd(&mut s, &["GET"], 0),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["MSET", "a"], 0),
            "-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(cmd(&mut s, &["SELECT", "0"], 0), "+OK\r\n");
        assert_eq!(
            cmd(&mut s, &["SELECT", "1"], 0),
            "-ERR DB index is out of range\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["CONFIG", "GET", "save"], 0),
            "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
        );
        assert_eq!(
            cmd(&mut s, &["CONFIG", "GET", "appendonly"], 0),
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert_eq!(cmd(&mut s, &["COMMAND", "DOCS"], 0), "*0\r\n");
        assert!(cmd(&mut s, &["INFO"], 0).contains("redis_version"));
        assert_eq!(cmd(&mut s, &["ECHO", "hi"], 0), "$2\r\nhi\r\n");
        assert_eq!(run(&mut s, b"QUIT\r\nPING\r\n", 0), "+OK\r\n");
        let mut out = Vec::new();
        assert_eq!(
            execute(&mut s, &[b"SHUTDOWN"], 0, &mut out),
            After::Shutdown
        );
        assert_eq!(
            execute(&mut s, &[b"shutdown", b"NOSAVE", b"now"], 0, &mut out),
            After::Shutdown
        );
        assert!(out.is_empty(), "SHUTDOWN does not reply");
        assert_eq!(
            cmd(&mut s, &["SHUTDOWN", "LATER"], 0),
            "-ERR syntax error\r\n"
        );
    }

    #[test]
    fn keys_and_globs() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(!glob_match(b"key:*:x", b"key:1:y"));
        let mut s = Store::new();
        cmd(
            &mut s,
            &["MSET", "key:1", "a", "key:2", "b", "other", "c"],
            0,
        );
        assert_eq!(
            cmd(&mut s, &["KEYS", "key:*"], 0),
            "*2\r\n$5\r\nkey:1\r\n$5\r\nkey:2\r\n"
        );
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_int(b"42"), Some(42));
        assert_eq!(parse_int(b"-7"), Some(-7));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1.5",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
