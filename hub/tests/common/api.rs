//! An HTTP API client with an operator key, for tests that send commands and
//! read devices through one hub (or, on a shared database, several).

use std::time::Duration;

use hub::store::Store;
use reqwest::StatusCode;
use serde_json::Value as Json;

use super::TestHub;

/// How long [`Api::wait_status`] polls before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// An HTTP client with an API key, for one hub.
pub struct Api {
    /// The HTTP client (no pooled connections).
    pub client: reqwest::Client,
    /// `http://…/api/v1`.
    pub base: String,
    /// The API key, for requests built by hand.
    pub key: String,
}

impl Api {
    /// A client for `hub`, with a new admin key.
    pub async fn new(hub: &TestHub) -> Api {
        Api::with_store(&hub.store, &hub.http_url()).await
    }

    /// A client for the hub at `http_url`, with a key created through
    /// `store` (any store on the hub's database: keys are shared).
    pub async fn with_store(store: &Store, http_url: &str) -> Api {
        let key = store.create_api_key("ops").await.unwrap().key;
        Api {
            // No pooled connections: a test that restarts the hub must not
            // reuse a connection the old hub closed.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: format!("{http_url}/api/v1"),
            key,
        }
    }

    /// POSTs JSON; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Json) -> (StatusCode, Json) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// POSTs a raw body labelled JSON (for malformed requests).
    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Json) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Sends a command to `device`, waiting up to `wait` s for its final status.
    pub async fn command(&self, device: &str, body: Json, wait: u64) -> (StatusCode, Json) {
        self.post(&format!("/devices/{device}/commands?wait={wait}"), body)
            .await
    }

    /// GETs; the status and the JSON answer.
    pub async fn get(&self, path: &str) -> (StatusCode, Json) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Command `id` of `device` as the API shows it.
    pub async fn show(&self, device: &str, id: i64) -> Json {
        let (status, body) = self.get(&format!("/devices/{device}/commands/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The device's commands (`query` starts with `?` or is empty).
    pub async fn list(&self, device: &str, query: &str) -> Vec<Json> {
        let (status, body) = self
            .get(&format!("/devices/{device}/commands{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["commands"].as_array().unwrap().clone()
    }

    /// Polls the command until its status is `want` (at most [`WAIT`]).
    pub async fn wait_status(&self, device: &str, id: i64, want: &str) -> Json {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body = self.show(device, id).await;
            if body["status"] == want {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "command {id} never reached {want} on {}: {body}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
