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
pub fn parse_reference(s: &str) -> Result<Reference, OciError> {
    s.parse::<Reference>().map_err(|e| OciError::BadReference {
        reference: s.to_owned(),
        reason: format!(
            "{e} (expected [REGISTRY/]REPO[:TAG], lowercase repository, \
                 tag of [A-Za-z0-9_.-] up to 128 characters)"
        ),
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
