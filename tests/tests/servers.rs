//! The example servers end to end, on both backends: `httpd` and `kv` run by
//! `septem-run` on a tap in a network namespace the test creates (guest 10.0.7.2, host
//! side 10.0.7.1), driven by the real clients — `curl`, `redis-cli`,
//! `redis-benchmark`, `ping` — run inside the namespace, and by small raw-socket
//! clients on a thread that joined it: pages and commands, keep-alive, pipelining,
//! 200 connections at once, misbehaving clients (the server answers them with an error,
//! closes, and keeps serving the others), and a clean exit when the guest stops.
//! Tests needing root, taps or a client tool skip with a printed reason.

use septem_tests::net::{skip_unless_net, Finished, NetNs, Running};
use septem_tests::{backend_tests, bin, example, root, Backend};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GUEST_IP: &str = "10.0.7.2";
const HTTP: &str = "10.0.7.2:80";
const RESP: &str = "10.0.7.2:6379";
/// Every client read gives up after this (the KVM backend is the slower one).
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Prints why and returns true unless taps, namespaces and every tool in `tools`
/// (program, Debian package) are here.
fn skip_unless(tools: &[(&str, &str)]) -> bool {
    if skip_unless_net() {
        return true;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (tool, package) in tools {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            eprintln!("SKIPPED: `{tool}` is missing (apt-get install {package})");
            return true;
        }
    }
    false
}

const CURL: (&str, &str) = ("curl", "curl");
const REDIS_CLI: (&str, &str) = ("redis-cli", "redis-tools");
const REDIS_BENCHMARK: (&str, &str) = ("redis-benchmark", "redis-tools");
const PING: (&str, &str) = ("ping", "iputils-ping");

/// A server guest on `tap0` of its own namespace. Fields drop in order: the guest is
/// killed before the namespace (and with it the tap) is deleted.
struct Server {
    guest: Running,
    ns: NetNs,
}

fn start_in(ns: &NetNs, b: Backend, image: &Path, guest_args: &[&str]) -> Running {
    let image = image.to_str().expect("utf-8 path");
    let mut args = vec![
        "--backend",
        b.name(),
        "--net:service=tap0",
        "--net-ip:service=10.0.7.2/24",
        "--net-gw:service=10.0.7.1",
        image,
        "--",
    ];
    args.extend_from_slice(guest_args);
    Running::spawn(ns.command(&bin("septem-run"), &args))
}

impl Server {
    /// Starts `image` and waits until `probe` (run against `addr`) succeeds.
    fn start(b: Backend, image: &Path, addr: &str, probe: fn(&mut TcpStream) -> bool) -> Server {
        let ns = NetNs::new();
        ns.add_tap("tap0", 1500, true);
        ns.exec_ok(&["ip", "addr", "add", "10.0.7.1/24", "dev", "tap0"]);
        let guest = start_in(&ns, b, image, &[]);
        let server = Server { guest, ns };
        server.wait_until_serving(addr, probe);
        server
    }

    fn httpd(b: Backend) -> Server {
        Server::start(b, &example("httpd"), HTTP, |s| {
            let r = request(
                s,
                b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            );
            r.starts_with(b"HTTP/1.1 200")
        })
    }

    fn kv(b: Backend) -> Server {
        Server::start(b, &example("kv"), RESP, |s| {
            request(s, b"PING\r\n") == b"+PONG\r\n"
        })
    }

