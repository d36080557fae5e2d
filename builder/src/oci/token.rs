//! The identity token (OAuth2 refresh token) flow of the distribution token spec: the
//! registry's `/v2/` answers `401` with `WWW-Authenticate: Bearer realm=…,service=…`;
//! the identity token is `POST`ed to the realm as a form (`grant_type=refresh_token`,
//! `refresh_token`, `service`, `scope`, `client_id`) and the answer's `access_token`
//! (or `token`) is the bearer token of the pull or push.
//!
//! A registry that does not answer with a Bearer challenge (no auth, or Basic) gets the
//! identity token itself as a bearer token.

use super::reference::is_loopback;
use super::OciError;
use oci_client::{Reference, RegistryOperation};
use std::time::Duration;

/// A `Bearer` challenge of `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The token service's URL.
    pub realm: String,
    /// `service`, when given.
    pub service: Option<String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (None for other schemes or without
/// a realm).
#[must_use]
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        realm: realm?,
        service,
    })
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The body of the refresh-token request.
#[must_use]
pub fn refresh_form(challenge: &Challenge, scope: &str, identity_token: &str) -> String {
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", identity_token),
        ("client_id", "septem"),
        ("scope", scope),
    ];
    if let Some(s) = &challenge.service {
        fields.push(("service", s));
    }
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The access token in the token service's answer (`access_token`, else `token`).
pub fn access_token(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["access_token", "token"]
        .iter()
        .find_map(|k| v.get(*k).and_then(|t| t.as_str()))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The repository scope of `operation` on `reference`.
fn scope(reference: &Reference, operation: RegistryOperation) -> String {
    let actions = match operation {
        RegistryOperation::Pull => "pull",
        RegistryOperation::Push => "pull,push",
    };
    format!("repository:{}:{actions}", reference.repository())
}

/// Exchanges `identity_token` for the bearer token of `operation` on `reference`.
pub async fn exchange(
    reference: &Reference,
    identity_token: &str,
    operation: RegistryOperation,
    insecure: bool,
) -> anyhow::Result<String> {
    let registry = reference.resolve_registry().to_owned();
    let scheme = if insecure || is_loopback(&registry) {
        "http"
    } else {
        "https"
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()?;
    let unreachable = |e: reqwest::Error| OciError::Unreachable {
        registry: registry.clone(),
        detail: e.to_string(),
    };
    let probe = client
        .get(format!("{scheme}://{registry}/v2/"))
        .send()
        .await
        .map_err(unreachable)?;
    let challenge = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_challenge);
    let Some(challenge) = challenge else {
        tracing::debug!(%registry, "no Bearer challenge: the identity token is the bearer");
        return Ok(identity_token.to_owned());
    };
    let answer = client
        .post(&challenge.realm)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(refresh_form(
            &challenge,
            &scope(reference, operation),
            identity_token,
        ))
        .send()
        .await
        .map_err(unreachable)?;
    let status = answer.status();
    let body = answer.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(OciError::Auth {
            registry,
            detail: format!(
                "the token service {} refused the identity token ({status}): {}",
                challenge.realm,
                String::from_utf8_lossy(&body).trim()
            ),
        }
        .into());
    }
    access_token(&body).ok_or_else(|| {
        OciError::Auth {
            registry,
            detail: format!(
                "the token service {} answered without an access_token",
                challenge.realm
            ),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example.com/token");
        assert_eq!(c.service.as_deref(), Some("registry.example.com"));
        let c = parse_challenge("bearer realm=http://127.0.0.1:1/t").unwrap();
        assert_eq!(
            (c.realm.as_str(), c.service),
            ("http://127.0.0.1:1/t", None)
        );
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
        assert!(parse_challenge(r#"Bearer service="x""#).is_none());
    }

    #[test]
    fn the_refresh_form_and_the_answer() {
        let c = Challenge {
            realm: "http://t/token".into(),
            service: Some("reg svc".into()),
        };
        assert_eq!(
            refresh_form(&c, "repository:a/b:pull", "t0k/+="),
            "grant_type=refresh_token&refresh_token=t0k%2F%2B%3D&client_id=septem&\
             scope=repository%3Aa%2Fb%3Apull&service=reg+svc"
        );
        assert_eq!(
            access_token(br#"{"access_token":"A","token":"T"}"#).as_deref(),
            Some("A")
        );
        assert_eq!(access_token(br#"{"token":"T"}"#).as_deref(), Some("T"));
        assert_eq!(access_token(br#"{"token":""}"#), None);
        assert_eq!(access_token(b"<html>"), None);
    }
}
