//! The command store on its own, on every backend: what is stored and read
//! back, idempotency keys, paging, which commands are open or due, and the
//! conditional transitions that keep two writers (two hubs, or a device
//! answer racing the expiry sweep) from moving a command backwards.
#![allow(clippy::unwrap_used)]

mod common;

use common::db::{Backend, TestDatabase, fresh_database};
use hub::store::{
    CommandAction, CommandQuery, CommandRecord, CommandStatus, Created, DeviceOutcome, NewCommand,
    OutcomeApplied, ReplyTo, Store,
};
use schema::Value;

async fn open(backend: Backend) -> (TestDatabase, Store) {
    let db = fresh_database(backend).await;
    let store = Store::open(&db.url).await.expect("open the store");
    (db, store)
}

async fn device_pk(store: &Store, name: &str) -> i64 {
    let new = store.create_device(name).await.unwrap();
    store.get_device(&new.id).await.unwrap().unwrap().pk
}

fn new_command(device_pk: i64, key: Option<&str>, created_ms: i64) -> NewCommand {
    NewCommand {
        device_pk,
        actuator_id: 1,
        actuator_name: "relay".into(),
        action: CommandAction::Set(Value::Bool(true)),
        idempotency_key: key.map(str::to_owned),
        source: "api:test".into(),
        created_ms,
        expires_ms: created_ms + 60_000,
        reply: None,
    }
}

async fn create(store: &Store, new: &NewCommand) -> CommandRecord {
    match store.create_command(new).await.unwrap() {
        Created::New(record) => record,
        Created::Existing(record) => panic!("expected a new command, got {record:?}"),
    }
}

backend_test!(commands_round_trip_with_every_field, |backend| async move {
    let (_db, store) = open(backend).await;
    let pk = device_pk(&store, "d").await;
    let mut new = new_command(pk, Some("k"), 1_000);
    new.action = CommandAction::Invoke {
        name: "pulse".into(),
        args: vec![Value::Int(-5), Value::Float(0.25), Value::Bool(false)],
    };
    new.reply = Some(ReplyTo {
        topic: "replies/1".into(),
        correlation: Some(vec![0, 255, 7]),
    });
    let record = create(&store, &new).await;
    assert_eq!(record.status, CommandStatus::Queued);
    assert_eq!(record.action, new.action);
    assert_eq!(record.reply, new.reply);
    assert_eq!(record.idempotency_key.as_deref(), Some("k"));
    assert_eq!((record.created_ms, record.expires_ms), (1_000, 61_000));
    assert_eq!(record.attempts, 0);
    assert_eq!(
        store.command(record.id).await.unwrap(),
        Some(record.clone())
    );

    let sent = store
        .record_command_sent(&record, 2_000)
        .await
        .unwrap()
        .unwrap();
    let done = store
        .record_command_outcome(
            pk,
            record.id,
            &DeviceOutcome::Succeeded(Some(Value::Float(21.5))),
            3_000,
        )
        .await
        .unwrap();
    let OutcomeApplied::Changed(done) = done else {
        panic!("expected a change, got {done:?}")
    };
    assert_eq!(done.sent_ms, sent.sent_ms);
    assert_eq!(done.result_value, Some(Value::Float(21.5)));
    assert_eq!(store.command(record.id).await.unwrap(), Some(done));
});

backend_test!(
    an_idempotency_key_is_unique_per_device,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let a = device_pk(&store, "a").await;
        let b = device_pk(&store, "b").await;
        let first = create(&store, &new_command(a, Some("op"), 1)).await;
        match store
            .create_command(&new_command(a, Some("op"), 2))
            .await
            .unwrap()
        {
            Created::Existing(existing) => assert_eq!(existing, first),
            Created::New(record) => panic!("stored twice: {record:?}"),
        }
        // Another device may use the same key; no key never conflicts.
        create(&store, &new_command(b, Some("op"), 3)).await;
        create(&store, &new_command(a, None, 4)).await;
        create(&store, &new_command(a, None, 5)).await;

        // Concurrent requests with one key store one command.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.create_command(&new_command(b, Some("race"), i)).await },
                )
            })
            .collect();
        let mut ids = Vec::new();
        for racer in racers {
            match racer.await.unwrap().unwrap() {
                Created::New(r) | Created::Existing(r) => ids.push(r.id),
            }
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one command for one key: {ids:?}");
    }
);

