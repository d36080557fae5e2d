//! `kv`: a key-value server unikernel speaking RESP2, enough for `redis-cli` and
//! `redis-benchmark`: strings, counters, expiry, MGET/MSET, KEYS, pipelining, inline
//! commands, many concurrent clients. `SHUTDOWN` closes every connection (FIN after
//! what was already sent) and ends the guest with status 0.
//!
//! In memory by default. The `kv-durable` image (`examples/kv-durable`: this program
//! with a `data` block device in its manifest) keeps an append-only log on that
//! device (see [`kv::log`]): the changes of all commands of one poll round are
//! written as one record before any of their replies is sent (group commit), so
//! every acknowledged write survives the monitor being killed when the device is
//! attached with `,sync`. The log is replayed on boot; a torn last record is cut
//! and reported.
//!
//! ```text
//! septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 kv.septem [--port 6379] [--log]
//! truncate -s 64M kv.img
//! septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 --block:data=kv.img,sync kv-durable.septem
//! ```
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::ops::Range;
use kv::log::{Disk, Log, Recovery};
use kv::{execute, parse, After, Store};
use septem_libos::block::BlockDevice;
use septem_libos::net::{
    self, Conn, Flow, Handler, Server, ServerOptions, TcpListener, TcpOptions,
};
use septem_libos::prelude::*;
use septem_libos::{env, time};

septem_libos::main!(main);

/// Stop reading from a client whose replies pile up unread beyond this.
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;

fn options() -> Result<(u16, bool), String> {
    let (mut port, mut log) = (6379u16, false);
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        match a {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .filter(|&p| p != 0)
                    .ok_or("--port needs a number from 1 to 65535")?;
            }
            "--log" => log = true,
            "-h" | "--help" => {
                println!("usage: kv [--port N] [--log]");
                septem_libos::exit(0);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (usage: kv [--port N] [--log])"
                ))
            }
        }
    }
    Ok((port, log))
}

/// Unix time in milliseconds: expiry times are absolute, so they mean the same after
/// a restart.
fn now_ms() -> u64 {
    time::wall_clock().as_millis() as u64
}

/// The `data` block device as the log's disk.
struct Dev(BlockDevice);

impl Disk for Dev {
    fn size(&self) -> u64 {
        self.0.info().size()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.0.read(offset / 512, buf).map_err(|e| e.to_string())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.0.write(offset / 512, data).map_err(|e| e.to_string())
    }
    fn flush(&mut self) -> Result<(), String> {
        self.0.flush().map_err(|e| e.to_string())
    }
}

fn open_log(store: &mut Store, now: u64) -> Result<Option<(Log<Dev>, Recovery)>, String> {
    let Ok(dev) = BlockDevice::open("data") else {
        return Ok(None);
    };
    if dev.info().read_only {
        return Err("block device data is read-only; the log needs to write (drop ,ro)".into());
    }
    let id = time::wall_clock().as_nanos() as u64 ^ time::Instant::now().as_nanos();
    let (log, rec) =
        Log::open(Dev(dev), store, now, id).map_err(|e| format!("block device data: {e}"))?;
    Ok(Some((log, rec)))
}