    /// Polls `addr` (a bounded number of times) until `probe` succeeds; on failure
    /// reports what the guest printed.
    fn wait_until_serving(self: &Server, addr: &str, probe: fn(&mut TcpStream) -> bool) {
        let addr: SocketAddr = addr.parse().expect("address");
        let up = self.ns.on_thread(move || {
            for _ in 0..150 {
                if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    if probe(&mut s) {
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        if !up {
            panic!("the server at {addr} never answered");
        }
    }

    /// Runs `program args` inside the namespace (killed after 60 s).
    fn run(&self, program: &str, args: &[&str]) -> Finished {
        run_in(&self.ns, program, args)
    }

    /// Runs `f` on a thread inside the namespace.
    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.on_thread(f)
    }
}

fn run_in(ns: &NetNs, program: &str, args: &[&str]) -> Finished {
    Running::spawn(ns.command(Path::new(program), args)).finish(Duration::from_secs(60))
}

/// Connects (from a namespace thread) with read/write timeouts set.
fn connect(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("address");
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

/// Writes `data`, then reads one reply: what arrives until the server closes, or until
/// nothing more came for 100 ms after the first bytes (for keep-alive replies).
fn request(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    if s.write_all(data).is_err() {
        return Vec::new();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                s.set_read_timeout(Some(Duration::from_millis(100))).ok();
            }
        }
    }
}

/// Reads until the server closes; panics if it does not within [`IO_TIMEOUT`].
fn read_to_close(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        // A reset after the answer still counts as closing.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => got,
        Err(e) => panic!(
            "{what}: the server did not close the connection ({e}); got {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `GET /health` on a new connection answers 200 `{"status":"ok"}`.
fn assert_healthy(after: &str) {
    let mut s = connect(HTTP);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let r = text(&read_to_close(&mut s, "/health"));
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n{\"status\":\"ok\"}"),
        "after {after}, /health answered {r:?}"
    );
}

/// Closes `s` with a reset (SO_LINGER 0) instead of a FIN.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setting SO_LINGER on a socket we own with a valid `linger`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

// ---------------------------------------------------------------- httpd

backend_tests!(httpd_serves_pages_to_curl, |b| {
    if skip_unless(&[CURL]) {
        return;
    }
    let srv = Server::httpd(b);
    let url = format!("http://{GUEST_IP}");
    let out = |f: &Finished| format!("--- stdout\n{}\n--- stderr\n{}", f.stdout, f.stderr);

    let index = std::fs::read_to_string(root().join("examples/httpd/src/site/index.html"))
        .expect("index.html");
    let f = srv.run(
        "curl",
        &[
            "-sS",
            "-w",
            "\n%{http_code} %{content_type}",
            &format!("{url}/"),
        ],
    );
    assert_eq!(f.status, Some(0), "{}", out(&f));
    assert_eq!(
        f.stdout,
        format!("{index}\n200 text/html; charset=utf-8"),
        "GET /"
    );

    let f = srv.run(
        "curl",
        &[
            "-sS",
            "-w",
            "\n%{http_code} %{content_type}",
            &format!("{url}/health"),
        ],
    );
    assert_eq!(
        f.stdout,
        "{\"status\":\"ok\"}\n200 application/json",
        "{}",
        out(&f)
    );

    let f = srv.run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/no/such/page"),
        ],
    );
    assert_eq!(f.stdout, "404", "{}", out(&f));

    // HEAD: the GET's headers, no body (curl -I would not notice a body; a raw
    // client does).
    let f = srv.run("curl", &["-sS", "-I", &format!("{url}/")]);
    assert!(f.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{}", out(&f));
    assert!(
        f.stdout
            .contains(&format!("Content-Length: {}\r\n", index.len())),
        "{}",
        out(&f)
    );
    let head = srv.client(|| {
        let mut s = connect(HTTP);
        s.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("write");
        read_to_close(&mut s, "HEAD")
    });
    let head = text(&head);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "HEAD answered {head:?}"
    );

    // Keep-alive: two URLs in one curl run share one connection.
    let f = srv.run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}:%{num_connects}\n",
            &format!("{url}/"),
            &format!("{url}/health"),
        ],
    );
    assert_eq!(f.stdout, "200:1\n200:0\n", "{}", out(&f));
});

backend_tests!(httpd_serves_200_connections_at_once, |b| {
    if skip_unless(&[]) {
        return;
    }
    let srv = Server::httpd(b);
    let answers = srv.client(|| {
        // All 200 are open before any request is sent, and every request is sent
        // before any answer is read.
        let mut conns: Vec<TcpStream> = (0..200).map(|_| connect(HTTP)).collect();
        for (i, s) in conns.iter_mut().enumerate() {
            let path = if i % 2 == 0 { "/health" } else { "/" };
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .expect("write");
        }
        conns
            .iter_mut()
            .map(|s| text(&read_to_close(s, "one of 200")))
            .collect::<Vec<_>>()
    });
    assert_eq!(answers.len(), 200);
    for (i, a) in answers.iter().enumerate() {
        assert!(
            a.starts_with("HTTP/1.1 200 OK\r\n"),
            "connection {i}: {a:?}"
        );
        if i % 2 == 0 {
            assert!(a.ends_with("{\"status\":\"ok\"}"), "connection {i}: {a:?}");
        } else {
            assert!(a.ends_with("</html>\n"), "connection {i}: {a:?}");
        }
    }
});

