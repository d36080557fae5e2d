//! Durable `kv` under `kill -9`, on both backends: `kv-durable` runs on a fresh 64 MiB
//! disk attached with `,sync`; client threads in the test's network namespace write
//! (pipelined SETs of ~2 KiB values over a small key space, so the log compacts, and
//! INCRs), recording every write whose reply arrived as acknowledged; the monitor (and
//! on KVM its forked child) is killed with SIGKILL at a random moment; kv restarts on
//! the same disk and every acknowledged write must be there: each key holds a value
//! at least as new as its last acknowledged one (values carry a per-client sequence
//! number and a checksum-like pattern), counters are at least the last acknowledged
//! value, and INFO reports a consistent log (records replayed, torn bytes cut,
//! compactions). Needs root and taps; skips with a reason otherwise.

use septem_tests::net::{skip_unless_net, NetNs};
use septem_tests::{backend_tests, bin, example, Backend};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ADDR: &str = "10.0.7.2:6379";
/// Kills per backend (50 in all); the KVM backend needs seconds per kill here (VM teardown, boot).
fn iterations(b: Backend) -> usize {
    match b {
        Backend::Seccomp => 40,
        Backend::Kvm => 10,
    }
}
const CLIENTS: usize = 4;
const KEYS_PER_CLIENT: u64 = 600;
const VALUE_LEN: usize = 2000;

