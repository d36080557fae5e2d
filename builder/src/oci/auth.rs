//! Registry credentials: a registry token (library callers: septem-cri's `AuthConfig`),
//! sent as `Authorization: Bearer`, or an identity token, exchanged for one
//! ([`super::token`]); else `--username` with `--password` or `--password-stdin`, else
//! the `auths` entry for the registry in Docker's config file
//! (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`; `auth` is base64
//! `user:password`), else anonymous. oci-client answers both `Basic` and `Bearer`
//! (token service) challenges with user and password.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use std::io::BufRead as _;
use std::path::PathBuf;

/// Credentials given on the command line.
#[derive(Clone, Debug, Default)]
pub struct AuthFlags {
    /// `--username`.
    pub username: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--password-stdin`: read the password from the first line of standard input.
    pub password_stdin: bool,
    /// A registry (bearer) token, sent as is in `Authorization: Bearer` on every request
    /// (no token-service exchange); excludes the others.
    pub token: Option<String>,
    /// An identity token (OAuth2 refresh token): exchanged at the registry's token
    /// service for the bearer token of each push or pull ([`super::token`]); excludes
    /// the others.
    pub identity_token: Option<String>,
}

/// Where the credentials came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthSource {
    /// `--username`/`--password(-stdin)`.
    Flags,
    /// A registry token.
    Token,
    /// An identity token (exchanged for a bearer token).
    IdentityToken,
    /// The Docker config file.
    DockerConfig(PathBuf),
    /// No credentials.
    Anonymous,
}

impl std::fmt::Display for AuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthSource::Flags => f.write_str("credentials from the command line"),
            AuthSource::Token => f.write_str("a registry token (Authorization: Bearer)"),
            AuthSource::IdentityToken => {
                f.write_str("an identity token (exchanged at the registry's token service)")
            }
            AuthSource::DockerConfig(p) => write!(f, "credentials from {}", p.display()),
            AuthSource::Anonymous => f.write_str("no credentials (anonymous)"),
        }
    }
}

/// The credentials to use for `registry` (`host[:port]`).
pub fn resolve(registry: &str, flags: &AuthFlags) -> anyhow::Result<(RegistryAuth, AuthSource)> {
    if flags.password.is_some() && flags.password_stdin {
        bail!("--password and --password-stdin exclude each other");
    }
    let basic = flags.username.is_some() || flags.password.is_some() || flags.password_stdin;
    match (&flags.token, &flags.identity_token) {
        (Some(_), Some(_)) => bail!("a registry token and an identity token exclude each other"),
        (Some(_), None) | (None, Some(_)) if basic => {
            bail!("a registry or identity token excludes a user name and password")
        }
        (Some(token), None) => return Ok((RegistryAuth::Bearer(token.clone()), AuthSource::Token)),
        // The exchange happens at push/pull time (it needs the repository's scope).
        (None, Some(token)) => {
            return Ok((
                RegistryAuth::Bearer(token.clone()),
                AuthSource::IdentityToken,
            ))
        }
        (None, None) => {}
    }
    if let Some(user) = &flags.username {
        let password = if flags.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        } else if let Some(p) = &flags.password {
            p.clone()
        } else {
            bail!("--username needs --password or --password-stdin");
        };
        return Ok((
            RegistryAuth::Basic(user.clone(), password),
            AuthSource::Flags,
        ));
    }
    if flags.password.is_some() || flags.password_stdin {
        bail!("--password/--password-stdin need --username");
    }
    if let Some(path) = docker_config_path() {
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if let Some((user, pass)) = from_docker_config(&text, registry)
                .with_context(|| format!("reading credentials from {}", path.display()))?
            {
                return Ok((
                    RegistryAuth::Basic(user, pass),
                    AuthSource::DockerConfig(path),
                ));
            }
        }
    }
    Ok((RegistryAuth::Anonymous, AuthSource::Anonymous))
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
#[must_use]
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The `auths` entry for `registry` in a Docker config file, if any.
pub fn from_docker_config(text: &str, registry: &str) -> anyhow::Result<Option<(String, String)>> {
    let config: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let want = normalize_host(registry);
    for (key, entry) in auths {
        if normalize_host(key) != want {
            continue;
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            if auth.is_empty() {
                continue;
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .with_context(|| format!("auths.{key}.auth is not base64"))?;
            let decoded = String::from_utf8(decoded)
                .with_context(|| format!("auths.{key}.auth is not UTF-8"))?;
            let Some((user, pass)) = decoded.split_once(':') else {
                bail!("auths.{key}.auth is not base64 of USER:PASSWORD");
            };
            return Ok(Some((user.to_owned(), pass.to_owned())));
        }
        let user = entry.get("username").and_then(|u| u.as_str());
        let pass = entry.get("password").and_then(|p| p.as_str());
        if let (Some(u), Some(p)) = (user, pass) {
            return Ok(Some((u.to_owned(), p.to_owned())));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2/` → `host:5000`.
fn normalize_host(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_a_bearer_and_excludes_a_password() {
        let flags = AuthFlags {
            token: Some("t0k".into()),
            ..AuthFlags::default()
        };
        let (auth, source) = resolve("127.0.0.1:5000", &flags).unwrap();
        assert_eq!(auth, RegistryAuth::Bearer("t0k".into()));
        assert_eq!(source, AuthSource::Token);
        let both = AuthFlags {
            username: Some("u".into()),
            password: Some("p".into()),
            ..flags
        };
        assert!(resolve("127.0.0.1:5000", &both).is_err());
        let basic = AuthFlags {
            username: Some("u".into()),
            password: Some("p".into()),
            ..AuthFlags::default()
        };
        assert_eq!(
            resolve("127.0.0.1:5000", &basic).unwrap().0,
            RegistryAuth::Basic("u".into(), "p".into())
        );
        let identity = AuthFlags {
            identity_token: Some("refresh".into()),
            ..AuthFlags::default()
        };
        assert_eq!(
            resolve("127.0.0.1:5000", &identity).unwrap().1,
            AuthSource::IdentityToken
        );
        let two = AuthFlags {
            token: Some("t".into()),
            ..identity.clone()
        };
        assert!(resolve("127.0.0.1:5000", &two).is_err());
        let with_password = AuthFlags {
            username: Some("u".into()),
            password: Some("p".into()),
            ..identity
        };
        assert!(resolve("127.0.0.1:5000", &with_password).is_err());
    }

    #[test]
    fn docker_config_entries() {
        // "alice:s3cr:et" base64-encoded: the password may hold colons.
        let text = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "ZG9ja2VyOmh1Yg=="},
            "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjpldA=="},
            "http://other:81/v2/": {"username": "bob", "password": "pw"}
        }}"#;
        assert_eq!(
            from_docker_config(text, "127.0.0.1:5000").unwrap(),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(
            from_docker_config(text, "index.docker.io").unwrap(),
            Some(("docker".into(), "hub".into()))
        );
        assert_eq!(
            from_docker_config(text, "other:81").unwrap(),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(from_docker_config(text, "127.0.0.1:5001").unwrap(), None);
        assert!(from_docker_config(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h").is_err());
    }
}
