//! The store on its own, on every backend (each test runs once on a fresh
//! SQLite file and once on a fresh Postgres database): credentials, presence
//! bookkeeping, declarations, the batch writer, the reads and retention;
//! plus, on Postgres only, what happens while the server is down.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::db::{Backend, PrivateCluster, TestDatabase, fresh_database, skip_postgres};
use hub::store::{
    ActuatorInfo, DeviceQuery, HelloRecord, ReadingQuery, ReadingRow, SensorInfo, SessionClosing,
    SessionOpening, Store, StoreError,
};
use schema::{Value, ValueKind};

/// A fresh database on `backend` and the store opened on it; keep the
/// database value alive as long as the store.
async fn open(backend: Backend) -> (TestDatabase, Store) {
    let db = fresh_database(backend).await;
    let store = Store::open(&db.url).await.expect("open the store");
    (db, store)
}

async fn device(store: &Store, name: &str) -> (i64, String, String) {
    let new = store.create_device(name).await.expect("create device");
    let identity = store
        .authenticate_device(&new.token)
        .await
        .expect("authenticate")
        .expect("fresh token is valid");
    (identity.pk, new.id, new.token)
}

fn sensor(id: u16, name: &str, kind: ValueKind) -> SensorInfo {
    SensorInfo {
        id,
        name: name.into(),
        unit: "u".into(),
        kind,
    }
}

fn reading(pk: i64, sensor: u16, time_ms: i64, value: Value) -> ReadingRow {
    ReadingRow {
        device_pk: pk,
        sensor,
        time_ms,
        value,
    }
}

backend_test!(
    device_tokens_authenticate_until_revoked,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let new = store.create_device("boiler").await.expect("create");
        assert_eq!(new.id.len(), 16);
        assert!(new.token.starts_with(&format!("{}.", new.id)));
        assert!(!format!("{new:?}").contains(&new.token));

        let identity = store
            .authenticate_device(&new.token)
            .await
            .expect("query")
            .expect("valid token");
        assert_eq!(
            (identity.id.as_str(), identity.name.as_str()),
            (new.id.as_str(), "boiler")
        );

        // Same id, another (well-formed) secret; an unknown id; garbage.
        let other = store.create_device("other").await.expect("create");
        let other_secret = other.token.split_once('.').expect("dot").1;
        let wrong = format!("{}.{other_secret}", new.id);
        let unknown = format!("ffffffffffffffff.{other_secret}");
        for bad in [wrong.as_str(), unknown.as_str(), "", "x.y", new.id.as_str()] {
            assert!(
                store
                    .authenticate_device(bad)
                    .await
                    .expect("query")
                    .is_none(),
                "accepted {bad:?}"
            );
        }

        let pk = store
            .revoke_device(&new.id)
            .await
            .expect("revoke")
            .expect("known id");
        assert_eq!(pk, identity.pk);
        assert!(
            store
                .authenticate_device(&new.token)
                .await
                .expect("query")
                .is_none()
        );
        // The other device is untouched.
        assert!(
            store
                .authenticate_device(&other.token)
                .await
                .expect("query")
                .is_some()
        );
        assert_eq!(
            store
                .revoke_device("ffffffffffffffff")
                .await
                .expect("revoke"),
            None
        );
        assert_eq!(
            store.revoke_device("not an id").await.expect("revoke"),
            None
        );

        // Revoking again keeps the first time.
        let first = store
            .get_device(&new.id)
            .await
            .expect("get")
            .expect("exists");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store.revoke_device(&new.id).await.expect("revoke again");
        let again = store
            .get_device(&new.id)
            .await
            .expect("get")
            .expect("exists");
        assert!(first.revoked_at_ms.is_some());
        assert_eq!(first.revoked_at_ms, again.revoked_at_ms);
    }
);

backend_test!(invalid_names_are_refused, |backend| async move {
    let (_db, store) = open(backend).await;
    for bad in ["", "  ", "tab\tname", &"x".repeat(65)] {
        let err = store.create_device(bad).await.expect_err("bad name");
        assert!(matches!(err, StoreError::InvalidName(_)), "{bad:?}: {err}");
        let err = store.create_api_key(bad).await.expect_err("bad name");
        assert!(matches!(err, StoreError::InvalidName(_)), "{bad:?}: {err}");
    }
    assert!(store.create_device(&"é".repeat(64)).await.is_ok());
});

