//! `httpd`: an HTTP/1.1 server unikernel serving a small built-in site, or a file tree
//! from a block device.
//!
//! One event loop (the libOS's [`Server`]) over non-blocking sockets: many concurrent
//! connections, keep-alive, pipelined requests answered in order, `HEAD`,
//! `GET /health`. Requests that are malformed or over the limits get
//! 400/413/414/431/501/505 and the connection closes after the answer.
//!
//! The `httpd-www` image (`examples/httpd-www`: this program with a `www` block device
//! in its manifest) serves the tar archive attached as `www` (made by `septem-build
//! disk DIR -o site.img`): files by path with a content type from the extension,
//! `index.html` for directories, `Last-Modified` and `Content-Length` from the
//! archive, large files streamed in 64 KiB pieces, 403 for `..`, 404 for what is
//! neither in the tree nor in the built-in site.
//!
//! ```text
//! septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 httpd.septem [--port 80] [--log]
//! septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 --block:www=site.img,ro httpd-www.septem
//! ```
#![no_std]
#![no_main]

use httpd::{
    content_type, file_path, http_date, parse, respond, respond_error, write_file_head, FilePath,
    Method, Parsed, Request, Status,
};
use septem_libos::block::BlockDevice;
use septem_libos::fs::{self, Fs};
use septem_libos::net::{
    self, Conn, Flow, Handler, Server, ServerOptions, TcpListener, TcpOptions,
};
use septem_libos::prelude::*;
use septem_libos::{env, time};

septem_libos::main!(main);

