//! Image references: `--tag NAME:TAG` for packaging, `REGISTRY/REPO:TAG` for push and
//! pull (the distribution spec's grammar, via oci-spec's parser), and whether a
//! registry is on the loopback interface (plain HTTP allowed without `--insecure`).

use super::OciError;
use oci_spec::distribution::Reference;
use std::net::IpAddr;

/// A parsed `NAME[:TAG]` given to `package --tag` / `build --tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTag {
    reference: Reference,
}

impl ImageTag {
    /// Parses `NAME[:TAG]` (TAG defaults to `latest`; digests are refused).
    pub fn parse(s: &str) -> Result<ImageTag, OciError> {
        let reference = parse_reference(s)?;
        if reference.digest().is_some() {
            return Err(OciError::BadReference {
                reference: s.to_owned(),
                reason: "a tag names an image by NAME:TAG, not by digest".to_owned(),
            });
        }
        Ok(ImageTag { reference })
    }

    /// The tag (`org.opencontainers.image.ref.name` in the layout's index).
    #[must_use]
    pub fn tag(&self) -> &str {
        self.reference.tag().unwrap_or("latest")
    }

    /// Last path component of the name (`hello` for `example.com/apps/hello:1`).
    #[must_use]
    pub fn short_name(&self) -> &str {
        let repo = self.reference.repository();
        repo.rsplit('/').next().unwrap_or(repo)
    }

    /// The fully qualified name containerd gives the image on import
    /// (`docker.io/library/hello:1.0`), written as `io.containerd.image.name`.
    #[must_use]
    pub fn full_name(&self) -> String {
        self.reference.whole()
    }
}

/// Parses `REGISTRY/REPO[:TAG][@DIGEST]` with a clear error.
///
/// The grammar is the distribution spec's (as oci-spec's parser, whose regular
/// expression takes ~100 ms to compile: too slow for a command line tool's start),
/// plus bracketed IPv6 registry hosts; tags are ASCII. Names without a registry are
/// Docker Hub's (`hello` → `docker.io/library/hello`); the tag defaults to `latest`.
pub fn parse_reference(s: &str) -> Result<Reference, OciError> {
    let bad = |reason: &str| OciError::BadReference {
        reference: s.to_owned(),
        reason: format!(
            "{reason} (expected [REGISTRY[:PORT]/]REPO[:TAG][@sha256:DIGEST]: lowercase \
             repository, tag of [A-Za-z0-9_.-] up to 128 characters)"
        ),
    };
    if s.is_empty() {
        return Err(bad("empty reference"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        if !valid_tag(tag) {
            return Err(bad(&format!("invalid tag {tag:?}")));
        }
    }
    if let Some(d) = digest {
        let (algo, hex) = d
            .split_once(':')
            .ok_or_else(|| bad("digest without ALGORITHM:"))?;
        let want = match algo {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad(&format!("unsupported digest algorithm {algo:?}"))),
        };
        if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(&format!("malformed {algo} digest")));
        }
    }
    // Docker's rule for where the registry ends.
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':', '[']) || left == "localhost" => {
            if !valid_domain(left) {
                return Err(bad(&format!("invalid registry {left:?}")));
            }
            (left.to_owned(), right.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    for c in repository.split('/') {
        if !valid_path_component(c) {
            return Err(bad(&format!(
                "invalid repository name component {c:?} (lowercase letters, digits, and \
                 single '.', '_' or '__', or dashes between them)"
            )));
        }
    }
    if registry == "index.docker.io" {
        "docker.io".clone_into(&mut registry);
    }
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if repository.len() > 255 {
        return Err(bad("repository name longer than 255 characters"));
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.to_owned(), d.to_owned())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.to_owned()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").to_owned()),
    })
}

fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !t.is_empty()
        && t.len() <= 128
        && word(t.as_bytes()[0])
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`: dot-separated `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?` labels or a
/// bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let valid_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        return v6.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    port.is_none_or(valid_port)
        && !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// Whether `registry` (`host[:port]`, `[v6]:port`) is on the loopback interface:
/// `localhost`, 127.0.0.0/8 or ::1.
#[must_use]
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if registry.matches(':').count() > 1 {
        registry // a bare IPv6 address
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let t = ImageTag::parse("hello:1.0").unwrap();
        assert_eq!(t.tag(), "1.0");
        assert_eq!(t.short_name(), "hello");
        assert_eq!(t.full_name(), "docker.io/library/hello:1.0");
        let t = ImageTag::parse("localhost:5000/apps/httpd").unwrap();
        assert_eq!(t.tag(), "latest");
        assert_eq!(t.short_name(), "httpd");
        assert_eq!(t.full_name(), "localhost:5000/apps/httpd:latest");
        for bad in [
            "",
            "Hello:1",
            "hello:bad tag",
            "hello:",
            "hello::1",
            "hello@sha256:12",
        ] {
            let e = ImageTag::parse(bad).unwrap_err();
            assert_eq!(e.exit_status(), 4, "{bad}");
        }
    }

    #[test]
    fn references_match_oci_spec() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let good = [
            "hello".to_owned(),
            "hello:1.0".to_owned(),
            "library/hello".to_owned(),
            "user/app:v1_2-3".to_owned(),
            "index.docker.io/x/y:z".to_owned(),
            "localhost/a".to_owned(),
            "localhost:5000/a/b/c:t".to_owned(),
            "127.0.0.1:5000/septem/hello:1.0".to_owned(),
            "Registry.Example.com/a__b/c-d---e.f:T".to_owned(),
            format!("127.0.0.1:5000/x@{d}"),
            format!("127.0.0.1:5000/x:1@{d}"),
        ];
        for s in &good {
            let ours = parse_reference(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let theirs: Reference = s.parse().unwrap_or_else(|e| panic!("oci-spec {s}: {e}"));
            assert_eq!(ours, theirs, "{s}");
        }
        let long = format!("a@sha256:{}", "zz".repeat(32));
        let bad = [
            "",
            "Upper/case",
            "a//b",
            "a/b/",
            "/a",
            "a:",
            "a:-x",
            "a:b c",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "reg.com:x/a",
            "a@sha256:12",
            "a@md5:00",
            &long,
        ];
        for s in bad {
            assert!(parse_reference(s).is_err(), "{s} accepted");
            // oci-spec's regex takes "Upper" for a registry here; Docker refuses it.
            if s != "Upper/case" {
                assert!(s.parse::<Reference>().is_err(), "oci-spec accepts {s}");
            }
        }
        let v6 = parse_reference("[::1]:5000/septem/hello:1").unwrap();
        assert_eq!(v6.registry(), "[::1]:5000");
        assert_eq!(v6.repository(), "septem/hello");
    }

    #[test]
    fn loopback() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "::1",
            "registry.localhost:80",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