backend_test!(
    api_keys_authenticate_until_revoked_and_record_use,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let key = store.create_api_key("grafana").await.expect("create");
        assert!(!format!("{key:?}").contains(&key.key));
        let listed = store.list_api_keys().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used_at_ms, None);

        let identity = store
            .authenticate_api_key(&key.key)
            .await
            .expect("query")
            .expect("valid key");
        assert_eq!(identity.id, key.id);
        let used = store.list_api_keys().await.expect("list")[0].last_used_at_ms;
        assert!(used.is_some());
        // A second use within the minute does not write again.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store
            .authenticate_api_key(&key.key)
            .await
            .expect("query")
            .expect("valid");
        assert_eq!(
            store.list_api_keys().await.expect("list")[0].last_used_at_ms,
            used
        );

        // A device token is not an API key, and vice versa.
        let device = store.create_device("d").await.expect("device");
        assert!(
            store
                .authenticate_api_key(&device.token)
                .await
                .expect("query")
                .is_none()
        );
        assert!(
            store
                .authenticate_device(&key.key)
                .await
                .expect("query")
                .is_none()
        );

        assert!(store.revoke_api_key(&key.id).await.expect("revoke"));
        assert!(
            store
                .authenticate_api_key(&key.key)
                .await
                .expect("query")
                .is_none()
        );
        assert!(
            !store
                .revoke_api_key("ffffffffffffffff")
                .await
                .expect("revoke")
        );
        assert!(
            store.list_api_keys().await.expect("list")[0]
                .revoked_at_ms
                .is_some()
        );
    }
);

backend_test!(
    late_close_of_an_older_session_keeps_the_newer_online,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (pk, id, _) = device(&store, "d").await;
        let first = store
            .session_opened(pk, 1_000, "test-hub", &[])
            .await
            .expect("open 1");
        let second = store
            .session_opened(pk, 2_000, "test-hub", &[])
            .await
            .expect("open 2");
        assert_eq!(second.session_counter, first.session_counter + 1);
        assert_eq!(second.last_stored_seq, 0);

        store
            .session_closed(pk, first.session_counter, 3_000)
            .await
            .expect("close 1");
        let record = store.get_device(&id).await.expect("get").expect("exists");
        assert!(record.online, "the newer session is still live");
        assert_eq!(record.last_seen_ms, Some(3_000));

        // A close with an older clock never moves last seen backwards.
        store
            .session_closed(pk, second.session_counter, 2_500)
            .await
            .expect("close 2");
        let record = store.get_device(&id).await.expect("get").expect("exists");
        assert!(!record.online);
        assert_eq!(record.last_seen_ms, Some(3_000));

        let err = store
            .session_opened(9_999, 0, "test-hub", &[])
            .await
            .expect_err("unknown pk");
        assert!(matches!(err, StoreError::UnknownDevice(9_999)), "{err}");
    }
);

backend_test!(
    batched_opens_and_closes_answer_each_session_like_single_ones,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (a, a_id, _) = device(&store, "a").await;
        let (b, b_id, _) = device(&store, "b").await;
        let (c, c_id, _) = device(&store, "c").await;
        store
            .write_batch(&[reading(b, 1, 10, Value::Int(1))], &[(b, 7)])
            .await
            .expect("write");
        // Recording c's Hello stores its digest.
        let digest = hub::store::hello_digest("1.0", &[], &[]).to_vec();
        store.record_hello(c, "1.0", &[], &[]).await.expect("hello");
        let opening = |pk: i64, now_ms: i64| SessionOpening {
            pk,
            now_ms,
            hello_digest: digest.clone(),
        };
        // `a` twice in one batch: its openings run in the order given.
        let starts = store
            .sessions_opened(
                "hub-x",
                &[
                    opening(c, 100),
                    opening(a, 100),
                    opening(9_999, 100),
                    opening(b, 100),
                    opening(a, 200),
                ],
            )
            .await
            .expect("open batch");
        let [Some(c1), Some(a1), None, Some(b1), Some(a2)] = starts.as_slice() else {
            panic!("one answer per opening, none for the unknown device: {starts:?}");
        };
        assert_eq!(a2.session_counter, a1.session_counter + 1);
        assert_eq!(b1.last_stored_seq, 7);
        assert_eq!(a1.last_stored_seq, 0);
        assert!(a1.hello_changed && b1.hello_changed, "no digest stored yet");
        assert!(!c1.hello_changed, "c's stored digest is the one presented");
        for id in [&a_id, &b_id, &c_id] {
            let record = store.get_device(id).await.expect("get").expect("exists");
            assert!(record.online);
            assert_eq!(record.hub_instance.as_deref(), Some("hub-x"));
        }

        // The older session of `a` closes late: `a` stays online; the rest go offline.
        let closing = |pk: i64, session_counter: i64| SessionClosing {
            pk,
            session_counter,
            now_ms: 300,
        };
        let closed = store
            .sessions_closed(&[
                closing(a, a1.session_counter),
                closing(b, b1.session_counter),
                closing(9_999, 1),
                closing(c, c1.session_counter),
            ])
            .await
            .expect("close batch");
        assert_eq!(closed, vec![false, true, false, true]);
        let a_record = store.get_device(&a_id).await.expect("get").expect("exists");
        assert!(a_record.online, "the newer session of a is live");
        for id in [&b_id, &c_id] {
            let record = store.get_device(id).await.expect("get").expect("exists");
            assert!(!record.online);
            assert_eq!(record.hub_instance, None);
            assert_eq!(record.last_seen_ms, Some(300));
        }
    }
);