/// Stop reading from a client whose answers pile up unread beyond this.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// A file is sent in pieces of this size.
const CHUNK: usize = 64 * 1024;

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
    let site = match BlockDevice::open("www") {
        Ok(dev) => {
            let tree = Fs::new(dev).map_err(|e| format!("block device www: {e}"))?;
            println!(
                "httpd: serving {} entries from block device www",
                tree.len()
            );
            Some(tree)
        }
        Err(_) => None,
    };
    let addr = net::wait_for_address(Some(core::time::Duration::from_secs(30)))
        .map_err(|e| format!("network: {e}"))?;
    let tcp = TcpOptions {
        rx_buffer: 16 * 1024,
        tx_buffer: 64 * 1024,
        backlog: 256,
        nodelay: true,
    };
    let listener =
        TcpListener::bind_with(opts.port, tcp).map_err(|e| format!("port {}: {e}", opts.port))?;
    let mut server = Server::new(
        listener,
        ServerOptions {
            max_pending_output: MAX_PENDING_OUTPUT,
            tick: None,
            log: opts.log,
            name: "httpd",
            ..ServerOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    println!("httpd: listening on http://{addr}:{}/", opts.port);
    let mut http = Http {
        log: opts.log,
        site,
        date_buf: [0u8; 29],
        date_len: 0,
        chunk: vec![0u8; CHUNK],
    };
    server.run(&mut http).map_err(|e| e.to_string())
}

struct Http {
    log: bool,
    site: Option<Fs<BlockDevice>>,
    date_buf: [u8; 29],
    date_len: usize,
    chunk: Vec<u8>,
}

/// A file being sent.
#[derive(Default)]
struct Sending {
    file: Option<fs::File<BlockDevice>>,
    pos: u64,
    /// Close the connection once the file is sent (`Connection: close`).
    close_after: bool,
}

impl Http {
    fn date(&self) -> &str {
        core::str::from_utf8(&self.date_buf[..self.date_len]).unwrap_or("")
    }

    /// Answers from the file tree; `false` when the tree does not have the path (the
    /// built-in site answers then).
    fn answer_from_tree(
        &self,
        req: &Request<'_>,
        out: &mut Vec<u8>,
        state: &mut Sending,
        streaming: &mut bool,
    ) -> bool {
        let Some(site) = &self.site else {
            return false;
        };
        let (path, dir) = match file_path(req.path) {
            FilePath::Path { path, dir } => (path, dir),
            FilePath::Refused(status) => {
                error_page(status, req, out, self.date());
                return true;
            }
        };
        let mut path = path;
        let mut meta = site.metadata(&path);
        if dir || meta.is_ok_and(|m| m.is_dir()) {
            if meta.is_ok_and(|m| !m.is_dir()) {
                // `/file.txt/`: a file is not a directory.
                return false;
            }
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str("index.html");
            meta = site.metadata(&path);
        }
        let meta = match meta {
            Ok(m) if m.is_file() => m,
            _ => return false,
        };
        let Ok(file) = site.open(&path) else {
            return false;
        };
        write_file_head(
            out,
            content_type(&path),
            meta.size,
            meta.mtime,
            req.keep_alive,
            self.date(),
        );
        if req.method == Method::Get && meta.size > 0 {
            *state = Sending {
                file: Some(file),
                pos: 0,
                close_after: false,
            };
            *streaming = true;
        }
        true
    }
}

fn error_page(status: Status, req: &Request<'_>, out: &mut Vec<u8>, date: &str) {
    let body = format!("{} {}\n", status.code(), status.reason());
    httpd::write_response(
        out,
        status,
        "text/plain",
        body.as_bytes(),
        req.method == Method::Head,
        req.keep_alive,
        date,
    );
}

impl Handler for Http {
    type State = Sending;

    fn tick(&mut self) {
        let n = http_date(time::wall_clock().as_secs(), &mut self.date_buf).len();
        self.date_len = n;
    }

    /// Answers the complete requests at the front of the input, until one is
    /// answered with a file (the rest wait until it is sent).
    fn input(&mut self, c: &mut Conn<Sending>) -> Flow {
        let mut used = 0;
        let mut flow = Flow::Continue;
        while flow == Flow::Continue && !c.streaming {
            match parse(&c.input[used..]) {
                Parsed::Incomplete => break,
                Parsed::Request(req, n) => {
                    used += n;
                    let before = c.output.len();
                    let served = req.method != Method::Other
                        && self.answer_from_tree(
                            &req,
                            &mut c.output,
                            &mut c.state,
                            &mut c.streaming,
                        );
                    if !served && !respond(&req, &mut c.output, self.date()) {
                        flow = Flow::Close;
                    }
                    let close_after_file = served && !req.keep_alive && c.streaming;
                    if served && !req.keep_alive && !c.streaming {
                        flow = Flow::Close;
                    }
                    if self.log {
                        let status = c.output.get(before + 9..before + 12).unwrap_or(b"???");
                        println!(
                            "{} {:?} {} {}",
                            c.peer,
                            req.method,
                            req.path,
                            core::str::from_utf8(status).unwrap_or("?")
                        );
                    }
                    if close_after_file {
                        // Close once the file is sent; requests pipelined after a
                        // `Connection: close` one are dropped.
                        c.state.close_after = true;
                        c.input.clear();
                        return Flow::Continue;
                    }
                }
                Parsed::Error(status) => {
                    respond_error(status, &mut c.output, self.date());
                    if self.log {
                        println!("{} bad request: {}", c.peer, status.code());
                    }
                    flow = Flow::Close;
                }
            }
        }
        if flow == Flow::Continue {
            c.input.drain(..used);
        }
        flow
    }

    fn more_output(&mut self, c: &mut Conn<Sending>) -> Flow {
        let (pos, close_after) = (c.state.pos, c.state.close_after);
        let Some(file) = &c.state.file else {
            c.streaming = false;
            return Flow::Continue;
        };
        let left = file.len().saturating_sub(pos);
        let n = (left as usize).min(CHUNK);
        match file.read_at(pos, &mut self.chunk[..n]) {
            Ok(got) if got == n => {
                c.output.extend_from_slice(&self.chunk[..n]);
                c.state.pos += n as u64;
                if pos + n as u64 >= file.len() {
                    c.state = Sending::default();
                    c.streaming = false;
                    if close_after {
                        return Flow::Close;
                    }
                }
                Flow::Continue
            }
            _ => {
                // The length was promised: a short body must end the connection.
                eprintln!("httpd: reading a file for {} failed", c.peer);
                c.state = Sending::default();
                c.streaming = false;
                Flow::Close
            }
        }
    }
}