fn main() -> Result<(), String> {
    let (port, log) = options()?;
    let mut store = Store::new();
    let now = now_ms();
    let durable = match open_log(&mut store, now)? {
        Some((l, rec)) => {
            let mut line = format!(
                "kv: log on block device data: generation {}, region {}, replayed {} records ({} ops, {} bytes), {} keys, ",
                rec.seq,
                rec.region,
                rec.records,
                rec.ops,
                rec.bytes,
                store.len(now)
            );
            match rec.torn_at {
                Some(at) => {
                    let _ = write!(
                        line,
                        "torn tail cut: {} bytes at offset {at} ({})",
                        rec.torn_bytes, rec.torn_reason
                    );
                }
                None => line.push_str("torn tail cut: 0 bytes"),
            }
            if rec.created {
                line.push_str(" (new log)");
            }
            if rec.bad_header_slots > 0 {
                line.push_str(" (an interrupted header write was ignored)");
            }
            println!("{line}");
            store.enable_journal();
            Some((l, rec))
        }
        None => None,
    };
    let addr = net::wait_for_address(Some(core::time::Duration::from_secs(30)))
        .map_err(|e| format!("network: {e}"))?;
    let tcp = TcpOptions {
        rx_buffer: 64 * 1024,
        tx_buffer: 64 * 1024,
        backlog: 256,
        nodelay: true,
    };
    let listener = TcpListener::bind_with(port, tcp).map_err(|e| format!("port {port}: {e}"))?;
    let mut server = Server::new(
        listener,
        ServerOptions {
            max_pending_output: MAX_PENDING_OUTPUT,
            tick: Some(core::time::Duration::from_secs(1)),
            log,
            name: "kv",
            ..ServerOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    println!(
        "kv: listening on {addr}:{port} (RESP2, {})",
        if durable.is_some() {
            "durable"
        } else {
            "in memory"
        }
    );
    let mut kv = Kv {
        store,
        args: Vec::new(),
        now,
        last_sweep: now,
        log,
        durable,
    };
    kv.describe();
    server.run(&mut kv).map_err(|e| e.to_string())
}

struct Kv {
    store: Store,
    args: Vec<Range<usize>>,
    now: u64,
    last_sweep: u64,
    log: bool,
    durable: Option<(Log<Dev>, Recovery)>,
}

impl Kv {
    /// Refreshes INFO's `# Persistence` section.
    fn describe(&mut self) {
        let Some((l, rec)) = &self.durable else {
            return;
        };
        let mut s = self.store.persistence.take().unwrap_or_default();
        s.clear();
        let _ = write!(
            s,
            "aof_enabled:1\r\nseptem_log_generation:{}\r\nseptem_log_bytes:{}\r\nseptem_log_capacity:{}\r\nseptem_log_replayed_records:{}\r\nseptem_log_torn_bytes:{}\r\nseptem_log_commits:{}\r\nseptem_log_compactions:{}\r\n",
            l.seq(),
            l.len(),
            l.capacity(),
            rec.records,
            rec.torn_bytes,
            l.stats.commits,
            l.stats.compactions
        );
        self.store.persistence = Some(s);
    }
}

impl Handler for Kv {
    type State = ();

    fn tick(&mut self) {
        self.now = now_ms();
        if self.now.saturating_sub(self.last_sweep) >= 1000 {
            self.store.sweep(self.now);
            self.last_sweep = self.now;
        }
    }

    fn input(&mut self, c: &mut Conn<()>) -> Flow {
        let mut used = 0;
        let mut argv: Vec<&[u8]> = Vec::new();
        let mut flow = Flow::Continue;
        while flow == Flow::Continue {
            let buf = &c.input[used..];
            match parse(buf, &mut self.args) {
                Ok(None) => break,
                Ok(Some(n)) => {
                    argv.clear();
                    argv.extend(self.args.iter().map(|r| &buf[r.clone()]));
                    used += n;
                    if argv.is_empty() {
                        continue;
                    }
                    if self.log {
                        println!("{}: {}", c.peer, String::from_utf8_lossy(argv[0]));
                    }
                    match execute(&mut self.store, &argv, self.now, &mut c.output) {
                        After::Continue => {}
                        After::Close => flow = Flow::Close,
                        After::Shutdown => {
                            println!("kv: SHUTDOWN from {}", c.peer);
                            flow = Flow::Shutdown;
                        }
                    }
                }
                Err(e) => {
                    c.output.extend_from_slice(b"-ERR ");
                    c.output.extend_from_slice(e.0.as_bytes());
                    c.output.extend_from_slice(b"\r\n");
                    flow = Flow::Close;
                }
            }
        }
        if flow == Flow::Continue {
            c.input.drain(..used);
        }
        flow
    }

    /// Group commit: the changes of every command of this round, one record, one
    /// write, before any reply of the round leaves.
    fn before_send(&mut self) -> Result<(), String> {
        let Some((log, _)) = &mut self.durable else {
            return Ok(());
        };
        let ops = self.store.take_journal();
        if ops.is_empty() {
            self.store.return_journal(ops);
            return Ok(());
        }
        let r = log.commit(&ops, &self.store, self.now);
        self.store.return_journal(ops);
        r.map_err(|e| format!("kv: log: {e}; stopping without answering this round"))?;
        self.describe();
        Ok(())
    }
}