backend_test!(
    batched_hellos_record_each_device_and_the_later_of_two,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (a, a_id, _) = device(&store, "a").await;
        let (b, _, _) = device(&store, "b").await;
        let hello = |pk: i64, firmware: &str, sensors: Vec<SensorInfo>| HelloRecord {
            pk,
            firmware: firmware.into(),
            sensors,
            actuators: Vec::new(),
        };
        let recorded = store
            .record_hellos(&[
                hello(
                    a,
                    "1.0",
                    vec![
                        sensor(2, "h", ValueKind::Float),
                        sensor(1, "t", ValueKind::Float),
                    ],
                ),
                hello(9_999, "1.0", Vec::new()),
                hello(b, "2.0", vec![sensor(7, "door", ValueKind::Bool)]),
                hello(a, "1.1", vec![sensor(1, "t", ValueKind::Float)]),
            ])
            .await
            .expect("record");
        assert_eq!(recorded, vec![true, false, true, true]);
        assert_eq!(
            store.sensors(a).await.expect("sensors"),
            vec![sensor(1, "t", ValueKind::Float)],
            "the later Hello of a wins"
        );
        assert_eq!(
            store.sensors(b).await.expect("sensors"),
            vec![sensor(7, "door", ValueKind::Bool)]
        );
        let record = store.get_device(&a_id).await.expect("get").expect("exists");
        assert_eq!(record.firmware.as_deref(), Some("1.1"));
        // The digest stored is the later Hello's: a session presenting it
        // needs no new record.
        let digest = hub::store::hello_digest("1.1", &[sensor(1, "t", ValueKind::Float)], &[]);
        let start = store
            .session_opened(a, 1, "hub-x", &digest)
            .await
            .expect("open");
        assert!(!start.hello_changed);
        let err = store
            .record_hello(9_999, "1.0", &[], &[])
            .await
            .expect_err("unknown device");
        assert!(matches!(err, StoreError::UnknownDevice(9_999)), "{err}");
    }
);

backend_test!(
    batched_token_checks_answer_each_token,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let one = store.create_device("one").await.expect("create");
        let two = store.create_device("two").await.expect("create");
        let revoked = store.create_device("gone").await.expect("create");
        store.revoke_device(&revoked.id).await.expect("revoke");
        // Same id as `one`, another secret of the right shape.
        let (id, secret) = one.token.split_once('.').expect("token shape");
        let mut forged: Vec<char> = secret.chars().collect();
        forged[0] = if forged[0] == 'A' { 'B' } else { 'A' };
        let forged = format!("{id}.{}", forged.into_iter().collect::<String>());
        let tokens = [
            one.token.as_str(),
            "not-a-token",
            two.token.as_str(),
            forged.as_str(),
            revoked.token.as_str(),
            one.token.as_str(),
        ];
        let answers = store.authenticate_devices(&tokens).await.expect("check");
        let ids: Vec<Option<&str>> = answers
            .iter()
            .map(|a| a.as_ref().map(|d| d.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                Some(one.id.as_str()),
                None,
                Some(two.id.as_str()),
                None,
                None,
                Some(one.id.as_str())
            ]
        );
        assert!(
            store
                .authenticate_devices(&[])
                .await
                .expect("none")
                .is_empty()
        );
    }
);

backend_test!(
    session_start_reports_the_last_stored_seq,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (pk, _, _) = device(&store, "d").await;
        store
            .write_batch(&[reading(pk, 1, 10, Value::Int(1))], &[(pk, 41)])
            .await
            .expect("write");
        let start = store
            .session_opened(pk, 0, "test-hub", &[])
            .await
            .expect("open");
        assert_eq!(start.last_stored_seq, 41);
    }
);

backend_test!(
    touch_last_seen_takes_the_latest_and_skips_unknown_devices,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (a, a_id, _) = device(&store, "a").await;
        let (b, b_id, _) = device(&store, "b").await;
        store
            .touch_last_seen(&[(a, 500), (b, 700), (a, 900), (a, 600), (12_345, 1)])
            .await
            .expect("touch");
        store
            .touch_last_seen(&[(b, 100)])
            .await
            .expect("older time");
        store.touch_last_seen(&[]).await.expect("nothing");
        let a_seen = store
            .get_device(&a_id)
            .await
            .expect("get")
            .expect("a")
            .last_seen_ms;
        let b_seen = store
            .get_device(&b_id)
            .await
            .expect("get")
            .expect("b")
            .last_seen_ms;
        assert_eq!((a_seen, b_seen), (Some(900), Some(700)));

        // Many updates of the same devices collapse to each one's latest.
        let many: Vec<(i64, i64)> = (0..1500).map(|i| (a + (i % 2), 1_000 + i)).collect();
        store.touch_last_seen(&many).await.expect("touch many");
        let a_seen = store
            .get_device(&a_id)
            .await
            .expect("get")
            .expect("a")
            .last_seen_ms;
        let b_seen = store
            .get_device(&b_id)
            .await
            .expect("get")
            .expect("b")
            .last_seen_ms;
        assert_eq!((a_seen, b_seen), (Some(2_498), Some(2_499)));
    }
);

