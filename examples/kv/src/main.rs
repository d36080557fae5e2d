//! `kv`: an in-memory key-value server unikernel speaking RESP2, enough for `redis-cli`
//! and `redis-benchmark`: strings, counters, expiry, MGET/MSET, KEYS, pipelining,
//! inline commands, many concurrent clients. `SHUTDOWN` closes every connection
//! (FIN after what was already sent) and ends the guest with status 0.
//!
//! ```text
//! septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 kv.septem [--port 6379] [--log]
//! ```
#![no_std]
#![no_main]

use core::ops::Range;
use kv::{execute, parse, After, Store};
use septem_libos::net::{self, Error, Interest, Poller, TcpListener, TcpOptions, TcpStream, Token};
use septem_libos::prelude::*;
use septem_libos::{env, time};

septem_libos::main!(main);

/// Stop reading from a client whose replies pile up unread beyond this.
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    peer: net::SocketAddrV4,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    closing: bool,
    /// The client sent SHUTDOWN.
    shutdown: bool,
    interest: Interest,
}

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

fn now_ms() -> u64 {
    time::Instant::now().as_nanos() / 1_000_000
}

fn main() -> Result<(), String> {
    let (port, log) = options()?;
    let addr = net::wait_for_address(Some(core::time::Duration::from_secs(30)))
        .map_err(|e| format!("network: {e}"))?;
    let tcp = TcpOptions {
        rx_buffer: 64 * 1024,
        tx_buffer: 64 * 1024,
        backlog: 256,
        nodelay: true,
    };
    let mut listener =
        TcpListener::bind_with(port, tcp).map_err(|e| format!("port {port}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let poller = Poller::new().map_err(|e| e.to_string())?;
    poller
        .register(&listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    println!("kv: listening on {addr}:{port} (RESP2)");

    let mut store = Store::new();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Vec::new();
    let mut args: Vec<Range<usize>> = Vec::new();
    let mut last_sweep = now_ms();
    loop {
        poller
            .wait(&mut events, Some(core::time::Duration::from_secs(1)))
            .map_err(|e| format!("poll: {e}"))?;
        let now = now_ms();
        if now.saturating_sub(last_sweep) >= 1000 {
            store.sweep(now);
            last_sweep = now;
        }
        for ev in &events {
            if ev.token == LISTENER {
                accept_all(&listener, &poller, &mut conns, &mut free, log);
                continue;
            }
            let i = ev.token.0;
            let Some(Some(c)) = conns.get_mut(i) else {
                continue;
            };
            let keep = service(c, &mut store, &mut args, now, log)
                && update_interest(c, &poller, ev.token);
            if c.shutdown {
                println!("kv: SHUTDOWN from {}", c.peer);
                close_all(&mut conns);
                return Ok(());
            }
            if !keep {
                if log {
                    println!("{}: closed", c.peer);
                }
                conns[i] = None;
                free.push(i);
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    poller: &Poller,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    log: bool,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let i = free.pop().unwrap_or_else(|| {
                    conns.push(None);
                    conns.len() - 1
                });
                if poller
                    .register(&stream, Token(i), Interest::READABLE)
                    .is_err()
                {
                    free.push(i);
                    continue;
                }
                if log {
                    println!("{peer}: connected");
                }
                conns[i] = Some(Conn {
                    stream,
                    peer,
                    input: Vec::new(),
                    output: Vec::new(),
                    sent: 0,
                    closing: false,
                    shutdown: false,
                    interest: Interest::READABLE,
                });
            }
            Err(Error::WouldBlock) => return,
            Err(e) => {
                eprintln!("kv: accept: {e}");
                return;
            }
        }
    }
}

fn service(
    c: &mut Conn,
    store: &mut Store,
    args: &mut Vec<Range<usize>>,
    now: u64,
    log: bool,
) -> bool {
    let mut eof = false;
    while !c.closing && c.output.len() - c.sent < MAX_PENDING_OUTPUT {
        let input = &mut c.input;
        match c.stream.read_with(|data| {
            input.extend_from_slice(data);
            (data.len(), data.len())
        }) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(_) => run_commands(c, store, args, now, log),
            Err(Error::WouldBlock) => break,
            Err(_) => return false,
        }
    }
    if eof {
        c.closing = true;
        c.input.clear();
    }
    while c.sent < c.output.len() {
        match c.stream.write(&c.output[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(Error::WouldBlock) => break,
            Err(_) => return false,
        }
    }
    if c.sent == c.output.len() {
        c.output.clear();
        c.sent = 0;
        if c.closing {
            return false;
        }
    }
    true
}

fn run_commands(
    c: &mut Conn,
    store: &mut Store,
    args: &mut Vec<Range<usize>>,
    now: u64,
    log: bool,
) {
    let mut used = 0;
    let mut argv: Vec<&[u8]> = Vec::new();
    while !c.closing {
        let buf = &c.input[used..];
        match parse(buf, args) {
            Ok(None) => break,
            Ok(Some(n)) => {
                argv.clear();
                argv.extend(args.iter().map(|r| &buf[r.clone()]));
                used += n;
                if argv.is_empty() {
                    continue;
                }
                if log {
                    println!("{}: {}", c.peer, String::from_utf8_lossy(argv[0]));
                }
                match execute(store, &argv, now, &mut c.output) {
                    After::Continue => {}
                    After::Close => c.closing = true,
                    After::Shutdown => {
                        c.closing = true;
                        c.shutdown = true;
                    }
                }
            }
            Err(e) => {
                c.output.extend_from_slice(b"-ERR ");
                c.output.extend_from_slice(e.0.as_bytes());
                c.output.extend_from_slice(b"\r\n");
                c.closing = true;
            }
        }
    }
    if c.closing {
        c.input.clear();
    } else {
        c.input.drain(..used);
    }
}

/// Closes every connection (FIN after the data already queued in the stack) and runs
/// the stack until the peers have closed too, for at most a second.
fn close_all(conns: &mut [Option<Conn>]) {
    for c in conns.iter().flatten() {
        let _ = c.stream.shutdown(net::Shutdown::Write);
    }
    let start = time::Instant::now();
    while conns.iter().flatten().any(|c| c.stream.is_open())
        && start.elapsed() < core::time::Duration::from_secs(1)
    {
        let _ = net::poll(Some(core::time::Duration::from_millis(10)));
    }
}

fn update_interest(c: &mut Conn, poller: &Poller, token: Token) -> bool {
    let want = if c.sent < c.output.len() {
        if c.closing || c.output.len() - c.sent >= MAX_PENDING_OUTPUT {
            Interest::WRITABLE
        } else {
            Interest::BOTH
        }
    } else {
        Interest::READABLE
    };
    if want != c.interest {
        if poller.reregister(&c.stream, token, want).is_err() {
            return false;
        }
        c.interest = want;
    }
    true
}
