//! Actuator commands through the tokio transport against the mock hub:
//! handlers run at most once per id, answers follow the protocol's rules,
//! and results are never held back by telemetry.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Behaviour, COUNTER, MockHub, config, set};
use firmware_client::schema::{Command, CommandAction, Downlink, Value, ValueKind};
use firmware_client::{Action, CommandCall, ConfigError, ConnectionState, Device, DeviceConfig};

const RELAY: u16 = 1;
const SETPOINT: u16 = 2;
const LED: u16 = 3;
const WAIT: Duration = Duration::from_secs(10);

/// Every call a handler saw.
type Calls = Arc<Mutex<Vec<CommandCall>>>;

/// The mock hub's device config plus a setpoint (no handler) and an led,
/// and a relay handler that records its calls and reports the new state.
fn relay_config(url: &str, calls: &Calls) -> DeviceConfig {
    let seen = Arc::clone(calls);
    config(url)
        .actuator(SETPOINT, "setpoint", ValueKind::Float)
        .actuator(LED, "led", ValueKind::Int)
        .on_command(RELAY, move |call| {
            seen.lock().expect("calls").push(call.clone());
            match call.action {
                Action::Set(value) => Ok(Some(value)),
                _ => Err("the relay only takes Set".to_owned()),
            }
        })
}

fn calls_for(calls: &Calls, id: u64) -> usize {
    calls
        .lock()
        .expect("calls")
        .iter()
        .filter(|c| c.id == id)
        .count()
}

fn strings(results: &[(usize, u64, &str)]) -> Vec<(usize, u64, String)> {
    results
        .iter()
        .map(|&(conn, id, outcome)| (conn, id, outcome.to_owned()))
        .collect()
}

async fn connected(device: &Device) {
    let mut state = device.state();
    let reached = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await;
    assert!(matches!(reached, Ok(Ok(_))), "not connected");
}

#[tokio::test]
async fn a_set_command_reaches_its_handler_once_and_the_hub_sees_delivered_then_succeeded() {
    let mut command = set(77, RELAY, Value::Bool(true));
    command.expires_at_ms = u64::MAX;
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![command],
        ..Behaviour::default()
    })
    .await;
    let calls = Calls::default();
    let device = Device::start(relay_config(&hub.url(), &calls)).expect("valid config");
    assert_eq!(
        hub.wait_for_results(2).await,
        strings(&[(0, 77, "delivered"), (0, 77, "succeeded: Some(Bool(true))")])
    );
    let seen = calls.lock().expect("calls").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, 77);
    assert_eq!(seen[0].actuator, RELAY);
    assert_eq!(seen[0].action, Action::Set(Value::Bool(true)));
    assert_eq!(seen[0].expires_at_ms, u64::MAX);
    let stats = device.stats();
    assert_eq!(stats.commands_received, 1);
    assert_eq!(stats.commands_applied, 1);
    assert_eq!(stats.commands_rejected + stats.commands_duplicate, 0);
}

#[tokio::test]
async fn a_resend_after_a_reconnect_is_answered_from_memory_without_running_again() {
    // Like a hub that never saw the answer: the same command after every Welcome.
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![set(77, RELAY, Value::Bool(true))],
        ..Behaviour::default()
    })
    .await;
    let calls = Calls::default();
    let device = Device::start(relay_config(&hub.url(), &calls)).expect("valid config");
    hub.wait_for_results(2).await;
    device.disconnect_now();
    hub.wait_for_sessions(2).await;
    let results = hub.wait_for_results(3).await;
    assert_eq!(
        results,
        strings(&[
            (0, 77, "delivered"),
            (0, 77, "succeeded: Some(Bool(true))"),
            (1, 77, "succeeded: Some(Bool(true))"),
        ])
    );
    // Nothing more is coming for it: no second run, no second Delivered.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hub.results().len(), 3);
    assert_eq!(calls_for(&calls, 77), 1);
    let stats = device.stats();
    assert_eq!(stats.commands_received, 2);
    assert_eq!(stats.commands_applied, 1);
    assert_eq!(stats.commands_duplicate, 1);
}