backend_test!(record_hello_replaces_declarations, |backend| async move {
    let (_db, store) = open(backend).await;
    let (pk, id, _) = device(&store, "d").await;
    let sensors = vec![
        sensor(2, "humidity", ValueKind::Float),
        sensor(1, "temperature", ValueKind::Float),
    ];
    let actuators = vec![ActuatorInfo {
        id: 1,
        name: "relay".into(),
        kind: ValueKind::Bool,
    }];
    store
        .record_hello(pk, "fw 1.0", &sensors, &actuators)
        .await
        .expect("hello 1");
    let stored = store.sensors(pk).await.expect("sensors");
    assert_eq!(stored.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.actuators(pk).await.expect("actuators"), actuators);
    // The same Hello again changes nothing.
    store
        .record_hello(pk, "fw 1.0", &sensors, &actuators)
        .await
        .expect("hello again");
    assert_eq!(store.sensors(pk).await.expect("sensors"), stored);

    let replaced = vec![
        sensor(2, "rh", ValueKind::Int),
        sensor(3, "door", ValueKind::Bool),
    ];
    store
        .record_hello(pk, "fw 2.0", &replaced, &[])
        .await
        .expect("hello 2");
    assert_eq!(store.sensors(pk).await.expect("sensors"), replaced);
    assert!(store.actuators(pk).await.expect("actuators").is_empty());
    let record = store.get_device(&id).await.expect("get").expect("exists");
    assert_eq!(record.firmware.as_deref(), Some("fw 2.0"));

    let err = store
        .record_hello(424_242, "fw", &[], &[])
        .await
        .expect_err("unknown device");
    assert!(matches!(err, StoreError::UnknownDevice(424_242)), "{err}");
});

backend_test!(
    revoked_since_lists_recent_revocations,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (a, a_id, _) = device(&store, "a").await;
        let (_b, _, _) = device(&store, "b").await;
        let before = hub_now();
        assert!(
            store
                .devices_revoked_since(0)
                .await
                .expect("poll")
                .is_empty()
        );
        store
            .revoke_device(&a_id)
            .await
            .expect("revoke")
            .expect("known");
        let revoked = store.devices_revoked_since(before).await.expect("poll");
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].0, a);
        assert!(revoked[0].1 >= before);
        assert!(
            store
                .devices_revoked_since(revoked[0].1 + 1)
                .await
                .expect("poll")
                .is_empty()
        );
    }
);

fn hub_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

backend_test!(
    write_batch_ignores_duplicates_and_only_raises_last_seq,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (a, a_id, _) = device(&store, "a").await;
        let (b, b_id, _) = device(&store, "b").await;
        // 1300 rows: more than one full statement plus a remainder.
        let rows: Vec<ReadingRow> = (0..1300)
            .map(|i| {
                reading(
                    if i % 2 == 0 { a } else { b },
                    (i % 3) as u16,
                    i,
                    Value::Int(i),
                )
            })
            .collect();
        store
            .write_batch(&rows, &[(a, 5), (b, 7), (a, 6)])
            .await
            .expect("write");
        assert_eq!(store.count_readings().await.expect("count"), 1300);

        // A resend: same keys with other values, lower seqs, plus one new row.
        let mut resend: Vec<ReadingRow> = rows[..100]
            .iter()
            .map(|r| ReadingRow {
                value: Value::Int(-1),
                ..*r
            })
            .collect();
        resend.push(reading(a, 0, 10_000, Value::Float(0.5)));
        resend.push(reading(a, 0, 10_000, Value::Float(9.5)));
        store
            .write_batch(&resend, &[(a, 2), (b, 3)])
            .await
            .expect("resend");
        assert_eq!(store.count_readings().await.expect("count"), 1301);
        let a_rec = store.get_device(&a_id).await.expect("get").expect("a");
        let b_rec = store.get_device(&b_id).await.expect("get").expect("b");
        assert_eq!((a_rec.last_seq, b_rec.last_seq), (6, 7));

        // The first write of a key wins.
        let page = store
            .readings(
                a,
                0,
                &ReadingQuery {
                    from_ms: 0,
                    to_ms: 0,
                    after_ms: None,
                    limit: 10,
                },
            )
            .await
            .expect("read");
        assert_eq!(page.readings.len(), 1);
        assert_eq!(page.readings[0].value, Value::Int(0));
        let latest = store
            .readings(
                a,
                0,
                &ReadingQuery {
                    from_ms: 10_000,
                    to_ms: 10_000,
                    after_ms: None,
                    limit: 10,
                },
            )
            .await
            .expect("read");
        assert_eq!(latest.readings[0].value, Value::Float(0.5));

        // Seqs only: raised, never lowered; the batch can be readings-free.
        store
            .write_batch(&[], &[(a, 100), (b, 1)])
            .await
            .expect("seqs only");
        let a_rec = store.get_device(&a_id).await.expect("get").expect("a");
        let b_rec = store.get_device(&b_id).await.expect("get").expect("b");
        assert_eq!((a_rec.last_seq, b_rec.last_seq), (100, 7));
        store.write_batch(&[], &[]).await.expect("empty batch");
    }
);

