//! `httpd`: an HTTP/1.1 server unikernel serving a small built-in site.
//!
//! One event loop over non-blocking sockets and a [`Poller`]: many concurrent
//! connections, keep-alive, pipelined requests answered in order, `HEAD`, `GET /health`.
//! Requests that are malformed or over the limits get 400/413/414/431/501/505 and the
//! connection closes after the answer.
//!
//! ```text
//! septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 httpd.septem [--port 80] [--log]
//! ```
#![no_std]
#![no_main]

use httpd::{http_date, parse, respond, respond_error, Parsed};
use septem_libos::net::{self, Error, Interest, Poller, TcpListener, TcpOptions, TcpStream, Token};
use septem_libos::prelude::*;
use septem_libos::{env, time};

septem_libos::main!(main);

/// Stop reading from a client whose answers pile up unread beyond this.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    peer: net::SocketAddrV4,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    /// Close once the output is sent (Connection: close, an error, or end of input).
    closing: bool,
    interest: Interest,
}

struct Options {
    port: u16,
    log: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        port: 80,
        log: false,
    };
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        match a {
            "--port" => {
                o.port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .filter(|&p| p != 0)
                    .ok_or("--port needs a number from 1 to 65535")?;
            }
            "--log" => o.log = true,
            "-h" | "--help" => {
                println!("usage: httpd [--port N] [--log]");
                septem_libos::exit(0);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (usage: httpd [--port N] [--log])"
                ))
            }
        }
    }
    Ok(o)
}

fn main() -> Result<(), String> {
    let opts = options()?;
    let addr = net::wait_for_address(Some(core::time::Duration::from_secs(30)))
        .map_err(|e| format!("network: {e}"))?;
    let tcp = TcpOptions {
        rx_buffer: 16 * 1024,
        tx_buffer: 64 * 1024,
        backlog: 256,
        nodelay: true,
    };
    let mut listener =
        TcpListener::bind_with(opts.port, tcp).map_err(|e| format!("port {}: {e}", opts.port))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let poller = Poller::new().map_err(|e| e.to_string())?;
    poller
        .register(&listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    println!("httpd: listening on http://{addr}:{}/", opts.port);

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Vec::new();
    let mut date_buf = [0u8; 29];
    loop {
        poller
            .wait(&mut events, None)
            .map_err(|e| format!("poll: {e}"))?;
        let date = http_date(time::wall_clock().as_secs(), &mut date_buf);
        for ev in &events {
            if ev.token == LISTENER {
                accept_all(&listener, &poller, &mut conns, &mut free, opts.log);
                continue;
            }
            let i = ev.token.0;
            let Some(Some(c)) = conns.get_mut(i) else {
                continue;
            };
            let keep = service(c, date, opts.log) && update_interest(c, &poller, ev.token);
            if !keep {
                if opts.log {
                    println!("{}: closed", c.peer);
                }
                conns[i] = None; // dropping the stream closes it gracefully
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
                    interest: Interest::READABLE,
                });
            }
            Err(Error::WouldBlock) => return,
            Err(e) => {
                eprintln!("httpd: accept: {e}");
                return;
            }
        }
    }
}

/// Reads what arrived, answers complete requests, sends what it can. Returns false
/// when the connection is done.
fn service(c: &mut Conn, date: &str, log: bool) -> bool {
    // Read while there is input and room for answers.
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
            Ok(_) => {
                if !answer(c, date, log) {
                    break;
                }
            }
            Err(Error::WouldBlock) => break,
            Err(_) => return false,
        }
    }
    if eof {
        c.closing = true;
        c.input.clear();
    }
    // Send.
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

/// Answers the complete requests at the front of the input. Returns false once the
/// connection is to close after the answers.
fn answer(c: &mut Conn, date: &str, log: bool) -> bool {
    let mut used = 0;
    while !c.closing {
        match parse(&c.input[used..]) {
            Parsed::Incomplete => break,
            Parsed::Request(req, n) => {
                used += n;
                let before = c.output.len();
                if !respond(&req, &mut c.output, date) {
                    c.closing = true;
                }
                if log {
                    let status = c.output.get(before + 9..before + 12).unwrap_or(b"???");
                    println!(
                        "{} {:?} {} {}",
                        c.peer,
                        req.method,
                        req.path,
                        core::str::from_utf8(status).unwrap_or("?")
                    );
                }
            }
            Parsed::Error(status) => {
                respond_error(status, &mut c.output, date);
                if log {
                    println!("{} bad request: {}", c.peer, status.code());
                }
                c.closing = true;
            }
        }
    }
    if c.closing {
        c.input.clear();
    } else {
        c.input.drain(..used);
    }
    !c.closing
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