/// The monitor process; killed (with its children) and reaped on drop.
struct Monitor {
    child: Option<Child>,
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

impl Monitor {
    fn start(ns: &NetNs, b: Backend, image: &Path, disk: &Path) -> Monitor {
        let block = format!("--block:data={},sync", disk.display());
        let args = [
            "--backend",
            b.name(),
            "--net:service=tap0",
            "--net-ip:service=10.0.7.2/24",
            &block,
            image.to_str().expect("utf-8 path"),
        ];
        let child = ns
            .command(&bin("septem-run"), &args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn septem-run");
        Monitor { child: Some(child) }
    }

    /// SIGKILL to the monitor and every process it forked (the KVM backend's child
    /// runs the VM and would otherwise die only when it notices the parent is gone),
    /// and waits until all are gone: nothing writes to the disk after this returns.
    fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let kids = children_of(pid);
        for k in &kids {
            // SAFETY: kill(2) on a pid we just read as our child's child.
            unsafe { libc::kill(*k as i32, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while kids.iter().any(|&k| alive(k)) {
            assert!(
                Instant::now() < deadline,
                "the monitor's child outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A RESP connection with timeouts.
struct Resp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Resp {
    fn connect(timeout: Duration) -> std::io::Result<Resp> {
        let addr: SocketAddr = ADDR.parse().expect("address");
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Resp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            b.extend_from_slice(a);
            b.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&b)
    }

    /// One reply: `+s`, `-e`, `:n` as text, a bulk as its bytes (None for nil), an
    /// array flattened into `Multi`.
    fn reply(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().expect("integer reply")),
            "$" => {
                let n: i64 = rest.parse().expect("bulk length");
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            "*" => {
                let n: usize = rest.parse().expect("array length");
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.reply()?);
                }
                Reply::Multi(v)
            }
            _ => panic!("bad reply line {line:?}"),
        })
    }

    fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.send(args)?;
        self.reply()
    }
}

#[derive(Debug)]
enum Reply {
    Simple(String),
    Error(#[allow(dead_code)] String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Multi(Vec<Reply>),
}

/// The value client `c` writes with global sequence number `seq`: a header and a
/// pattern derived from both, so a damaged value is recognized.
fn value(c: usize, seq: u64) -> Vec<u8> {
    let mut v = format!("{c}:{seq}:").into_bytes();
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c as u64;
    while v.len() < VALUE_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// The sequence number of a value, if it is intact and from client `c`.
fn seq_of(c: usize, v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.splitn(3, ':');
    let who: usize = parts.next()?.parse().ok()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    (who == c && value(c, seq) == v).then_some(seq)
}

/// What was acknowledged, per client: last acknowledged sequence number per key,
/// and the highest acknowledged counter value.
#[derive(Default, Clone)]
struct Acked {
    keys: HashMap<u64, u64>,
    counter: i64,
    writes: u64,
}

/// One client: pipelines of 8 SETs and an INCR until the connection dies or `stop`.
/// `socks` gets a handle of the connection, for the test to shut it down once the
/// server is dead (no FIN or RST comes from a killed guest).
fn client(
    c: usize,
    mut seq: u64,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    socks: Arc<Mutex<Vec<TcpStream>>>,
) -> u64 {
    let Ok(mut conn) = Resp::connect(Duration::from_secs(2)) else {
        return seq;
    };
    if let Ok(s) = conn.w.try_clone() {
        socks.lock().expect("socks").push(s);
    }
    let counter = format!("ctr{c}");
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        for _ in 0..8 {
            seq += 1;
            let key = seq % KEYS_PER_CLIENT;
            let k = format!("c{c}:{key}");
            if conn.send(&[b"SET", k.as_bytes(), &value(c, seq)]).is_err() {
                return seq;
            }
            batch.push((key, seq));
        }
        if conn.send(&[b"INCR", counter.as_bytes()]).is_err() {
            return seq;
        }
        for (key, s) in batch {
            match conn.reply() {
                Ok(Reply::Simple(ok)) if ok == "OK" => {
                    let mut a = acked.lock().expect("acked");
                    a.keys.insert(key, s);
                    a.writes += 1;
                }
                Ok(r) => panic!("SET answered {r:?}"),
                Err(_) => return seq,
            }
        }
        match conn.reply() {
            Ok(Reply::Int(n)) => {
                let mut a = acked.lock().expect("acked");
                assert!(
                    n > a.counter,
                    "INCR went backwards: {n} after {}",
                    a.counter
                );
                a.counter = n;
                a.writes += 1;
            }
            Ok(r) => panic!("INCR answered {r:?}"),
            Err(_) => return seq,
        }
    }
    seq
}

fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO lacks {name}:\n{info}"))
        .trim()
        .parse()
        .expect("number")
}

/// Connects (retrying while kv boots and replays) and checks every acknowledged
/// write. Returns (keys checked, INFO text).
fn verify(acked: &[Acked]) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        if let Ok(mut c) = Resp::connect(Duration::from_millis(200)) {
            if matches!(c.call(&[b"PING"]), Ok(Reply::Simple(ref p)) if p == "PONG") {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "kv did not come back");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut checked = 0;
    for (c, a) in acked.iter().enumerate() {
        let keys: Vec<(u64, u64)> = a.keys.iter().map(|(&k, &s)| (k, s)).collect();
        for chunk in keys.chunks(200) {
            let names: Vec<String> = chunk.iter().map(|(k, _)| format!("c{c}:{k}")).collect();
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(names.iter().map(|n| n.as_bytes()));
            let Reply::Multi(vals) = conn.call(&args).expect("MGET") else {
                panic!("MGET answered no array");
            };
            for ((k, want), got) in chunk.iter().zip(vals) {
                let Reply::Bulk(Some(v)) = got else {
                    panic!("acknowledged key c{c}:{k} (seq {want}) is missing");
                };
                let seq = seq_of(c, &v).unwrap_or_else(|| {
                    panic!("key c{c}:{k} holds a damaged value ({} bytes)", v.len())
                });
                assert!(
                    seq >= *want,
                    "key c{c}:{k} holds seq {seq}, older than the acknowledged {want}"
                );
                checked += 1;
            }
        }
        if a.counter > 0 {
            let Reply::Bulk(Some(v)) = conn
                .call(&[b"GET", format!("ctr{c}").as_bytes()])
                .expect("GET")
            else {
                panic!("acknowledged counter ctr{c} is missing");
            };
            let n: i64 = String::from_utf8_lossy(&v).parse().expect("counter");
            assert!(
                n >= a.counter,
                "ctr{c} is {n}, below the acknowledged {}",
                a.counter
            );
            checked += 1;
        }
    }
    let Reply::Bulk(Some(info)) = conn.call(&[b"INFO"]).expect("INFO") else {
        panic!("INFO answered no bulk");
    };
    (checked, String::from_utf8_lossy(&info).into_owned())
}

backend_tests!(kv_acknowledged_writes_survive_kill_9, |b| {
    if skip_unless_net() {
        return;
    }
    let image = example("kv-durable");
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("kv.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("create the disk image");
    let ns = NetNs::new();
    ns.add_tap("tap0", 1500, true);
    ns.exec_ok(&["ip", "addr", "add", "10.0.7.1/24", "dev", "tap0"]);

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    eprintln!("kv_crash ({}): seed {seed}", b.name());
    let acked: Vec<Arc<Mutex<Acked>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut seqs = [0u64; CLIENTS];
    let (mut total_checked, mut torn_total, mut torn_boots) = (0usize, 0u64, 0usize);
    let mut last_generation = 0;
    let started = Instant::now();
    let iters = iterations(b);
    for it in 0..=iters {
        let mut mon = Monitor::start(&ns, b, &image, &disk);
        let snapshot: Vec<Acked> = acked
            .iter()
            .map(|a| a.lock().expect("acked").clone())
            .collect();
        let (checked, info) = ns.on_thread(move || verify(&snapshot));
        total_checked += checked;
        let torn = info_field(&info, "septem_log_torn_bytes");
        let generation = info_field(&info, "septem_log_generation");
        let replayed = info_field(&info, "septem_log_replayed_records");
        assert!(
            generation >= last_generation,
            "the log generation went back\n{info}"
        );
        last_generation = generation;
        if it > 0 && acked.iter().any(|a| a.lock().expect("acked").writes > 0) {
            assert!(
                replayed > 0,
                "nothing replayed after acknowledged writes\n{info}"
            );
        }
        torn_total += torn;
        torn_boots += usize::from(torn > 0);
        if it == iters {
            break;
        }
        // Write from all clients, kill at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let socks: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (a, s, seq, socks) = (acked[c].clone(), stop.clone(), seqs[c], socks.clone());
                let path = format!("/run/netns/{}", ns.name());
                std::thread::spawn(move || {
                    let f = std::fs::File::open(&path).expect("netns");
                    use std::os::fd::AsRawFd;
                    // SAFETY: joining a network namespace affects only this thread.
                    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns");
                    client(c, seq, a, s, socks)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + next(400)));
        mon.kill9();
        stop.store(true, Ordering::Relaxed);
        // Replies that were in flight are lost with the guest: unblock the readers.
        std::thread::sleep(Duration::from_millis(20));
        for s in socks.lock().expect("socks").iter() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for (c, h) in handles.into_iter().enumerate() {
            seqs[c] = h.join().expect("client thread");
        }
    }
    let writes: u64 = acked.iter().map(|a| a.lock().expect("acked").writes).sum();
    eprintln!(
        "kv_crash ({}): {iters} kills in {:.1?}, {writes} acknowledged writes, {total_checked} key checks, log generation {last_generation}, torn tails cut on {torn_boots} boots ({torn_total} bytes), 0 failures",
        b.name(),
        started.elapsed()
    );
    assert!(writes > 1000, "too few writes to mean anything ({writes})");
});