backend_test!(values_of_every_kind_round_trip, |backend| async move {
    let (_db, store) = open(backend).await;
    let (pk, _, _) = device(&store, "d").await;
    let values = [
        Value::Float(-273.15),
        Value::Float(0.0),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Bool(true),
        Value::Bool(false),
    ];
    let rows: Vec<ReadingRow> = values
        .iter()
        .enumerate()
        .map(|(i, v)| reading(pk, 1, i as i64, *v))
        .collect();
    store.write_batch(&rows, &[(pk, 1)]).await.expect("write");
    let page = store
        .readings(
            pk,
            1,
            &ReadingQuery {
                from_ms: 0,
                to_ms: 100,
                after_ms: None,
                limit: 100,
            },
        )
        .await
        .expect("read");
    let read: Vec<Value> = page.readings.iter().map(|r| r.value).collect();
    assert_eq!(read, values);
});

backend_test!(
    readings_page_through_a_range_and_latest_per_sensor,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (pk, _, _) = device(&store, "d").await;
        let (other, _, _) = device(&store, "other").await;
        store
            .record_hello(
                pk,
                "fw",
                &[
                    sensor(1, "t", ValueKind::Float),
                    sensor(2, "n", ValueKind::Int),
                    sensor(3, "silent", ValueKind::Bool),
                ],
                &[],
            )
            .await
            .expect("hello");
        let mut rows: Vec<ReadingRow> = (0..50)
            .map(|i| reading(pk, 1, 1_000 + i * 10, Value::Float(i as f64)))
            .collect();
        rows.push(reading(pk, 2, 5, Value::Int(7)));
        rows.push(reading(other, 1, 99_999, Value::Float(-1.0)));
        // An undeclared sensor's readings are stored but not listed as latest.
        rows.push(reading(pk, 9, 99_999, Value::Int(1)));
        store.write_batch(&rows, &[]).await.expect("write");

        let latest = store.latest_readings(pk).await.expect("latest");
        let summary: Vec<(u16, Option<i64>)> = latest
            .iter()
            .map(|l| (l.sensor.id, l.latest.map(|r| r.time_ms)))
            .collect();
        assert_eq!(summary, [(1, Some(1_490)), (2, Some(5)), (3, None)]);
        assert_eq!(latest[0].latest.map(|r| r.value), Some(Value::Float(49.0)));

        // [1100, 1300] holds 21 readings; pages of 8.
        let mut query = ReadingQuery {
            from_ms: 1_100,
            to_ms: 1_300,
            after_ms: None,
            limit: 8,
        };
        let mut times = Vec::new();
        let mut pages = 0;
        loop {
            let page = store.readings(pk, 1, &query).await.expect("page");
            pages += 1;
            times.extend(page.readings.iter().map(|r| r.time_ms));
            match page.next_after_ms {
                Some(after) => query.after_ms = Some(after),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(times, (110..=130).map(|i| i * 10).collect::<Vec<_>>());
        // An exact fit does not promise a page that turns out empty.
        query.after_ms = None;
        query.limit = 21;
        assert_eq!(
            store
                .readings(pk, 1, &query)
                .await
                .expect("page")
                .next_after_ms,
            None
        );
    }
);

backend_test!(list_devices_pages_and_filters, |backend| async move {
    let (_db, store) = open(backend).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let name = if i % 3 == 0 {
            format!("Kitchen {i}")
        } else {
            format!("hall {i}")
        };
        let (pk, id, _) = device(&store, &name).await;
        if i == 4 {
            store
                .session_opened(pk, 1, "test-hub", &[])
                .await
                .expect("online");
        }
        ids.push(id);
    }
    let mut query = DeviceQuery {
        limit: 5,
        ..DeviceQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list_devices(&query).await.expect("page");
        assert!(page.devices.len() <= 5);
        seen.extend(page.devices.into_iter().map(|d| d.id));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every device once, in creation order");

    let kitchens = store
        .list_devices(&DeviceQuery {
            name_contains: Some("KITCHEN".into()),
            ..DeviceQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(kitchens.devices.len(), 4);
    let online = store
        .list_devices(&DeviceQuery {
            online: Some(true),
            ..DeviceQuery::default()
        })
        .await
        .expect("online");
    assert_eq!(online.devices.len(), 1);
    assert_eq!(online.devices[0].id, ids[4]);

    for bad in ["ffffffffffffffff", "garbage"] {
        let err = store
            .list_devices(&DeviceQuery {
                after: Some(bad.into()),
                ..DeviceQuery::default()
            })
            .await
            .expect_err("unknown cursor");
        assert!(matches!(err, StoreError::InvalidCursor), "{err}");
    }

    // Case folding is ASCII only, whatever the database's locale.
    device(&store, "Étable").await;
    let search = |needle: &str| {
        let store = store.clone();
        let query = DeviceQuery {
            name_contains: Some(needle.into()),
            ..DeviceQuery::default()
        };
        async move {
            store
                .list_devices(&query)
                .await
                .expect("search")
                .devices
                .len()
        }
    };
    assert_eq!(search("TABLE").await, 1);
    assert_eq!(search("Étab").await, 1);
    assert_eq!(search("étab").await, 0);
});

backend_test!(data_survives_close_and_reopen, |backend| async move {
    let db = fresh_database(backend).await;
    let url = db.url.clone();
    let store = Store::open(&url).await.expect("open");
    let new = store.create_device("d").await.expect("create");
    let pk = store
        .authenticate_device(&new.token)
        .await
        .expect("auth")
        .expect("valid")
        .pk;
    store
        .write_batch(&[reading(pk, 1, 1, Value::Bool(true))], &[(pk, 3)])
        .await
        .expect("write");
    store.close().await;

    // Reopening runs the migrations again (a no-op) and finds everything.
    let store = Store::open(&url).await.expect("reopen");
    store.ping().await.expect("the database answers");
    assert_eq!(store.count_readings().await.expect("count"), 1);
    assert!(
        store
            .authenticate_device(&new.token)
            .await
            .expect("auth")
            .is_some()
    );
    assert_eq!(
        store
            .session_opened(pk, 0, "test-hub", &[])
            .await
            .expect("open")
            .last_stored_seq,
        3
    );
    store.close().await;
});

backend_test!(
    the_writer_and_other_writes_interleave_without_errors,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (pk, _, _) = device(&store, "d").await;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in 0..40i64 {
                    let rows: Vec<ReadingRow> = (0..500)
                        .map(|i| reading(pk, 1, batch * 1_000 + i, Value::Int(i)))
                        .collect();
                    store
                        .write_batch(&rows, &[(pk, batch as u64 + 1)])
                        .await
                        .expect("write batch");
                }
            })
        };
        for i in 0..40 {
            let start = store
                .session_opened(pk, i, "test-hub", &[])
                .await
                .expect("session");
            store.touch_last_seen(&[(pk, i)]).await.expect("touch");
            store.create_device(&format!("x{i}")).await.expect("create");
            store
                .session_closed(pk, start.session_counter, i)
                .await
                .expect("close");
        }
        writer.await.expect("writer task");
        assert_eq!(store.count_readings().await.expect("count"), 20_000);
    }
);

