//! Which devices to watch: the hub's device list (`GET /api/v1/devices`,
//! paged with `limit` and `after`), and how it is cut into one slice per
//! client.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::time::{Instant, sleep};

/// Devices per page asked for (the API's largest page).
const PAGE: u32 = 1000;

/// One page of `GET /api/v1/devices`.
#[derive(Debug, Deserialize)]
struct DeviceList {
    devices: Vec<ListedDevice>,
    /// `after` for the next page; null on the last.
    next: Option<String>,
}

/// The part of a listed device `watch` needs.
#[derive(Debug, Deserialize)]
struct ListedDevice {
    id: String,
    #[serde(default)]
    revoked: bool,
}

/// Every device id the hub lists (revoked devices left out), sorted.
pub async fn list_device_ids(
    client: &reqwest::Client,
    api_base: &str,
    api_key: &str,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{api_base}/api/v1/devices");
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", PAGE.to_string())];
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let response = client
            .get(&url)
            .bearer_auth(api_key)
            .query(&query)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            bail!("GET {url} answered {status}: {body}");
        }
        let page: DeviceList = response
            .json()
            .await
            .with_context(|| format!("GET {url}: unexpected response body"))?;
        ids.extend(
            page.devices
                .into_iter()
                .filter(|d| !d.revoked)
                .map(|d| d.id),
        );
        match page.next {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            _ => break,
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The device list once it holds at least `want` devices (a load generator
/// started at the same time may still be creating them), polling until
/// `deadline`; with `want` 0, the list as it is.
pub async fn wait_for_devices(
    client: &reqwest::Client,
    api_base: &str,
    api_key: &str,
    want: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<String>> {
    let give_up = Instant::now() + deadline;
    loop {
        let ids = list_device_ids(client, api_base, api_key).await?;
        if ids.len() >= want {
            return Ok(ids);
        }
        if Instant::now() >= give_up {
            bail!(
                "the hub lists {} devices, {want} were awaited for {} s (--wait-devices)",
                ids.len(),
                deadline.as_secs_f64()
            );
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// The ids client `client` subscribes to: `per_client` consecutive ids
/// starting at `client * per_client`, wrapping around when there are fewer
/// devices than clients × `per_client` (then slices overlap). Every device
/// is watched by exactly one client when there are exactly that many.
pub fn slice_for(ids: &[String], client: usize, per_client: usize) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let per_client = per_client.min(ids.len());
    (0..per_client)
        .map(|j| ids[(client * per_client + j) % ids.len()].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:016x}")).collect()
    }

    #[test]
    fn slices_cover_every_device_once_when_the_numbers_match() {
        let all = ids(1000);
        let mut seen: Vec<String> = (0..100).flat_map(|c| slice_for(&all, c, 10)).collect();
        assert_eq!(seen.len(), 1000);
        seen.sort();
        seen.dedup();
        assert_eq!(seen, all);
        assert_eq!(slice_for(&all, 3, 10)[0], all[30]);
    }

    #[test]
    fn slices_wrap_when_devices_are_few() {
        let all = ids(15);
        assert_eq!(slice_for(&all, 1, 10), [&all[10..], &all[..5]].concat());
        assert_eq!(
            slice_for(&ids(3), 0, 10).len(),
            3,
            "no id twice in one slice"
        );
        assert!(slice_for(&[], 0, 10).is_empty());
    }
}
