//! Device credentials: tokens read from a file or created through the hub's
//! HTTP API, or client certificates read from a `hub dev-certs` folder.
//!
//! The simulator authenticates each device one way only: a token, or (with
//! `--cert-dir`) the device's client certificate over mutual TLS, where the
//! certificate names the device and no token is sent.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;

/// Provisioning requests in flight at once, unless the caller says otherwise
/// ([`provision_with`]).
const CONCURRENCY: usize = 16;

/// How one simulated device authenticates.
#[derive(Clone)]
pub enum Credential {
    /// A device token, `<device-id>.<secret>`.
    Token(String),
    /// A client certificate and its key (PEM), as `hub dev-certs` writes them.
    Certificate {
        /// The device id the certificate names (its file name).
        id: String,
        /// `DIR/devices/<id>.pem`.
        cert_pem: Vec<u8>,
        /// `DIR/devices/<id>-key.pem`.
        key_pem: Vec<u8>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::Certificate { id, .. } => write!(f, "Certificate({id})"),
        }
    }
}

/// The certificates of the first `n` devices (by id) in `DIR/devices`, the
/// layout `hub dev-certs DIR --device ID` writes: `<id>.pem` with its key
/// in `<id>-key.pem`.
pub fn read_cert_dir(dir: &Path, n: usize) -> anyhow::Result<Vec<Credential>> {
    let devices = dir.join("devices");
    let entries = std::fs::read_dir(&devices)
        .with_context(|| format!("--cert-dir: cannot list {}", devices.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("--cert-dir: listing {}", devices.display()))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    let ids = cert_ids(&names);
    if ids.len() < n {
        bail!(
            "--cert-dir: {} holds certificates for {} devices, {n} needed \
             (issue more with `hub dev-certs {} --reuse-ca --device ID`)",
            devices.display(),
            ids.len(),
            dir.display()
        );
    }
    ids.into_iter()
        .take(n)
        .map(|id| {
            let cert_path = devices.join(format!("{id}.pem"));
            let key_path = devices.join(format!("{id}-key.pem"));
            let cert_pem = std::fs::read(&cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key_pem = std::fs::read(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            Ok(Credential::Certificate {
                id,
                cert_pem,
                key_pem,
            })
        })
        .collect()
}

/// Device ids of a `devices/` folder listing, sorted: every `<id>.pem` whose
/// key `<id>-key.pem` is there too.
fn cert_ids(names: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = names
        .iter()
        .filter_map(|name| name.strip_suffix(".pem"))
        .filter(|id| !id.is_empty() && names.iter().any(|n| *n == format!("{id}-key.pem")))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// An HTTP client for the hub's API, trusting `ca_pem` besides the webpki roots.
fn http_client(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("--ca")? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("HTTP client")
}

/// Fails unless every device in `ids` exists in the hub
/// (`GET /api/v1/devices/{id}`): a device certificate only names a device,
/// it does not create one.
pub async fn check_devices_exist(
    api_base: &str,
    api_key: &str,
    ids: &[&str],
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<()> {
    let client = http_client(ca_pem)?;
    let missing: Vec<&str> = stream::iter(ids.iter().copied())
        .map(|id| {
            let client = &client;
            async move {
                let url = format!("{api_base}/api/v1/devices/{id}");
                let response = client
                    .get(&url)
                    .bearer_auth(api_key)
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                match response.status() {
                    reqwest::StatusCode::OK => Ok(None),
                    reqwest::StatusCode::NOT_FOUND => Ok(Some(id)),
                    status => bail!("GET {url} answered {status}"),
                }
            }
        })
        .buffered(CONCURRENCY)
        .try_filter_map(|missing| async move { Ok(missing) })
        .try_collect()
        .await?;
    if !missing.is_empty() {
        bail!(
            "--cert-dir: {} devices have certificates but do not exist in the hub: {} \
             (create them with `hub device add`, then issue certificates for the ids it prints)",
            missing.len(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The first `n` tokens of a file with one token a line.
pub fn read_tokens(path: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    read_tokens_from(path, 0, n)
}

/// Tokens `offset..offset + n` of a file with one token a line (counting
/// tokens, not lines), so several processes can share one file.
pub fn read_tokens_from(path: &Path, offset: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokens from {}", path.display()))?;
    parse_tokens_from(&text, offset, n).with_context(|| format!("tokens file {}", path.display()))
}

#[cfg(test)]
fn parse_tokens(text: &str, n: usize) -> anyhow::Result<Vec<String>> {
    parse_tokens_from(text, 0, n)
}

fn parse_tokens_from(text: &str, offset: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .skip(offset)
        .take(n)
        .map(str::to_owned)
        .collect();
    if tokens.len() < n {
        if offset == 0 {
            bail!("holds {} tokens, {n} devices need one each", tokens.len());
        }
        bail!(
            "holds {} tokens after the first {offset}, {n} devices need one each",
            tokens.len()
        );
    }
    Ok(tokens)
}

/// Write `tokens` one a line, so a later run (`--tokens FILE`) can reuse
/// the devices instead of creating them again.
pub fn write_tokens(path: &Path, tokens: &[String]) -> anyhow::Result<()> {
    let mut text = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for token in tokens {
        text.push_str(token);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write tokens to {}", path.display()))
}

#[derive(Debug, Deserialize)]
struct Created {
    token: String,
}

/// Create `n` devices named `{prefix}-0001`... through `POST /api/v1/devices`
/// and return their tokens in order.
pub async fn provision(
    api_base: &str,
    api_key: &str,
    prefix: &str,
    n: usize,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<Vec<String>> {
    provision_with(api_base, api_key, prefix, n, ca_pem, CONCURRENCY).await
}

/// [`provision`] with `concurrency` requests in flight: creating 100,000
/// devices one round trip at a time, sixteen at once, takes minutes.
pub async fn provision_with(
    api_base: &str,
    api_key: &str,
    prefix: &str,
    n: usize,
    ca_pem: Option<&[u8]>,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let client = http_client(ca_pem)?;
    let url = format!("{api_base}/api/v1/devices");
    stream::iter(1..=n)
        .map(|i| {
            let name = format!("{prefix}-{i:04}");
            create(&client, &url, api_key, name)
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

async fn create(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
    name: String,
) -> anyhow::Result<String> {
    let response = client
        .post(url)
        .bearer_auth(api_key)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        bail!("creating device {name:?}: POST {url} answered {status}: {body}");
    }
    let created: Created = response
        .json()
        .await
        .with_context(|| format!("creating device {name:?}: unexpected response body"))?;
    Ok(created.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_skip_blanks_and_comments_and_must_suffice() {
        let text = "# tokens\n a.1 \n\nb.2\n# c\nc.3\n";
        assert_eq!(parse_tokens(text, 2).expect("enough"), vec!["a.1", "b.2"]);
        assert_eq!(parse_tokens(text, 3).expect("enough").len(), 3);
        assert!(parse_tokens(text, 4).is_err());
        assert_eq!(
            parse_tokens_from(text, 1, 2).expect("enough"),
            vec!["b.2", "c.3"]
        );
        assert!(parse_tokens_from(text, 2, 2).is_err());
    }

    #[test]
    fn certificate_ids_need_their_key_file() {
        let names: Vec<String> = [
            "b.pem",
            "b-key.pem",
            "a.pem",
            "a-key.pem",
            "lonely.pem",
            "x-key.pem",
            "notes.txt",
        ]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
        assert_eq!(cert_ids(&names), ["a", "b"]);
    }

    #[test]
    fn a_cert_dir_gives_the_first_devices_by_id() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("device-sim-certs-{}", std::process::id()));
        let devices = dir.join("devices");
        std::fs::create_dir_all(&devices)?;
        for id in ["dev-2", "dev-1", "dev-3"] {
            std::fs::write(devices.join(format!("{id}.pem")), format!("cert {id}"))?;
            std::fs::write(devices.join(format!("{id}-key.pem")), format!("key {id}"))?;
        }
        let creds = read_cert_dir(&dir, 2)?;
        let ids: Vec<String> = creds
            .iter()
            .map(|c| match c {
                Credential::Certificate {
                    id,
                    cert_pem,
                    key_pem,
                } => {
                    assert_eq!(cert_pem, format!("cert {id}").as_bytes());
                    assert_eq!(key_pem, format!("key {id}").as_bytes());
                    id.clone()
                }
                Credential::Token(_) => String::new(),
            })
            .collect();
        assert_eq!(ids, ["dev-1", "dev-2"]);
        let too_many = read_cert_dir(&dir, 4);
        std::fs::remove_dir_all(&dir)?;
        assert!(too_many.is_err());
        Ok(())
    }
}