// A key written twice counts once with its first value, across batches and
// within one, and every page size reads the same rows.
backend_test!(
    resent_keys_count_once_with_their_first_value,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let (pk, _, _) = device(&store, "d").await;
        store
            .record_hello(pk, "fw", &[sensor(1, "n", ValueKind::Int)], &[])
            .await
            .expect("hello");
        let batch = |times: std::ops::Range<i64>, value: i64| -> Vec<ReadingRow> {
            times
                .map(|t| reading(pk, 1, t, Value::Int(value)))
                .collect()
        };
        // 0..10; then resends of 5..10 plus 10..15; then a resend of 12.
        store
            .write_batch(&batch(0..10, 1), &[])
            .await
            .expect("first");
        let mut second = batch(5..15, 2);
        second.reverse(); // arrival order does not matter
        store.write_batch(&second, &[]).await.expect("second");
        store
            .write_batch(&batch(12..13, 3), &[])
            .await
            .expect("third");

        let expected: Vec<(i64, Value)> = (0..15)
            .map(|t| (t, Value::Int(if t < 10 { 1 } else { 2 })))
            .collect();
        let read_all = |limit: u32| {
            let store = store.clone();
            async move {
                let mut query = ReadingQuery {
                    from_ms: 0,
                    to_ms: 100,
                    after_ms: None,
                    limit,
                };
                let mut out = Vec::new();
                loop {
                    let page = store.readings(pk, 1, &query).await.expect("page");
                    out.extend(page.readings.iter().map(|r| (r.time_ms, r.value)));
                    match page.next_after_ms {
                        Some(after) => query.after_ms = Some(after),
                        None => return out,
                    }
                }
            }
        };
        for limit in [1, 4, 7, 100] {
            assert_eq!(read_all(limit).await, expected, "pages of {limit}");
        }
        assert_eq!(store.count_readings().await.expect("count"), 15);
        let latest = store.latest_readings(pk).await.expect("latest");
        assert_eq!(
            latest[0].latest.map(|r| (r.time_ms, r.value)),
            Some((14, Value::Int(2)))
        );

        // A resend older than the newest does not become "latest", and one at
        // the same time does not replace it.
        store
            .write_batch(&batch(13..15, 9), &[])
            .await
            .expect("resend");
        let latest = store.latest_readings(pk).await.expect("latest");
        assert_eq!(
            latest[0].latest.map(|r| (r.time_ms, r.value)),
            Some((14, Value::Int(2)))
        );
        assert_eq!(store.count_readings().await.expect("count"), 15);
    }
);