backend_tests!(httpd_answers_bad_clients_and_keeps_serving, |b| {
    if skip_unless(&[]) {
        return;
    }
    let srv = Server::httpd(b);
    srv.client(|| {
        // A client that goes away halfway through its request head (FIN).
        let mut s = connect(HTTP);
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nUser-Ag")
            .expect("write");
        drop(s);
        assert_healthy("a client closing mid-request");

        // One that resets mid-request.
        let mut s = connect(HTTP);
        s.write_all(b"GET / HTTP/1.1\r\nHo").expect("write");
        reset(s);
        assert_healthy("a client resetting mid-request");

        // One that pipelines 50 requests and leaves without reading the answers.
        let mut s = connect(HTTP);
        s.write_all(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50))
            .expect("write");
        drop(s);
        assert_healthy("a client leaving with 50 answers unread");

        // Garbage: 400, then the server closes.
        let mut s = connect(HTTP);
        s.write_all(b"\x00\x01\x02 garbage \xff\xfe\r\n\r\n")
            .expect("write");
        let r = text(&read_to_close(&mut s, "garbage"));
        assert!(
            r.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "garbage: {r:?}"
        );
        assert!(r.contains("Connection: close\r\n"), "garbage: {r:?}");
        assert_healthy("garbage");

        // A header block over 8 KiB: 431, then close.
        let mut s = connect(HTTP);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9000)
        );
        s.write_all(big.as_bytes()).expect("write");
        let r = text(&read_to_close(&mut s, "oversized headers"));
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "oversized headers: {r:?}"
        );
        assert_healthy("an oversized header block");

        // A request line over 8 KiB: 414 as soon as the limit is passed, then close.
        let mut s = connect(HTTP);
        let long = format!("GET /{}", "a".repeat(9000));
        s.write_all(long.as_bytes()).expect("write");
        let r = text(&read_to_close(&mut s, "oversized URL"));
        assert!(
            r.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "oversized URL: {r:?}"
        );
        assert_healthy("an oversized URL");
    });
});

