//! The HTTP/1.1 side of `httpd`, free of any I/O so it unit-tests on the host:
//! request parsing (incremental, pipelining-tolerant, with size limits), routing to the
//! built-in site, and response writing.
#![no_std]

extern crate alloc;

#[cfg(test)]
extern crate std;

use alloc::vec::Vec;
use core::fmt::Write as _;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body accepted (it is read and ignored).
pub const MAX_BODY: usize = 64 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 100;

/// Response statuses this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200
    Ok,
    /// 400
    BadRequest,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 413
    PayloadTooLarge,
    /// 414
    UriTooLong,
    /// 431
    HeadersTooLarge,
    /// 501
    NotImplemented,
    /// 505
    VersionNotSupported,
}

impl Status {
    /// Numeric code.
    #[must_use]
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::PayloadTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeadersTooLarge => 431,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    /// Reason phrase.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::NotImplemented => "Not Implemented",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// Request methods the server tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// Any other well-formed method (answered with 405).
    Other,
}

/// A parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path, without the query string.
    pub path: &'a str,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// Outcome of [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// More bytes are needed.
    Incomplete,
    /// A request, and how many bytes of the buffer it used (head and body).
    Request(Request<'a>, usize),
    /// The bytes are not an acceptable request: answer with this status and close.
    Error(Status),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Checks what can be checked of a request line before it is complete, so garbage is
/// refused at once rather than after [`MAX_HEAD`] bytes.
fn early_garbage(buf: &[u8]) -> bool {
    // Tolerate empty lines before a request (RFC 9112 §2.2).
    let buf = &buf[buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())..];
    let method_len = buf.iter().position(|&b| !is_tchar(b)).unwrap_or(buf.len());
    match buf.get(method_len) {
        None => method_len > 32,
        Some(b' ') => method_len == 0,
        Some(_) => true,
    }
}