/// Three devices with two sensors each, readings at 0..100 ms, plus one old
/// reading of a third sensor on the last device; returns their keys.
async fn retention_fixture(store: &Store) -> [i64; 3] {
    let mut pks = [0; 3];
    let mut rows = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let (pk, _, _) = device(store, name).await;
        store
            .record_hello(
                pk,
                "fw",
                &[
                    sensor(1, "one", ValueKind::Int),
                    sensor(2, "two", ValueKind::Int),
                    sensor(3, "rare", ValueKind::Int),
                ],
                &[],
            )
            .await
            .expect("hello");
        for t in 0..100 {
            rows.push(reading(pk, 1, t, Value::Int(t)));
            rows.push(reading(pk, 2, t, Value::Int(-t)));
        }
        pks[i] = pk;
    }
    rows.push(reading(pks[2], 3, 10, Value::Int(7)));
    store.write_batch(&rows, &[]).await.expect("write");
    assert_eq!(store.count_readings().await.expect("count"), 601);
    pks
}

/// Times of one sensor's readings in [from, to].
async fn times(store: &Store, pk: i64, sensor: u16, from_ms: i64, to_ms: i64) -> Vec<i64> {
    let page = store
        .readings(
            pk,
            sensor,
            &ReadingQuery {
                from_ms,
                to_ms,
                after_ms: None,
                limit: 1_000,
            },
        )
        .await
        .expect("read");
    page.readings.iter().map(|r| r.time_ms).collect()
}

backend_test!(
    retention_deletes_older_rows_at_most_limit_per_call,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let pks = retention_fixture(&store).await;
        let latest_before: Vec<_> = {
            let mut all = Vec::new();
            for pk in pks {
                all.push(store.latest_readings(pk).await.expect("latest"));
            }
            all
        };
        assert_eq!(
            store.delete_readings_before(50, 0).await.expect("limit 0"),
            0
        );
        assert_eq!(
            store
                .delete_readings_before(0, 70)
                .await
                .expect("nothing older"),
            0
        );

        // 3 x 2 x 50 rows below 50 ms, plus the rare sensor's one.
        let mut calls = Vec::new();
        let mut count = store.count_readings().await.expect("count");
        loop {
            let deleted = store.delete_readings_before(50, 70).await.expect("delete");
            assert!(deleted <= 70);
            let now = store.count_readings().await.expect("count");
            assert_eq!(
                count - now,
                deleted as i64,
                "the count drops by what was deleted"
            );
            count = now;
            calls.push(deleted);
            if deleted < 70 {
                break;
            }
        }
        assert_eq!(calls, [70, 70, 70, 70, 21]);
        assert_eq!(count, 300);
        assert_eq!(
            store.delete_readings_before(50, 70).await.expect("again"),
            0
        );

        // Only older rows went; the newest value of every sensor stays, even
        // one whose only reading was deleted.
        for pk in pks {
            for sensor in [1, 2] {
                assert!(times(&store, pk, sensor, 0, 49).await.is_empty());
                assert_eq!(
                    times(&store, pk, sensor, 0, 1_000).await,
                    (50..100).collect::<Vec<_>>()
                );
            }
        }
        assert!(times(&store, pks[2], 3, 0, 1_000).await.is_empty());
        for (pk, before) in pks.iter().zip(&latest_before) {
            assert_eq!(&store.latest_readings(*pk).await.expect("latest"), before);
        }
        let rare = &latest_before[2][2];
        assert_eq!(
            rare.latest.map(|r| (r.time_ms, r.value)),
            Some((10, Value::Int(7)))
        );
    }
);