backend_tests!(the_guest_answers_ping, |b| {
    if skip_unless(&[PING]) {
        return;
    }
    let srv = Server::httpd(b);
    let f = srv.run("ping", &["-c", "3", "-i", "0.2", "-W", "2", GUEST_IP]);
    assert_eq!(f.status, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(
        f.stdout.contains("3 packets transmitted, 3 received"),
        "{}",
        f.stdout
    );
});

// ---------------------------------------------------------------- kv

backend_tests!(kv_answers_redis_cli, |b| {
    if skip_unless(&[REDIS_CLI]) {
        return;
    }
    let srv = Server::kv(b);
    // redis-cli prints raw replies when its output is not a terminal; errors too
    // (without "(error)").
    let cli = |args: &[&str]| {
        let mut a = vec!["-h", GUEST_IP];
        a.extend_from_slice(args);
        let f = srv.run("redis-cli", &a);
        assert_eq!(f.status, Some(0), "redis-cli {args:?}: {}", f.stderr);
        f.stdout.trim_end().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello world");
    assert_eq!(cli(&["GET", "missing"]), "");
    assert_eq!(cli(&["INCR", "counter"]), "1");
    assert_eq!(cli(&["INCR", "counter"]), "2");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(cli(&["MGET", "a", "b", "nope"]), "1\n2");
    assert_eq!(cli(&["EXPIRE", "a", "100"]), "1");
    assert_eq!(cli(&["TTL", "a"]), "100");
    assert_eq!(cli(&["TTL", "b"]), "-1");
    assert_eq!(cli(&["DBSIZE"]), "4");
    let mut keys: Vec<String> = cli(&["KEYS", "*"]).lines().map(String::from).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "counter", "greeting"]);
    assert_eq!(cli(&["DEL", "a", "b", "nope"]), "2");
    assert_eq!(cli(&["EXISTS", "a", "greeting"]), "1");
    assert_eq!(cli(&["FLUSHALL"]), "OK");
    assert_eq!(cli(&["DBSIZE"]), "0");
    // Errors are replies; the server carries on.
    assert_eq!(
        cli(&["FROBNICATE", "x"]),
        "ERR unknown command 'FROBNICATE', with args beginning with: 'x'"
    );
    assert_eq!(
        cli(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(cli(&["SET", "s", "text"]), "OK");
    assert_eq!(
        cli(&["INCR", "s"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(cli(&["PING"]), "PONG");
});

backend_tests!(kv_pipelines_and_serves_200_clients, |b| {
    if skip_unless(&[REDIS_BENCHMARK]) {
        return;
    }
    let srv = Server::kv(b);
    // 1000 SETs in one write, then the 1000 replies.
    let replies = srv.client(|| {
        let mut batch = Vec::new();
        for i in 0..1000 {
            let (k, v) = (format!("key:{i}"), format!("value:{i}"));
            write!(
                batch,
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .expect("format");
        }
        batch.extend_from_slice(b"*1\r\n$6\r\nDBSIZE\r\n*2\r\n$3\r\nGET\r\n$7\r\nkey:999\r\n");
        let mut s = connect(RESP);
        s.write_all(&batch).expect("write");
        let want = b"+OK\r\n".len() * 1000 + b":1000\r\n$9\r\nvalue:999\r\n".len();
        let mut got = vec![0u8; want];
        s.read_exact(&mut got).map(|()| got)
    });
    let replies = replies.expect("1000 pipelined replies");
    assert_eq!(
        text(&replies),
        "+OK\r\n".repeat(1000) + ":1000\r\n$9\r\nvalue:999\r\n"
    );

    let f = srv.run(
        "redis-benchmark",
        &[
            "-h",
            GUEST_IP,
            "-c",
            "200",
            "-n",
            "2000",
            "-t",
            "ping,set,get",
            "-q",
        ],
    );
    assert_eq!(f.status, Some(0), "{}\n{}", f.stdout, f.stderr);
    // Final lines look like "SET: 41666.67 requests per second, p50=...".
    let rates: Vec<(String, f64)> = f
        .stdout
        .split(['\r', '\n'])
        .filter(|l| l.contains(" requests per second"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(": ")?;
            let rate = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_string(), rate))
        })
        .collect();
    let names: Vec<&str> = rates.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["PING_INLINE", "PING_MBULK", "SET", "GET"],
        "{}",
        f.stdout
    );
    assert!(rates.iter().all(|(_, r)| *r > 0.0), "{}", f.stdout);
    assert!(
        !f.stdout.contains("rror") && !f.stderr.contains("rror"),
        "{}\n{}",
        f.stdout,
        f.stderr
    );
});

backend_tests!(kv_protocol_errors_close_only_that_connection, |b| {
    if skip_unless(&[]) {
        return;
    }
    let srv = Server::kv(b);
    srv.client(|| {
        let mut a = connect(RESP);
        assert_eq!(request(&mut a, b"SET k v\r\n"), b"+OK\r\n");

        let mut bad = connect(RESP);
        bad.write_all(b"*abc\r\n").expect("write");
        let r = text(&read_to_close(&mut bad, "protocol error"));
        assert_eq!(r, "-ERR Protocol error: invalid multibulk length\r\n");

        // A client that leaves mid-command.
        let mut half = connect(RESP);
        half.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nx")
            .expect("write");
        drop(half);
        let mut half = connect(RESP);
        half.write_all(b"*2\r\n$3\r\nGET").expect("write");
        reset(half);

        // The first client is still served, and so are new ones.
        assert_eq!(request(&mut a, b"GET k\r\n"), b"$1\r\nv\r\n");
        let mut c = connect(RESP);
        assert_eq!(request(&mut c, b"*1\r\n$4\r\nPING\r\n"), b"+PONG\r\n");
        assert_eq!(request(&mut c, b"EXISTS x\r\n"), b":0\r\n");
    });
});

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = text(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

/// Waits (at most 2 s) until no process mentions `image`.
fn wait_until_gone(image: &str, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = processes_mentioning(image);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: still running after 2 s: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 2 s) until nothing is attached to `tap0` (the kernel drops the
/// carrier when the last file lets go). A process is gone from `/proc`'s command lines
/// before its files are closed, and the KVM backend's vCPU process tears the VM down
/// after septem-run has exited, so this can lag the process checks by a few ms.
fn wait_until_tap_free(ns: &NetNs, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let f = run_in(ns, "ip", &["-o", "link", "show", "tap0"]);
        if f.stdout.contains("NO-CARRIER") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: tap0 is still attached after 2 s: {}",
            f.stdout
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

backend_tests!(kv_shutdown_ends_the_guest_and_the_monitor_cleanly, |b| {
    if skip_unless(&[REDIS_CLI]) {
        return;
    }
    // A copy of the image under a name no other test uses, to look for leftovers by.
    let image: PathBuf = root().join(format!(
        "target/test-images/kv-shutdown-{}-{}.septem",
        std::process::id(),
        b.name()
    ));
    std::fs::copy(example("kv"), &image).expect("copy the kv image");
    let image_name = image.to_str().expect("utf-8").to_string();
    let srv = Server::start(b, &image, RESP, |s| request(s, b"PING\r\n") == b"+PONG\r\n");
    let Server { guest, ns } = srv;

    // An idle client is closed by the shutdown too.
    let mut idle = ns.on_thread(|| {
        let mut s = connect(RESP);
        assert_eq!(request(&mut s, b"SET left behind\r\n"), b"+OK\r\n");
        s
    });
    let f = run_in(&ns, "redis-cli", &["-h", GUEST_IP, "SHUTDOWN"]);
    assert_eq!(
        f.status,
        Some(0),
        "redis-cli SHUTDOWN: {}\n{}",
        f.stdout,
        f.stderr
    );
    let out = guest.finish(Duration::from_secs(20));
    let report = format!("--- stdout\n{}\n--- stderr\n{}", out.stdout, out.stderr);
    assert_eq!(out.status, Some(0), "{report}");
    assert!(
        out.stdout.contains("kv: SHUTDOWN from 10.0.7.1:"),
        "{report}"
    );
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = Vec::new();
    assert!(
        idle.read_to_end(&mut rest).is_ok() && rest.is_empty(),
        "the idle client was not closed with a FIN: {rest:?}"
    );

    // Nothing of that run is left (the KVM backend forks a vCPU process).
    wait_until_gone(&image_name, "after SHUTDOWN");
    wait_until_tap_free(&ns, "after SHUTDOWN");

    // The tap was let go: another guest can attach to it at once.
    let again = start_in(&ns, b, &image, &[]);
    let second = Server { guest: again, ns };
    second.wait_until_serving(RESP, |s| request(s, b"PING\r\n") == b"+PONG\r\n");
    // Killing the monitor leaves nothing behind either (the vCPU process goes too,
    // and only then is the tap free).
    let Server { guest, ns } = second;
    drop(guest);
    wait_until_gone(&image_name, "after killing septem-run");
    wait_until_tap_free(&ns, "after killing septem-run");
    // A guest's own exit status comes through septem-run too.
    let name = ns.name().to_string();
    let bad = start_in(&ns, b, &image, &["--no-such-flag"]).finish(Duration::from_secs(20));
    std::fs::remove_file(&image).ok();
    assert_eq!(bad.status, Some(1), "{}\n{}", bad.stdout, bad.stderr);
    assert!(
        bad.stderr.contains("unknown argument \"--no-such-flag\""),
        "{}",
        bad.stderr
    );

    // Dropping the namespace removes it and its tap.
    drop(ns);
    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "namespace {name} is still there"
    );
});

backend_tests!(
    httpd_sigterm_finishes_in_flight_requests_then_exits_0,
    |b| {
        if skip_unless(&[]) {
            return;
        }
        let Server { mut guest, ns } = Server::httpd(b);
        // A keep-alive client between requests, and one in the middle of a request.
        let (mut idle, mut busy) = ns.on_thread(|| {
            let mut idle = connect(HTTP);
            let r = request(&mut idle, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
            assert!(r.starts_with(b"HTTP/1.1 200"), "{r:?}");
            let mut busy = connect(HTTP);
            busy.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
                .expect("half a request");
            (idle, busy)
        });
        // Let the half request reach the guest (a connection with nothing received yet is
        // not in flight: the drain would close it).
        std::thread::sleep(Duration::from_millis(300));
        guest.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(500));
        if !guest.is_running() {
            let out = guest.finish(Duration::from_secs(1));
            panic!(
                "httpd exited with a request in flight: {:?}\n{}\n{}",
                out.status, out.stdout, out.stderr
            );
        }
        let refused = ns.on_thread(|| {
            let addr: SocketAddr = HTTP.parse().expect("address");
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
        });
        assert!(
            refused,
            "a new client was accepted after the shutdown request"
        );
        // The idle keep-alive client was closed (FIN, no data).
        let mut rest = Vec::new();
        assert!(
            idle.read_to_end(&mut rest).is_ok() && rest.is_empty(),
            "idle client: {rest:?}"
        );
        // The request in flight is answered in full, then the server closes.
        busy.write_all(b"\r\n").expect("rest of the request");
        let mut reply = Vec::new();
        busy.read_to_end(&mut reply).expect("reply until close");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let out = guest.finish(Duration::from_secs(20));
        assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
        drop(ns);
    }
);

backend_tests!(kv_sigterm_exits_0_after_answering, |b| {
    if skip_unless(&[REDIS_CLI]) {
        return;
    }
    let Server { guest, ns } = Server::kv(b);
    let f = run_in(&ns, "redis-cli", &["-h", GUEST_IP, "SET", "k", "v"]);
    assert_eq!(f.stdout.trim(), "OK", "{}", f.stderr);
    guest.signal(libc::SIGTERM);
    let out = guest.finish(Duration::from_secs(20));
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    drop(ns);
});