#[tokio::test]
async fn a_resend_while_the_handler_runs_gets_delivered_and_the_result_follows_on_the_new_connection()
 {
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![set(5, RELAY, Value::Bool(false))],
        ..Behaviour::default()
    })
    .await;
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let config = config(&hub.url()).on_command(RELAY, move |call| {
        counted.fetch_add(1, Ordering::SeqCst);
        // Blocks until the test says so (or gives up after a while).
        let _ = gate
            .lock()
            .expect("gate")
            .recv_timeout(Duration::from_secs(20));
        match call.action {
            Action::Set(value) => Ok(Some(value)),
            _ => Err("Set only".to_owned()),
        }
    });
    let device = Device::start(config).expect("valid config");
    assert_eq!(
        hub.wait_for_results(1).await,
        strings(&[(0, 5, "delivered")])
    );
    device.disconnect_now();
    hub.wait_for_sessions(2).await;
    assert_eq!(
        hub.wait_for_results(2).await,
        strings(&[(0, 5, "delivered"), (1, 5, "delivered")]),
        "still running: Delivered only"
    );
    // The blocked handler holds up neither the socket nor telemetry.
    connected(&device).await;
    for i in 0..25 {
        device
            .push(COUNTER, 1_700_000_000_000 + i, Value::Int(i as i64))
            .await
            .expect("pushed");
    }
    assert!(device.flush(WAIT).await, "telemetry flows meanwhile");
    assert_eq!(hub.results().len(), 2);

    release.send(()).expect("handler waiting");
    assert_eq!(
        hub.wait_for_results(3).await[2],
        (1, 5, "succeeded: Some(Bool(false))".to_owned())
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = device.stats();
    assert_eq!((stats.commands_applied, stats.commands_duplicate), (1, 1));
}

#[tokio::test]
async fn expired_unknown_wrong_kind_and_unhandled_commands_are_rejected_without_a_call() {
    let mut expired = set(1, RELAY, Value::Bool(true));
    expired.expires_at_ms = 1_000; // 1970
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![
            expired,
            set(2, 9, Value::Bool(true)),
            set(3, RELAY, Value::Int(1)),
            set(4, LED, Value::Float(1.0)),
            set(5, SETPOINT, Value::Float(21.5)),
            set(6, RELAY, Value::Bool(true)),
        ],
        ..Behaviour::default()
    })
    .await;
    let calls = Calls::default();
    let device = Device::start(relay_config(&hub.url(), &calls)).expect("valid config");
    assert_eq!(
        hub.wait_for_results(7).await,
        strings(&[
            (0, 1, "rejected: expired"),
            (0, 2, "rejected: unknown actuator 9"),
            (0, 3, "rejected: actuator 1 takes bool"),
            (0, 4, "rejected: actuator 3 takes int"),
            (0, 5, "rejected: no handler for actuator 2"),
            (0, 6, "delivered"),
            (0, 6, "succeeded: Some(Bool(true))"),
        ])
    );
    let seen: Vec<u64> = calls.lock().expect("calls").iter().map(|c| c.id).collect();
    assert_eq!(seen, vec![6], "only the valid command reached the handler");
    let stats = device.stats();
    assert_eq!(stats.commands_rejected, 5);
    assert_eq!(stats.commands_applied, 1);

    // A rejected id sent again is rejected again, from memory.
    device.disconnect_now();
    hub.wait_for_sessions(2).await;
    let again = hub.wait_for_results(13).await;
    assert_eq!(again[7], (1, 1, "rejected: expired".to_owned()));
    assert_eq!(again[12], (1, 6, "succeeded: Some(Bool(true))".to_owned()));
    assert_eq!(device.stats().commands_duplicate, 6);
    assert_eq!(calls.lock().expect("calls").len(), 1);
}