backend_test!(
    lists_page_newest_first_and_filter_by_status,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let pk = device_pk(&store, "d").await;
        let other = device_pk(&store, "other").await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(create(&store, &new_command(pk, None, i)).await);
        }
        create(&store, &new_command(other, None, 9)).await;
        store.record_command_sent(&ids[1], 10).await.unwrap();

        let mut seen = Vec::new();
        let mut before_id = None;
        loop {
            let page = store
                .list_commands(&CommandQuery {
                    device_pk: pk,
                    status: None,
                    before_id,
                    limit: 2,
                })
                .await
                .unwrap();
            seen.extend(page.commands.iter().map(|c| c.id));
            match page.next_before_id {
                Some(next) => before_id = Some(next),
                None => break,
            }
        }
        let mut expected: Vec<i64> = ids.iter().map(|c| c.id).collect();
        expected.reverse();
        assert_eq!(seen, expected);

        let sent = store
            .list_commands(&CommandQuery {
                device_pk: pk,
                status: Some(CommandStatus::Sent),
                before_id: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(
            sent.commands.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![ids[1].id]
        );
    }
);

backend_test!(open_and_due_commands_are_found, |backend| async move {
    let (_db, store) = open(backend).await;
    let pk = device_pk(&store, "d").await;
    let early = create(&store, &new_command(pk, None, 0)).await; // expires at 60_000
    let late = create(&store, &new_command(pk, None, 30_000)).await; // 90_000
    let done = create(&store, &new_command(pk, None, 1)).await;
    store
        .record_command_outcome(pk, done.id, &DeviceOutcome::Rejected("no".into()), 5)
        .await
        .unwrap();
    let open: Vec<i64> = store
        .open_commands(pk, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        open,
        vec![early.id, late.id],
        "oldest first, finished ones left out"
    );
    let due: Vec<i64> = store
        .due_commands(60_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(due, vec![early.id]);
    let expired = store.expire_command(&early, 60_000).await.unwrap().unwrap();
    assert_eq!(expired.status, CommandStatus::Expired);
    assert!(store.due_commands(60_000, 10).await.unwrap().is_empty());
    assert_eq!(store.open_commands(pk, 10).await.unwrap().len(), 1);
});

backend_test!(
    a_stale_transition_loses_to_the_newer_state,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let pk = device_pk(&store, "d").await;
        let record = create(&store, &new_command(pk, None, 0)).await;
        let sent = store
            .record_command_sent(&record, 10)
            .await
            .unwrap()
            .unwrap();
        store
            .record_command_outcome(pk, record.id, &DeviceOutcome::Succeeded(None), 20)
            .await
            .unwrap();
        // The sweep read the command while it was `sent`; its expiry must not
        // overwrite the device's answer, and a stale send must not reopen it.
        assert!(store.expire_command(&sent, 70_000).await.unwrap().is_none());
        assert!(
            store
                .record_command_sent(&sent, 30)
                .await
                .unwrap()
                .is_none()
        );
        let stored = store.command(record.id).await.unwrap().unwrap();
        assert_eq!(stored.status, CommandStatus::Succeeded);
        assert_eq!(stored.attempts, 1);

        // Many concurrent answers: exactly one final outcome wins, the rest are no-ops.
        let racer = create(&store, &new_command(pk, None, 0)).await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let outcome = if i % 2 == 0 {
                    DeviceOutcome::Succeeded(None)
                } else {
                    DeviceOutcome::Failed(format!("attempt {i}"))
                };
                tokio::spawn(async move {
                    store
                        .record_command_outcome(pk, racer.id, &outcome, 100 + i)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut changed = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), OutcomeApplied::Changed(_)) {
                changed += 1;
            }
        }
        assert_eq!(changed, 1);

        // Another device's answer is as good as none.
        let other = device_pk(&store, "other").await;
        let mine = create(&store, &new_command(pk, None, 0)).await;
        assert!(matches!(
            store
                .record_command_outcome(other, mine.id, &DeviceOutcome::Succeeded(None), 1)
                .await
                .unwrap(),
            OutcomeApplied::Unknown
        ));
        assert_eq!(
            store.command(mine.id).await.unwrap().unwrap().status,
            CommandStatus::Queued
        );
    }
);

backend_test!(
    retention_deletes_only_old_finished_commands,
    |backend| async move {
        let (_db, store) = open(backend).await;
        let pk = device_pk(&store, "d").await;
        let old_done = create(&store, &new_command(pk, None, 0)).await;
        store
            .record_command_outcome(pk, old_done.id, &DeviceOutcome::Succeeded(None), 1_000)
            .await
            .unwrap();
        let old_open = create(&store, &new_command(pk, None, 0)).await;
        let new_done = create(&store, &new_command(pk, None, 0)).await;
        store
            .record_command_outcome(pk, new_done.id, &DeviceOutcome::Failed("x".into()), 5_000)
            .await
            .unwrap();
        assert_eq!(
            store
                .delete_commands_finished_before(2_000, 10)
                .await
                .unwrap(),
            1
        );
        assert!(store.command(old_done.id).await.unwrap().is_none());
        assert!(
            store.command(old_open.id).await.unwrap().is_some(),
            "unfinished: kept"
        );
        assert!(
            store.command(new_done.id).await.unwrap().is_some(),
            "recent: kept"
        );
        assert_eq!(
            store
                .delete_commands_finished_before(2_000, 10)
                .await
                .unwrap(),
            0
        );
    }
);
