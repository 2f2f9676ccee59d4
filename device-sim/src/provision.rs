//! Device tokens: read from a file, or created through the hub's HTTP API.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;

/// Provisioning requests in flight at once.
const CONCURRENCY: usize = 16;

/// The first `n` tokens of a file with one token a line.
pub fn read_tokens(path: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokens from {}", path.display()))?;
    parse_tokens(&text, n).with_context(|| format!("tokens file {}", path.display()))
}

fn parse_tokens(text: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .take(n)
        .map(str::to_owned)
        .collect();
    if tokens.len() < n {
        bail!("holds {} tokens, {n} devices need one each", tokens.len());
    }
    Ok(tokens)
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
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("--ca-cert")? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().context("HTTP client")?;
    let url = format!("{api_base}/api/v1/devices");
    stream::iter(1..=n)
        .map(|i| {
            let name = format!("{prefix}-{i:04}");
            create(&client, &url, api_key, name)
        })
        .buffered(CONCURRENCY)
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
    }
}