#[tokio::test]
async fn handler_errors_and_panics_are_reported_as_failed() {
    let args = heapless::Vec::from_slice(&[Value::Int(3)]).expect("fits");
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![
            set(10, LED, Value::Int(7)),
            Command {
                id: 11,
                actuator: LED,
                action: CommandAction::Invoke {
                    name: "blink",
                    args,
                },
                expires_at_ms: 0,
            },
            set(12, SETPOINT, Value::Float(99.0)),
            set(13, LED, Value::Int(2)),
        ],
        ..Behaviour::default()
    })
    .await;
    let config = config(&hub.url())
        .actuator(SETPOINT, "setpoint", ValueKind::Float)
        .actuator(LED, "led", ValueKind::Int)
        .on_command(LED, |call| match &call.action {
            Action::Set(Value::Int(mode @ 0..=2)) => Ok(Some(Value::Int(*mode))),
            Action::Set(other) => Err(format!("no led mode {other:?}")),
            Action::Invoke { name, args } => {
                // Far over the 123-byte limit, in two-byte characters.
                Err(format!("{name}{args:?}: {}", "é".repeat(100)))
            }
            _ => Err("unexpected action".to_owned()),
        })
        .on_command(SETPOINT, |_| panic!("the setpoint handler exploded"));
    let device = Device::start(config).expect("valid config");
    let results = hub.wait_for_results(8).await;
    let finals: Vec<(u64, String)> = results
        .into_iter()
        .filter(|(_, _, outcome)| outcome != "delivered")
        .map(|(_, id, outcome)| (id, outcome))
        .collect();
    assert_eq!(finals.len(), 4, "{finals:?}");
    assert_eq!(finals[0], (10, "failed: no led mode Int(7)".to_owned()));
    let (id, long) = &finals[1];
    assert_eq!(*id, 11);
    let reason = long.strip_prefix("failed: ").expect("failed");
    assert!(reason.starts_with("blink[Int(3)]: é"), "{reason}");
    assert!(
        reason.len() <= 123 && reason.len() >= 122,
        "{}",
        reason.len()
    );
    assert_eq!(finals[2], (12, "failed: handler panicked".to_owned()));
    assert_eq!(finals[3], (13, "succeeded: Some(Int(2))".to_owned()));
    let stats = device.stats();
    assert_eq!((stats.commands_failed, stats.commands_applied), (3, 1));
}

#[tokio::test]
async fn commands_run_one_at_a_time_in_arrival_order() {
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: (1..=4).map(|id| set(id, LED, Value::Int(1))).collect(),
        ..Behaviour::default()
    })
    .await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&events);
    let config = config(&hub.url())
        .actuator(LED, "led", ValueKind::Int)
        .on_command(LED, move |call| {
            log.lock()
                .expect("events")
                .push(format!("start {}", call.id));
            std::thread::sleep(Duration::from_millis(30));
            log.lock().expect("events").push(format!("end {}", call.id));
            Ok(None)
        });
    let _device = Device::start(config).expect("valid config");
    let results = hub.wait_for_results(8).await;
    let expected: Vec<String> = (1..=4)
        .flat_map(|id| [format!("start {id}"), format!("end {id}")])
        .collect();
    assert_eq!(*events.lock().expect("events"), expected);
    // Each is delivered on arrival; final outcomes follow in order.
    let finals: Vec<u64> = results
        .iter()
        .filter(|(_, _, outcome)| outcome == "succeeded: None")
        .map(|&(_, id, _)| id)
        .collect();
    assert_eq!(finals, vec![1, 2, 3, 4]);
    for id in 1..=4 {
        let delivered = results.iter().position(|r| r.1 == id && r.2 == "delivered");
        let done = results
            .iter()
            .position(|r| r.1 == id && r.2 == "succeeded: None");
        assert!(delivered < done, "{id}: {results:?}");
    }
}