/// Parses one request from the front of `buf`.
#[must_use]
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let lead = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if early_garbage(buf) {
        return Parsed::Error(Status::BadRequest);
    }
    let Some(head_len) = find(&buf[lead..], b"\r\n\r\n") else {
        if buf.len() - lead > MAX_HEAD {
            return Parsed::Error(if find(&buf[lead..], b"\r\n").is_none() {
                Status::UriTooLong
            } else {
                Status::HeadersTooLarge
            });
        }
        return Parsed::Incomplete;
    };
    if head_len + 4 > MAX_HEAD {
        return Parsed::Error(Status::HeadersTooLarge);
    }
    let head = &buf[lead..lead + head_len];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(line) = lines.next() else {
        return Parsed::Error(Status::BadRequest);
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Error(Status::BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Parsed::Error(Status::BadRequest);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        v if v.starts_with(b"HTTP/") && v.len() == 8 => {
            return Parsed::Error(Status::VersionNotSupported)
        }
        _ => return Parsed::Error(Status::BadRequest),
    };
    let Ok(target) = core::str::from_utf8(target) else {
        return Parsed::Error(Status::BadRequest);
    };
    if !(target.starts_with('/') || target == "*") || target.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Parsed::Error(Status::BadRequest);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => Method::Other,
    };

    let mut keep_alive = http11;
    let mut content_length: Option<usize> = None;
    let mut host = false;
    let mut count = 0;
    for l in lines {
        count += 1;
        if count > MAX_HEADERS {
            return Parsed::Error(Status::HeadersTooLarge);
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            return Parsed::Error(Status::BadRequest);
        };
        let (name, value) = (&l[..colon], trim(&l[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parsed::Error(Status::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                keep_alive = false;
            } else if has_token(value, b"keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = core::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
            else {
                return Parsed::Error(Status::BadRequest);
            };
            if content_length.is_some_and(|c| c != n) {
                return Parsed::Error(Status::BadRequest);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Error(Status::NotImplemented);
        } else if name.eq_ignore_ascii_case(b"host") {
            host = true;
        }
    }
    if http11 && !host {
        return Parsed::Error(Status::BadRequest);
    }
    let body = content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parsed::Error(Status::PayloadTooLarge);
    }
    let total = lead + head_len + 4 + body;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    Parsed::Request(
        Request {
            method,
            path,
            http11,
            keep_alive,
        },
        total,
    )
}

/// A resource of the built-in site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("site/index.html");
const STYLE: &[u8] = include_bytes!("site/style.css");
const LOGO: &[u8] = include_bytes!("site/logo.svg");
const HEALTH: &[u8] = b"{\"status\":\"ok\"}";
const NOT_FOUND: &[u8] = b"<!doctype html><title>404 Not Found</title><h1>Not Found</h1>\n";

/// The site: path to resource.
#[must_use]
pub fn route(path: &str) -> Option<Resource> {
    let r = |content_type, body| Some(Resource { content_type, body });
    match path {
        "/" | "/index.html" => r("text/html; charset=utf-8", INDEX),
        "/style.css" => r("text/css; charset=utf-8", STYLE),
        "/logo.svg" => r("image/svg+xml", LOGO),
        "/health" => r("application/json", HEALTH),
        _ => None,
    }
}

/// Appends a complete response to `out`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
    date: &str,
) {
    let mut w = VecWriter(out);
    let _ = write!(
        w,
        "HTTP/1.1 {} {}\r\nServer: septem-httpd\r\n",
        status.code(),
        status.reason()
    );
    if !date.is_empty() {
        let _ = write!(w, "Date: {date}\r\n");
    }
    if status == Status::MethodNotAllowed {
        let _ = w.write_str("Allow: GET, HEAD\r\n");
    }
    let _ = write!(
        w,
        "Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Answers a parsed request into `out`; returns whether to keep the connection open.
pub fn respond(req: &Request<'_>, out: &mut Vec<u8>, date: &str) -> bool {
    let head_only = req.method == Method::Head;
    match (req.method, route(req.path)) {
        (Method::Other, _) => {
            let body = b"method not allowed\n";
            write_response(
                out,
                Status::MethodNotAllowed,
                "text/plain",
                body,
                false,
                req.keep_alive,
                date,
            );
        }
        (_, Some(r)) => {
            write_response(
                out,
                Status::Ok,
                r.content_type,
                r.body,
                head_only,
                req.keep_alive,
                date,
            );
        }
        (_, None) => {
            let ct = "text/html; charset=utf-8";
            write_response(
                out,
                Status::NotFound,
                ct,
                NOT_FOUND,
                head_only,
                req.keep_alive,
                date,
            );
        }
    }
    req.keep_alive
}

/// Answers a request that could not be parsed (the connection then closes).
pub fn respond_error(status: Status, out: &mut Vec<u8>, date: &str) {
    let mut body = Vec::new();
    let _ = writeln!(
        VecWriter(&mut body),
        "{} {}",
        status.code(),
        status.reason()
    );
    write_response(out, status, "text/plain", &body, false, false, date);
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) from seconds since the Unix epoch.
#[must_use]
pub fn http_date(unix_secs: u64, out: &mut [u8; 29]) -> &str {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9999);
    let mut w = SliceWriter { buf: out, len: 0 };
    let _ = write!(
        w,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let len = w.len;
    core::str::from_utf8(&out[..len]).unwrap_or("")
}

// ---- files from a block device ----------------------------------------------------

/// Where a request path points in a file tree: the decoded path (no leading `/`), or
/// why it cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilePath {
    /// A path inside the tree ("" is the root). `dir` when it ended with `/`.
    Path {
        /// The decoded path, components joined by `/`, no leading or trailing `/`.
        path: alloc::string::String,
        /// The request path ended with `/` (look for `index.html` in it).
        dir: bool,
    },
    /// `..`, a NUL, bad percent-encoding or a non-UTF-8 result: answer 400 (`..`: 403).
    Refused(Status),
}

/// Decodes `%XX` escapes and normalizes a request path for a file-tree lookup:
/// empty and `.` components are dropped; `..` (also encoded) is refused with 403,
/// a NUL or bad escape with 400.
#[must_use]
pub fn file_path(path: &str) -> FilePath {
    let bytes = path.as_bytes();
    let mut dec = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => dec.push((h * 16 + l) as u8),
                _ => return FilePath::Refused(Status::BadRequest),
            }
            i += 3;
        } else {
            dec.push(bytes[i]);
            i += 1;
        }
    }
    let Ok(dec) = alloc::string::String::from_utf8(dec) else {
        return FilePath::Refused(Status::BadRequest);
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in dec.split('/') {
        match c {
            "" | "." => {}
            ".." => return FilePath::Refused(Status::Forbidden),
            c if c.contains('\0') || c.contains('\\') => {
                return FilePath::Refused(Status::BadRequest)
            }
            c => parts.push(c),
        }
    }
    FilePath::Path {
        path: parts.join("/"),
        dir: dec.ends_with('/') || parts.is_empty(),
    }
}