backend_test!(
    retention_walks_devices_oldest_first_and_wraps_round,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let [a, b, c] = retention_fixture(&store).await;
        // All 100 old rows of the first device, then b's 50 oldest.
        assert_eq!(
            store.delete_readings_before(50, 150).await.expect("delete"),
            150
        );
        assert!(times(&store, a, 1, 0, 49).await.is_empty());
        assert_eq!(
            times(&store, b, 1, 0, 49).await,
            (25..50).collect::<Vec<_>>()
        );
        assert_eq!(
            times(&store, b, 2, 0, 49).await,
            (25..50).collect::<Vec<_>>()
        );
        assert_eq!(times(&store, c, 1, 0, 49).await.len(), 50);

        // Old rows arriving for a device the walk already passed are found when
        // the walk wraps round; a call short of its limit has seen every device.
        let late: Vec<ReadingRow> = (-10..0).map(|t| reading(a, 1, t, Value::Int(t))).collect();
        store.write_batch(&late, &[]).await.expect("late rows");
        assert_eq!(
            store
                .delete_readings_before(50, 1_000)
                .await
                .expect("delete"),
            50 + 101 + 10
        );
        assert_eq!(
            store
                .delete_readings_before(50, 1_000)
                .await
                .expect("again"),
            0
        );
        assert_eq!(store.count_readings().await.expect("count"), 300);
        for pk in [a, b, c] {
            assert!(times(&store, pk, 1, -100, 49).await.is_empty());
        }
    }
);

// Two stores on one database (two hubs): batches with overlapping keys
// committed at the same time store each key once, without deadlocks.
backend_test!(
    two_writers_with_overlapping_batches_store_each_key_once,
    |backend| async move {
        let db = fresh_database(backend).await;
        let first = Store::open(&db.url).await.expect("open 1");
        let second = Store::open(&db.url).await.expect("open 2");
        let mut pks = Vec::new();
        for i in 0..20 {
            pks.push(device(&first, &format!("d{i}")).await.0);
        }
        let write = |store: Store, pks: Vec<i64>, reverse: bool| {
            tokio::spawn(async move {
                for batch in 0..20i64 {
                    let mut rows = Vec::new();
                    for &pk in &pks {
                        for t in 0..50 {
                            for s in 0..3 {
                                rows.push(reading(pk, s, batch * 50 + t, Value::Int(t)));
                            }
                        }
                    }
                    if reverse {
                        rows.reverse();
                    }
                    let seqs: Vec<(i64, u64)> = pks.iter().map(|&pk| (pk, batch as u64)).collect();
                    store.write_batch(&rows, &seqs).await.expect("write batch");
                }
            })
        };
        let one = write(first.clone(), pks.clone(), false);
        let two = write(second.clone(), pks.clone(), true);
        one.await.expect("writer 1");
        two.await.expect("writer 2");
        assert_eq!(
            first.count_readings().await.expect("count"),
            20 * 20 * 50 * 3
        );
        second.close().await;
        first.close().await;
    }
);

/// Postgres only: while the server is down every call fails within a few
/// seconds with an error that counts as "unavailable"; once it is back, the
/// writer (whose one connection the restart broke) and the general pool
/// recover by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_fails_calls_fast_and_the_store_recovers() {
    if skip_postgres() {
        eprintln!("skipped: HUB_TEST_SKIP_POSTGRES=1");
        return;
    }
    let cluster = PrivateCluster::start();
    let url = cluster.create_database("restart").await;
    let store = Store::open(&url).await.expect("open");
    let (pk, id, token) = device(&store, "d").await;
    store
        .write_batch(&[reading(pk, 1, 1, Value::Int(1))], &[(pk, 1)])
        .await
        .expect("write before the outage");

    cluster.stop();
    let started = std::time::Instant::now();
    let err = store
        .write_batch(&[reading(pk, 1, 2, Value::Int(2))], &[(pk, 2)])
        .await
        .expect_err("the server is down");
    assert!(err.is_unavailable(), "writer: {err:?}");
    let err = store
        .authenticate_device(&token)
        .await
        .expect_err("the server is down");
    assert!(err.is_unavailable(), "pool: {err:?}");
    let err = store.ping().await.expect_err("the server is down");
    assert!(err.is_unavailable(), "ping: {err:?}");
    let err = store
        .write_batch(&[reading(pk, 1, 2, Value::Int(2))], &[(pk, 2)])
        .await
        .expect_err("still down");
    assert!(err.is_unavailable(), "writer, reconnecting: {err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "calls fail within the acquire timeout, took {:?}",
        started.elapsed()
    );

    cluster.resume();
    // The ingest writer retries a failed batch; the first attempt after the
    // restart may still meet the old connection, the next must succeed.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match store
            .write_batch(&[reading(pk, 1, 2, Value::Int(2))], &[(pk, 2)])
            .await
        {
            Ok(()) => break,
            Err(err) if attempts < 3 => {
                assert!(err.is_unavailable(), "{err:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the writer did not recover: {err:?}"),
        }
    }
    assert!(
        store
            .authenticate_device(&token)
            .await
            .expect("the pool recovered")
            .is_some()
    );
    store.ping().await.expect("ping after the restart");
    assert_eq!(store.count_readings().await.expect("count"), 2);
    let record = store.get_device(&id).await.expect("get").expect("exists");
    assert_eq!(record.last_seq, 2);
    store.close().await;
}