#[tokio::test]
async fn a_command_that_expires_while_queued_is_rejected_without_a_call() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let mut soon = set(2, LED, Value::Int(2));
    // Valid on arrival, expired by the time the first command is done.
    soon.expires_at_ms = now_ms + 2_000;
    let hub = MockHub::start(Behaviour {
        commands_after_welcome: vec![set(1, LED, Value::Int(1)), soon],
        ..Behaviour::default()
    })
    .await;
    let calls = Calls::default();
    let seen = Arc::clone(&calls);
    let config = config(&hub.url())
        .actuator(LED, "led", ValueKind::Int)
        .on_command(LED, move |call| {
            seen.lock().expect("calls").push(call.clone());
            std::thread::sleep(Duration::from_millis(2_500));
            Ok(None)
        });
    let device = Device::start(config).expect("valid config");
    assert_eq!(
        hub.wait_for_results(4).await,
        strings(&[
            (0, 1, "delivered"),
            (0, 2, "delivered"),
            (0, 1, "succeeded: None"),
            (0, 2, "rejected: expired"),
        ])
    );
    assert_eq!(calls_for(&calls, 1), 1);
    assert_eq!(calls_for(&calls, 2), 0);
    let stats = device.stats();
    assert_eq!((stats.commands_applied, stats.commands_rejected), (1, 1));
}

#[tokio::test]
async fn results_go_out_while_the_telemetry_window_is_full() {
    // A hub that never acks: the window (4 frames of 10) fills and stays full.
    let hub = MockHub::start(Behaviour {
        silent: true,
        ..Behaviour::default()
    })
    .await;
    let calls = Calls::default();
    let device = Device::start(relay_config(&hub.url(), &calls)).expect("valid config");
    connected(&device).await;
    for i in 0..100 {
        device
            .push(COUNTER, 1_700_000_000_000 + i, Value::Int(i as i64))
            .await
            .expect("pushed");
    }
    tokio::time::timeout(WAIT, async {
        while hub.state().frames.len() < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the window fills");
    assert!(hub.send(&Downlink::Command(set(42, RELAY, Value::Bool(true)))));
    assert_eq!(
        hub.wait_for_results(2).await,
        strings(&[(0, 42, "delivered"), (0, 42, "succeeded: Some(Bool(true))")])
    );
    // The window is still full: no telemetry went out, nothing was acked.
    assert_eq!(hub.state().frames.len(), 4);
    let stats = device.stats();
    assert_eq!(stats.frames_sent, 4);
    assert_eq!(stats.outstanding, 100);
    assert_eq!(calls_for(&calls, 42), 1);
}

#[tokio::test]
async fn command_memory_bounds_how_many_ids_are_remembered() {
    let hub = MockHub::start(Behaviour::default()).await;
    let calls = Calls::default();
    let mut config = relay_config(&hub.url(), &calls);
    config.command_memory = 2;
    let device = Device::start(config).expect("valid config");
    connected(&device).await;
    for (id, n) in [(1, 2), (2, 4), (3, 6), (3, 7), (2, 8), (1, 10)] {
        assert!(hub.send(&Downlink::Command(set(id, RELAY, Value::Bool(true)))));
        hub.wait_for_results(n).await;
    }
    // 2 and 3 were remembered; 1 had been pushed out by them and ran again.
    assert_eq!(calls_for(&calls, 1), 2);
    assert_eq!(calls_for(&calls, 2), 1);
    assert_eq!(calls_for(&calls, 3), 1);
    assert_eq!(device.stats().commands_duplicate, 2);
}

#[test]
fn handler_and_memory_settings_are_validated() {
    let url = "ws://127.0.0.1:1/ws/device";
    let undeclared = DeviceConfig::new(url, "d.s").on_command(4, |_| Ok(None));
    assert!(matches!(
        undeclared.validate(),
        Err(ConfigError::Invalid {
            field: "handlers",
            ..
        })
    ));
    let declared = DeviceConfig::new(url, "d.s")
        .actuator(4, "valve", ValueKind::Bool)
        .on_command(4, |_| Ok(None));
    assert!(declared.validate().is_ok());
    let mut none = declared.clone();
    none.command_memory = 0;
    assert!(matches!(
        none.validate(),
        Err(ConfigError::Invalid {
            field: "command_memory",
            ..
        })
    ));
    assert!(format!("{declared:?}").contains("handlers: [4]"));
}