/// `Content-Type` for a file name, by extension (`application/octet-stream` if
/// unknown).
#[must_use]
pub fn content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, e)) if !e.contains('/') => e,
        _ => "",
    };
    let lower = |s: &str| s.to_ascii_lowercase();
    match lower(ext).as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "mp4" => "video/mp4",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Appends the head of a `200 OK` for a file of `len` bytes modified at `mtime`
/// (seconds since the epoch; 0: no `Last-Modified`). The body follows separately.
pub fn write_file_head(
    out: &mut Vec<u8>,
    content_type: &str,
    len: u64,
    mtime: u64,
    keep_alive: bool,
    date: &str,
) {
    let mut w = VecWriter(out);
    let _ = w.write_str("HTTP/1.1 200 OK\r\nServer: septem-httpd\r\n");
    if !date.is_empty() {
        let _ = write!(w, "Date: {date}\r\n");
    }
    if mtime != 0 {
        let mut buf = [0u8; 29];
        let _ = write!(w, "Last-Modified: {}\r\n", http_date(mtime, &mut buf));
    }
    let _ = write!(
        w,
        "Content-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    );
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl core::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec;

    fn req(s: &str) -> Parsed<'_> {
        parse(s.as_bytes())
    }

    #[test]
    fn simple_get() {
        let r = "GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        match req(r) {
            Parsed::Request(q, n) => {
                assert_eq!(n, r.len());
                assert_eq!(q.method, Method::Get);
                assert_eq!(q.path, "/index.html");
                assert!(q.keep_alive && q.http11);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_then_complete() {
        let full = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for i in 0..full.len() {
            assert_eq!(req(&full[..i]), Parsed::Incomplete, "prefix {i}");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_by_one() {
        let two = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let Parsed::Request(a, n) = req(two) else {
            panic!()
        };
        assert_eq!(a.path, "/a");
        let Parsed::Request(b, m) = parse(&two.as_bytes()[n..]) else {
            panic!()
        };
        assert_eq!(
            (b.method, b.path, b.keep_alive),
            (Method::Head, "/health", false)
        );
        assert_eq!(n + m, two.len());
    }

    #[test]
    fn body_is_skipped_and_waited_for() {
        let r = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel";
        assert_eq!(req(r), Parsed::Incomplete);
        let r = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET";
        let Parsed::Request(q, n) = req(r) else {
            panic!()
        };
        assert_eq!(q.method, Method::Other);
        assert_eq!(&r[n..], "GET");
    }

    #[test]
    fn connection_semantics() {
        let Parsed::Request(q, _) = req("GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!q.keep_alive && !q.http11);
        let Parsed::Request(q, _) = req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") else {
            panic!()
        };
        assert!(q.keep_alive);
        let Parsed::Request(q, _) =
            req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!q.keep_alive);
    }

    #[test]
    fn errors() {
        assert_eq!(
            req("\x16\x03\x01\x02\x00"),
            Parsed::Error(Status::BadRequest)
        );
        assert_eq!(
            req("hello world\r\n\r\n"),
            Parsed::Error(Status::BadRequest)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\n\r\n"),
            Parsed::Error(Status::BadRequest),
            "no Host"
        );
        assert_eq!(
            req("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            Parsed::Error(Status::VersionNotSupported)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n"),
            Parsed::Error(Status::BadRequest)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n"),
            Parsed::Error(Status::BadRequest)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999\r\n\r\n"),
            Parsed::Error(Status::PayloadTooLarge)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Error(Status::NotImplemented)
        );
        let long_uri = String::from("GET /") + &"a".repeat(MAX_HEAD + 10);
        assert_eq!(req(&long_uri), Parsed::Error(Status::UriTooLong));
        let long_head = String::from("GET / HTTP/1.1\r\nHost: a\r\nX: ") + &"a".repeat(MAX_HEAD);
        assert_eq!(req(&long_head), Parsed::Error(Status::HeadersTooLarge));
        let many = String::from("GET / HTTP/1.1\r\nHost: a\r\n")
            + &"A: b\r\n".repeat(MAX_HEADERS + 1)
            + "\r\n";
        assert_eq!(req(&many), Parsed::Error(Status::HeadersTooLarge));
    }

    #[test]
    fn responses() {
        let mut out = vec![];
        let Parsed::Request(q, _) = req("GET /health HTTP/1.1\r\nHost: a\r\n\r\n") else {
            panic!()
        };
        assert!(respond(&q, &mut out, "Thu, 01 Jan 1970 00:00:00 GMT"));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("Content-Type: application/json\r\n"));
        assert!(s.contains("Content-Length: 15\r\n"));
        assert!(s.contains("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"status\":\"ok\"}"));

        let mut out = vec![];
        let Parsed::Request(q, _) = req("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n") else {
            panic!()
        };
        respond(&q, &mut out, "");
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with("\r\n\r\n") && s.contains(&std::format!("Content-Length: {}", INDEX.len()))
        );

        let mut out = vec![];
        let Parsed::Request(q, _) = req("DELETE / HTTP/1.1\r\nHost: a\r\n\r\n") else {
            panic!()
        };
        respond(&q, &mut out, "");
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 405 ") && s.contains("Allow: GET, HEAD\r\n"));

        let mut out = vec![];
        let Parsed::Request(q, _) = req("GET /nope HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!respond(&q, &mut out, ""));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 ") && s.contains("Connection: close\r\n"));

        let mut out = vec![];
        respond_error(Status::HeadersTooLarge, &mut out, "");
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(s.contains("Connection: close\r\n"));
    }

    #[test]
    fn dates() {
        let mut b = [0u8; 29];
        assert_eq!(http_date(0, &mut b), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(784_111_777, &mut b),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(1_709_251_199, &mut b),
            "Thu, 29 Feb 2024 23:59:59 GMT"
        );
    }

    #[test]
    fn file_paths() {
        let p = |path: &str, dir: bool| FilePath::Path {
            path: path.into(),
            dir,
        };
        assert_eq!(file_path("/"), p("", true));
        assert_eq!(file_path("/a/b.html"), p("a/b.html", false));
        assert_eq!(file_path("//a/./b/"), p("a/b", true));
        assert_eq!(file_path("/with%20space.txt"), p("with space.txt", false));
        assert_eq!(file_path("/%C3%A9t%C3%A9"), p("été", false));
        assert_eq!(file_path("/a/../b"), FilePath::Refused(Status::Forbidden));
        assert_eq!(
            file_path("/%2e%2e/etc"),
            FilePath::Refused(Status::Forbidden)
        );
        assert_eq!(file_path("/a/%2E%2E"), FilePath::Refused(Status::Forbidden));
        assert_eq!(file_path("/a%00b"), FilePath::Refused(Status::BadRequest));
        assert_eq!(file_path("/a%zz"), FilePath::Refused(Status::BadRequest));
        assert_eq!(file_path("/a%2"), FilePath::Refused(Status::BadRequest));
        assert_eq!(file_path("/%ff"), FilePath::Refused(Status::BadRequest));
        assert_eq!(
            file_path("/a%5c..%5cb"),
            FilePath::Refused(Status::BadRequest)
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("big.bin"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("d.ir/noext"), "application/octet-stream");
        assert_eq!(content_type("p.png"), "image/png");
    }

    #[test]
    fn file_heads() {
        let mut out = Vec::new();
        write_file_head(&mut out, "image/png", 2 << 20, 784_111_777, true, "D");
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(
            s.contains("Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
            "{s}"
        );
        assert!(s.contains("Content-Length: 2097152\r\n"), "{s}");
        assert!(s.contains("Content-Type: image/png\r\n"), "{s}");
        assert!(s.ends_with("Connection: keep-alive\r\n\r\n"), "{s}");
        let mut out = Vec::new();
        write_file_head(&mut out, "text/plain", 0, 0, false, "");
        let s = String::from_utf8(out).unwrap();
        assert!(
            !s.contains("Last-Modified") && s.contains("Connection: close"),
            "{s}"
        );
    }
}
