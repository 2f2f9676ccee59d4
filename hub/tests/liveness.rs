//! Presence stays honest when a hub dies without closing its sessions, on
//! both backends: a hub that stops writing its liveness row is claimed by a
//! live hub, which marks the devices it held offline (but not one that has
//! already reconnected to another hub); a hub restarting under its old
//! instance id releases what its earlier run left online before it accepts
//! connections; a clean stop removes the hub's row; the device list names
//! the hub holding each session.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::db::fresh_database;
use common::*;
use hub::store::Store;

/// A device created in `store`: (key, public id, token).
async fn device(store: &Store, name: &str) -> (i64, String, String) {
    let new = store.create_device(name).await.unwrap();
    let identity = store
        .authenticate_device(&new.token)
        .await
        .unwrap()
        .unwrap();
    (identity.pk, new.id, new.token)
}

async fn online_on(store: &Store, id: &str) -> (bool, Option<String>) {
    let record = store.get_device(id).await.unwrap().unwrap();
    (record.online, record.hub_instance)
}

backend_test!(
    a_dead_hubs_devices_are_released_by_a_live_one,
    |backend| async move {
        let database = fresh_database(backend).await;
        let store = Store::open(&database.url).await.unwrap();
        // Hub "hub-dead" held two devices, then went silent long ago; one of
        // them has since reconnected to "hub-other".
        let (stranded_pk, stranded, _) = device(&store, "stranded").await;
        let (moved_pk, moved, _) = device(&store, "moved").await;
        store.hub_alive("hub-dead", 1_000).await.unwrap();
        store
            .session_opened(stranded_pk, 1_000, "hub-dead", &[])
            .await
            .unwrap();
        store
            .session_opened(moved_pk, 1_000, "hub-dead", &[])
            .await
            .unwrap();
        store
            .session_opened(moved_pk, 2_000, "hub-other", &[])
            .await
            .unwrap();
        assert_eq!(
            online_on(&store, &stranded).await,
            (true, Some("hub-dead".into()))
        );

        let hub = TestHub::start_on_database(database, |config| {
            config.instance_id = "hub-live".into();
            config.hub_stale_after = Duration::from_secs(3);
        })
        .await;
        eventually("the dead hub's device is released", || async {
            online_on(&hub.store, &stranded).await == (false, None)
        })
        .await;
        assert_eq!(
            online_on(&hub.store, &moved).await,
            (true, Some("hub-other".into())),
            "a device that reconnected elsewhere keeps its live session"
        );
        assert!(
            hub.store
                .stale_hubs(i64::MAX, "hub-live")
                .await
                .unwrap()
                .is_empty(),
            "the dead hub's row was claimed and removed"
        );
    }
);

backend_test!(
    a_restarted_hub_releases_what_its_earlier_run_left_online,
    |backend| async move {
        let database = fresh_database(backend).await;
        let store = Store::open(&database.url).await.unwrap();
        let (pk, id, token) = device(&store, "left-over").await;
        // An earlier run of "hub-x" crashed with the device connected.
        store.session_opened(pk, 1_000, "hub-x", &[]).await.unwrap();

        let mut hub = TestHub::start_on_database(database, |config| {
            config.instance_id = "hub-x".into();
        })
        .await;
        eventually("the leftover is released at start", || async {
            online_on(&hub.store, &id).await == (false, None)
        })
        .await;

        // A new session is named after this hub, in the store and the API.
        let (_socket, _) = open_session(&hub, &token).await;
        assert_eq!(
            online_on(&hub.store, &id).await,
            (true, Some("hub-x".into()))
        );
        let key = hub.store.create_api_key("ops").await.unwrap().key;
        let list: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/devices", hub.http_url()))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["devices"][0]["hub_instance"], "hub-x", "{list}");
        assert_eq!(list["devices"][0]["online"], true, "{list}");

        // A clean stop closes the session and removes the hub's row.
        hub.stop().await;
        assert_eq!(online_on(&hub.store, &id).await, (false, None));
        assert!(
            hub.store
                .stale_hubs(i64::MAX, "nobody")
                .await
                .unwrap()
                .is_empty(),
            "a clean stop removes the liveness row"
        );
    }
);
