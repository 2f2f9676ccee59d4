//! The web console end to end, in a real headless Chromium (chromedriver,
//! driven with fantoccini; see `common/browser.rs`), against a real hub
//! ([`TestHub`]) with real firmware-client devices streaming over WebSockets.
//!
//! Every test signs in with an API key of its own role and checks the page
//! through the DOM contract of the console (the `data-testid` attributes):
//! the fleet view filling with live devices, a device's chart growing while
//! it streams and a command reaching `succeeded` on a relay that answers, a
//! viewer seeing no command form, device-supplied strings shown as text and
//! never run, a fleet of 1,000 devices kept virtualised and searchable, and
//! the stream state going `reconnecting` and back to `live` across a hub
//! restart. No page may report a Content Security Policy violation in the
//! browser console. Screenshots land in `target/browser-screenshots/`.
#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use browser::Browser;
use common::{TestHub, now_ms};
use fantoccini::key::Key;
use firmware_client::{Action, ConnectionState, Device, DeviceConfig};
use hub::store::Role;
use schema::{Value, ValueKind};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the page gets to reach each expected state.
const WAIT: Duration = Duration::from_secs(30);

/// How often the streaming devices push a reading.
const PACE: Duration = Duration::from_millis(250);

/// The relay's actuator id.
const RELAY: u16 = 1;

/// The conn-state indicator in the header.
const CONN: &str = "[data-testid=conn-state]";

/// A key with `role` on the hub's database.
async fn key(hub: &TestHub, role: Role) -> String {
    hub.store
        .create_api_key_with_role(&format!("console-{role}"), role)
        .await
        .unwrap()
        .key
}

/// How a simulated device is built.
#[derive(Clone)]
struct Spec {
    name: String,
    sensor_name: String,
    unit: String,
    firmware: Option<String>,
    relay_name: Option<String>,
}

impl Spec {
    /// A thermometer named `name`: sensor 1 `temperature` in °C, no relay.
    fn thermometer(name: &str) -> Spec {
        Spec {
            name: name.to_owned(),
            sensor_name: "temperature".into(),
            unit: "°C".into(),
            firmware: None,
            relay_name: None,
        }
    }

    /// The thermometer with relay actuator 1 whose handler answers Ok.
    fn with_relay(mut self) -> Spec {
        self.relay_name = Some("relay".into());
        self
    }
}

/// Simulated devices (firmware-client over real WebSockets), all pushing a
/// temperature reading every [`PACE`] until [`Devices::finish`].
struct Devices {
    /// (id, device) in the order of the specs.
    devices: Arc<Vec<(String, Device)>>,
    /// Commands the relays ran.
    relay_calls: Arc<AtomicUsize>,
    stop: CancellationToken,
    pusher: JoinHandle<()>,
}

impl Devices {
    /// Provisions, connects and starts streaming one device per spec.
    async fn start(hub: &TestHub, specs: &[Spec]) -> Devices {
        let relay_calls = Arc::new(AtomicUsize::new(0));
        let mut devices = Vec::with_capacity(specs.len());
        for spec in specs {
            let (id, token) = hub.add_device(&spec.name).await;
            let mut config = DeviceConfig::new(hub.ws_url(), &token).sensor(
                1,
                &spec.sensor_name,
                &spec.unit,
                ValueKind::Float,
            );
            if let Some(firmware) = &spec.firmware {
                config.firmware = firmware.clone();
            }
            if let Some(relay) = &spec.relay_name {
                let calls = Arc::clone(&relay_calls);
                config =
                    config
                        .actuator(RELAY, relay, ValueKind::Bool)
                        .on_command(RELAY, move |call| match call.action {
                            Action::Set(value) => {
                                calls.fetch_add(1, Ordering::SeqCst);
                                Ok(Some(value))
                            }
                            _ => Err("the relay only takes Set".to_owned()),
                        });
            }
            config.max_batch = 10;
            config.flush_interval = Duration::from_millis(50);
            config.backoff_base = Duration::from_millis(100);
            config.backoff_cap = Duration::from_millis(1_000);
            devices.push((id, Device::start(config).unwrap()));
        }
        for (id, device) in &devices {
            let mut state = device.state();
            let connected = tokio::time::timeout(
                WAIT,
                state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
            )
            .await;
            assert!(matches!(connected, Ok(Ok(_))), "device {id} connected");
        }
        let devices = Arc::new(devices);
        let stop = CancellationToken::new();
        let pusher = tokio::spawn({
            let devices = Arc::clone(&devices);
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(PACE);
                let mut step = 0u32;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let now = now_ms();
                    for (_, device) in devices.iter() {
                        // A full outbox (hub restarting) only delays the chart.
                        let _ = device.try_push(
                            1,
                            now,
                            Value::Float(20.0 + f64::from(step % 50) / 10.0),
                        );
                    }
                    step += 1;
                }
            }
        });
        Devices {
            devices,
            relay_calls,
            stop,
            pusher,
        }
    }

    /// The id of device `index`.
    fn id(&self, index: usize) -> String {
        self.devices[index].0.clone()
    }

    /// Stops pushing and shuts every device down.
    async fn finish(self) {
        self.stop.cancel();
        self.pusher.await.unwrap();
        let devices =
            Arc::try_unwrap(self.devices).unwrap_or_else(|_| panic!("the pusher has stopped"));
        for (_, device) in devices {
            device.shutdown().await;
        }
    }
}

/// `[data-testid=device-row][data-device-id="<id>"]`.
fn row(id: &str) -> String {
    format!("[data-testid=device-row][data-device-id=\"{id}\"]")
}

/// Opens the console, signs in with `key` and waits for the stream to be live.
async fn sign_in(browser: &Browser, hub: &TestHub, key: &str) {
    browser.goto(&format!("{}/", hub.http_url())).await;
    let input = browser.wait_for("input#signin-key", WAIT).await;
    input.send_keys(key).await.unwrap();
    browser
        .wait_for("#signin-submit", WAIT)
        .await
        .click()
        .await
        .unwrap();
    browser.wait_attr(CONN, "data-state", "live", WAIT).await;
    browser.wait_text(CONN, "live", WAIT).await;
}

/// Waits for `[data-testid=fleet-count]` to read exactly `count`.
async fn wait_count(browser: &Browser, count: usize) {
    browser
        .wait_text("[data-testid=fleet-count]", &count.to_string(), WAIT)
        .await;
}

/// Waits for the device row of `id` to show `online`.
async fn wait_online(browser: &Browser, id: &str, online: bool) {
    let css = format!("{} [data-testid=device-online]", row(id));
    browser
        .wait_attr(&css, "data-online", &online.to_string(), WAIT)
        .await;
}

/// `data-points` of the first element matching `css`, as a number.
async fn points(browser: &Browser, css: &str) -> Option<u64> {
    browser.attr_of(css, "data-points").await?.parse().ok()
}

/// Waits until `data-points` of `css` exceeds `above`; returns it.
async fn wait_points_above(browser: &Browser, css: &str, above: u64) -> u64 {
    browser
        .wait_until(&format!("{css} data-points > {above}"), WAIT, || async {
            points(browser, css).await.filter(|&n| n > above)
        })
        .await
}

/// Replaces the fleet search text (typing, so the page sees input events).
async fn search(browser: &Browser, text: &str) {
    let input = browser
        .wait_for("input[data-testid=fleet-search]", WAIT)
        .await;
    let current = input.prop("value").await.unwrap().unwrap_or_default();
    let backspaces: String =
        std::iter::repeat_n(char::from(Key::Backspace), current.chars().count()).collect();
    input.click().await.unwrap();
    if !backspaces.is_empty() {
        input.send_keys(&backspaces).await.unwrap();
    }
    if !text.is_empty() {
        input.send_keys(text).await.unwrap();
    }
}

/// Chooses `value` in the fleet filter.
async fn filter(browser: &Browser, value: &str) {
    browser
        .wait_for("select[data-testid=fleet-filter]", WAIT)
        .await
        .select_by_value(value)
        .await
        .unwrap();
}

/// The ids of the device rows in the DOM.
async fn row_ids(browser: &Browser) -> Vec<String> {
    let ids = browser
        .eval(
            "return Array.from(document.querySelectorAll('[data-testid=device-row]'))\
             .map(r => r.getAttribute('data-device-id'));",
        )
        .await;
    ids.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// GET `path` on the hub's API with `key`.
async fn api_get(hub: &TestHub, key: &str, path: &str) -> Json {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", hub.http_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_reads_a_plain_page() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    browser.goto(&format!("{}/healthz", hub.http_url())).await;
    let body = browser.wait_for("body", WAIT).await;
    let text = body.text().await.unwrap();
    assert!(text.contains("\"status\":\"ok\""), "{text}");
    assert_eq!(
        browser.text_of("body").await.as_deref().map(str::trim),
        Some(text.trim())
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sees_the_fleet_go_live() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Operator).await;
    let specs: Vec<Spec> = (0..5)
        .map(|i| Spec::thermometer(&format!("greenhouse-{i}")))
        .collect();
    let devices = Devices::start(&hub, &specs).await;

    sign_in(&browser, &hub, &key).await;
    browser
        .wait_text("[data-testid=role]", "operator", WAIT)
        .await;
    wait_count(&browser, 5).await;
    for (i, spec) in specs.iter().enumerate() {
        let id = devices.id(i);
        wait_online(&browser, &id, true).await;
        browser
            .wait_text(
                &format!("{} [data-testid=device-name]", row(&id)),
                &spec.name,
                WAIT,
            )
            .await;
        let last_seen = format!("{} [data-testid=device-last-seen]", row(&id));
        browser
            .wait_until(&format!("{last_seen} filled"), WAIT, || async {
                let text = browser.text_of(&last_seen).await?;
                (!text.trim().is_empty()).then_some(())
            })
            .await;
        // The sparkline draws the streamed readings.
        wait_points_above(
            &browser,
            &format!("{} canvas[data-testid=sparkline]", row(&id)),
            0,
        )
        .await;
    }
    assert_eq!(browser.count("[data-testid=device-row]").await, 5);
    browser.screenshot_to("fleet.png").await;

    // The hub overview counts the connected devices and the reading rate.
    browser
        .eval("location.hash = '#/overview'; return true;")
        .await;
    browser
        .wait_text("[data-testid=overview-connected]", "5", WAIT)
        .await;
    browser
        .wait_until("a non-zero overview-rate", WAIT, || async {
            let text = browser.text_of("[data-testid=overview-rate]").await?;
            let number: String = text
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            number.parse::<f64>().ok().filter(|&rate| rate > 0.0)
        })
        .await;
    browser
        .wait_for("[data-testid=overview-commands]", WAIT)
        .await;
    browser.screenshot_to("overview.png").await;
    browser.assert_no_csp_violations().await;

    browser.close().await;
    devices.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_view_charts_live_and_runs_a_command() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Operator).await;
    let specs = [
        Spec::thermometer("pump-house").with_relay(),
        Spec::thermometer("barn"),
    ];
    let devices = Devices::start(&hub, &specs).await;
    let id = devices.id(0);

    sign_in(&browser, &hub, &key).await;
    wait_online(&browser, &id, true).await;
    browser
        .wait_for(&row(&id), WAIT)
        .await
        .click()
        .await
        .unwrap();
    let want = format!("#/devices/{id}");
    browser
        .wait_until(&format!("location.hash {want}"), WAIT, || async {
            (browser.hash().await == want).then_some(())
        })
        .await;
    browser.wait_for("[data-testid=device-title]", WAIT).await;

    // The chart grows while the device streams.
    let chart = "canvas[data-testid=chart][data-sensor=\"1\"]";
    let first = wait_points_above(&browser, chart, 0).await;
    let later = wait_points_above(&browser, chart, first).await;
    eprintln!("chart data-points: {first} then {later}");
    // The window choices are the contract's, and a narrower one still charts.
    let windows = browser
        .eval(
            "return Array.from(document.querySelectorAll(\
             'select[data-testid=chart-window] option')).map(o => o.value);",
        )
        .await;
    assert_eq!(
        windows,
        json!(["300", "900", "3600", "21600", "86400"]),
        "chart-window options"
    );
    browser
        .wait_for("select[data-testid=chart-window]", WAIT)
        .await
        .select_by_value("300")
        .await
        .unwrap();
    wait_points_above(&browser, chart, 0).await;

    let latest = "[data-testid=sensor-latest][data-sensor=\"1\"]";
    browser
        .wait_text(
            &format!("{latest} [data-testid=sensor-name]"),
            "temperature",
            WAIT,
        )
        .await;
    browser
        .wait_text(&format!("{latest} [data-testid=sensor-unit]"), "°C", WAIT)
        .await;
    let value_css = format!("{latest} [data-testid=sensor-value]");
    let value = browser
        .wait_until("a latest sensor value", WAIT, || async {
            browser
                .text_of(&value_css)
                .await
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty() && t != "—" && t != "-")
        })
        .await;
    let number: f64 = value
        .trim_end_matches("°C")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sensor-value {value:?} is a number"));
    assert!((20.0..=25.0).contains(&number), "latest value {number}");

    // A command through the form reaches `succeeded` on the relay.
    let form = format!("form[data-testid=command-form][data-actuator=\"{RELAY}\"]");
    browser.wait_for(&form, WAIT).await;
    browser
        .wait_for(&format!("{form} [data-testid=command-value]"), WAIT)
        .await
        .select_by_value("true")
        .await
        .unwrap();
    browser
        .wait_for(&format!("{form} [data-testid=command-send]"), WAIT)
        .await
        .click()
        .await
        .unwrap();
    let command_id = browser
        .wait_until("a command row", WAIT, || async {
            browser
                .attr_of("[data-testid=command-row]", "data-command-id")
                .await
        })
        .await;
    let status = format!(
        "[data-testid=command-row][data-command-id=\"{command_id}\"] \
         [data-testid=command-status]"
    );
    browser.wait_text(&status, "succeeded", WAIT).await;
    assert_eq!(devices.relay_calls.load(Ordering::SeqCst), 1);
    let command = api_get(
        &hub,
        &key,
        &format!("/api/v1/devices/{id}/commands/{command_id}"),
    )
    .await;
    assert_eq!(command["status"], json!("succeeded"), "{command}");
    browser
        .eval_with(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'}); return true;",
            vec![Json::from(status.as_str())],
        )
        .await;
    browser.screenshot_to("device.png").await;
    browser.assert_no_csp_violations().await;

    browser.close().await;
    devices.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_sees_devices_but_no_command_form() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Viewer).await;
    let devices = Devices::start(&hub, &[Spec::thermometer("silo").with_relay()]).await;
    let id = devices.id(0);

    sign_in(&browser, &hub, &key).await;
    browser
        .wait_text("[data-testid=role]", "viewer", WAIT)
        .await;
    wait_count(&browser, 1).await;
    wait_online(&browser, &id, true).await;
    // Rows are focusable and open with Enter too.
    browser
        .wait_for(&row(&id), WAIT)
        .await
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    let want = format!("#/devices/{id}");
    browser
        .wait_until(&format!("location.hash {want}"), WAIT, || async {
            (browser.hash().await == want).then_some(())
        })
        .await;
    browser.wait_for("[data-testid=device-title]", WAIT).await;
    browser
        .wait_for("[data-testid=sensor-latest][data-sensor=\"1\"]", WAIT)
        .await;
    wait_points_above(&browser, "canvas[data-testid=chart][data-sensor=\"1\"]", 0).await;
    // The device view has rendered (sensors, chart, data); give a late
    // form a moment to appear before asserting there is none.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        browser.count("form[data-testid=command-form]").await,
        0,
        "a viewer gets no command form"
    );
    assert_eq!(browser.count("[data-testid=command-send]").await, 0);
    browser.screenshot_to("device-viewer.png").await;
    browser.assert_no_csp_violations().await;

    browser.close().await;
    devices.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_supplied_strings_are_text_never_markup() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Operator).await;
    let device_name = r#"<img src=x onerror="window.__xss=1">"#;
    let sensor_name = "<script>window.__xss=2</script>";
    // Units are at most 16 bytes: markup plus an entity that innerHTML would decode.
    let unit = "<i>u</i>&amp;";
    let firmware = r#"<img src=x onerror="window.__xss=3">"#;
    let relay = r#"<img src=x onerror="window.__xss=4">"#;
    let spec = Spec {
        name: device_name.into(),
        sensor_name: sensor_name.into(),
        unit: unit.into(),
        firmware: Some(firmware.into()),
        relay_name: Some(relay.into()),
    };
    let devices = Devices::start(&hub, &[spec]).await;
    let id = devices.id(0);

    sign_in(&browser, &hub, &key).await;
    wait_online(&browser, &id, true).await;
    let name_css = format!("{} [data-testid=device-name]", row(&id));
    browser.wait_text(&name_css, device_name, WAIT).await;
    assert_markup_free(&browser, &name_css).await;
    assert_nothing_ran(&browser).await;

    browser
        .wait_for(&row(&id), WAIT)
        .await
        .click()
        .await
        .unwrap();
    let latest = "[data-testid=sensor-latest][data-sensor=\"1\"]";
    let sensor_css = format!("{latest} [data-testid=sensor-name]");
    let unit_css = format!("{latest} [data-testid=sensor-unit]");
    browser.wait_text(&sensor_css, sensor_name, WAIT).await;
    browser.wait_text(&unit_css, unit, WAIT).await;
    assert_markup_free(&browser, &sensor_css).await;
    assert_markup_free(&browser, &unit_css).await;
    let title = browser
        .text_of("[data-testid=device-title]")
        .await
        .unwrap_or_default();
    assert!(
        title.contains(device_name) || title.contains(&id),
        "device-title {title:?} names the device literally"
    );
    assert_markup_free(&browser, "[data-testid=device-title]").await;
    // The firmware string and the relay's name, wherever the page shows them.
    wait_points_above(&browser, "canvas[data-testid=chart][data-sensor=\"1\"]", 0).await;
    let body = browser.text_of("body").await.unwrap_or_default();
    eprintln!(
        "firmware shown literally: {}; relay name shown literally: {}",
        body.contains(firmware),
        body.contains(relay)
    );
    assert_nothing_ran(&browser).await;
    browser.screenshot_to("device-xss.png").await;
    browser.assert_no_csp_violations().await;

    browser.close().await;
    devices.finish().await;
}

/// The element holds text only: no child elements (an `<img>` or `<script>`
/// from the string would be one).
async fn assert_markup_free(browser: &Browser, css: &str) {
    let children = browser
        .eval_with(
            "const e = document.querySelector(arguments[0]); \
             return e ? e.querySelectorAll('img, script, i, svg').length : -1;",
            vec![Json::from(css)],
        )
        .await;
    assert_eq!(
        children,
        json!(0),
        "{css} holds elements parsed from a device string"
    );
}

/// No injected handler or script ran, and none of them is in the DOM.
async fn assert_nothing_ran(browser: &Browser) {
    assert_eq!(
        browser.eval("return window.__xss === undefined;").await,
        json!(true),
        "an injected script ran"
    );
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('img[src=\"x\"], script:not([src])').length;")
            .await,
        json!(0),
        "injected markup reached the DOM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_stay_virtualised_and_searchable() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Operator).await;
    const TOTAL: usize = 1_000;
    const LIVE: usize = 3;
    for i in 0..TOTAL - LIVE {
        hub.store
            .create_device(&format!("bulk-{i:04}"))
            .await
            .unwrap();
    }
    let specs: Vec<Spec> = (0..LIVE)
        .map(|i| Spec::thermometer(&format!("live-{i}")))
        .collect();
    let devices = Devices::start(&hub, &specs).await;

    sign_in(&browser, &hub, &key).await;
    wait_count(&browser, TOTAL).await;
    let rows = browser.count("[data-testid=device-row]").await;
    assert!(
        (1..100).contains(&rows),
        "{rows} device rows in the DOM for {TOTAL} devices: the list is not virtualised"
    );
    browser.screenshot_to("fleet-1000.png").await;

    // Search: by name, case-insensitively.
    search(&browser, "bulk-00").await;
    wait_count(&browser, 100).await;
    search(&browser, "LIVE-").await;
    wait_count(&browser, LIVE).await;
    let mut ids = row_ids(&browser).await;
    ids.sort();
    let mut want: Vec<String> = (0..LIVE).map(|i| devices.id(i)).collect();
    want.sort();
    assert_eq!(ids, want, "the search shows exactly the matching rows");
    // By id.
    let one = devices.id(1);
    search(&browser, &one[..10]).await;
    wait_count(&browser, 1).await;
    search(&browser, "").await;
    wait_count(&browser, TOTAL).await;

    // Filter: online shows the connected ones only; offline the rest.
    filter(&browser, "online").await;
    wait_count(&browser, LIVE).await;
    let mut ids = row_ids(&browser).await;
    ids.sort();
    assert_eq!(
        ids, want,
        "the online filter shows exactly the connected devices"
    );
    for id in &want {
        wait_online(&browser, id, true).await;
    }
    filter(&browser, "offline").await;
    wait_count(&browser, TOTAL - LIVE).await;
    assert!(browser.count("[data-testid=device-row]").await < 100);
    let online_rows = browser
        .count("[data-testid=device-row] [data-testid=device-online][data-online=\"true\"]")
        .await;
    assert_eq!(online_rows, 0, "the offline filter shows no online device");
    filter(&browser, "all").await;
    wait_count(&browser, TOTAL).await;
    browser.assert_no_csp_violations().await;

    browser.close().await;
    devices.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reconnects_across_a_hub_restart() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let mut hub = TestHub::start().await;
    let key = key(&hub, Role::Operator).await;
    let devices = Devices::start(&hub, &[Spec::thermometer("well")]).await;
    let id = devices.id(0);

    sign_in(&browser, &hub, &key).await;
    wait_online(&browser, &id, true).await;

    hub.stop().await;
    browser
        .wait_attr(CONN, "data-state", "reconnecting", WAIT)
        .await;
    browser.wait_text(CONN, "reconnecting", WAIT).await;
    browser.screenshot_to("reconnecting.png").await;

    hub.restart().await;
    browser
        .wait_attr(CONN, "data-state", "live", Duration::from_secs(60))
        .await;
    browser.wait_text(CONN, "live", WAIT).await;
    // Events flow over the new stream: the device leaving shows at once.
    wait_online(&browser, &id, true).await;
    devices.finish().await;
    wait_online(&browser, &id, false).await;
    browser.assert_no_csp_violations().await;

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_sign_out_forgets_the_key() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Admin).await;

    browser.goto(&format!("{}/", hub.http_url())).await;
    let input = browser.wait_for("input#signin-key", WAIT).await;
    input.send_keys("not-a-key.at-all").await.unwrap();
    browser
        .wait_for("#signin-submit", WAIT)
        .await
        .click()
        .await
        .unwrap();
    let error = browser
        .wait_until("a visible signin-error", WAIT, || async {
            let element = browser.find("[data-testid=signin-error]").await?;
            let shown = element.is_displayed().await.unwrap_or(false);
            let text = element.text().await.unwrap_or_default();
            (shown && !text.trim().is_empty()).then_some(text)
        })
        .await;
    eprintln!("signin-error: {error}");
    assert_ne!(
        browser.attr_of(CONN, "data-state").await.as_deref(),
        Some("live"),
        "no live stream with a wrong key"
    );

    // The right key signs in; sign-out forgets it.
    let input = browser.wait_for("input#signin-key", WAIT).await;
    input.clear().await.unwrap();
    input.send_keys(&key).await.unwrap();
    browser
        .wait_for("#signin-submit", WAIT)
        .await
        .click()
        .await
        .unwrap();
    browser.wait_attr(CONN, "data-state", "live", WAIT).await;
    browser.wait_text("[data-testid=role]", "admin", WAIT).await;
    browser
        .wait_for("[data-testid=signout]", WAIT)
        .await
        .click()
        .await
        .unwrap();
    let input = browser.wait_for("input#signin-key", WAIT).await;
    browser
        .wait_until("the sign-in form shown again", WAIT, || async {
            input.is_displayed().await.unwrap_or(false).then_some(())
        })
        .await;
    let stored = browser
        .eval(
            "return Array.from({length: sessionStorage.length}, (_, i) => \
             sessionStorage.getItem(sessionStorage.key(i))).join('\\n');",
        )
        .await;
    assert!(
        !stored.as_str().unwrap_or_default().contains(&key),
        "the key is gone from sessionStorage after sign-out"
    );
    browser.assert_no_csp_violations().await;
    browser.close().await;
}

/// The console's security headers, and a control for the CSP check: markup
/// injected with an inline handler is refused and reported in the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sends_its_security_headers_and_csp_violations_are_seen() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let hub = TestHub::start().await;
    let csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
               connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
               form-action 'self'";
    for path in ["/", "/console/app.js", "/console/style.css"] {
        let response = reqwest::get(format!("{}{path}", hub.http_url()))
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("content-security-policy").as_deref(),
            Some(csp),
            "{path}"
        );
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
    }

    browser.goto(&format!("{}/", hub.http_url())).await;
    browser.wait_for("input#signin-key", WAIT).await;
    browser.assert_no_csp_violations().await;
    browser
        .eval(
            "document.body.insertAdjacentHTML('beforeend', \
             '<img src=\"data:,\" onerror=\"window.__xss=9\" onload=\"window.__xss=9\">'); \
             return true;",
        )
        .await;
    browser
        .wait_until("a CSP violation in the console", WAIT, || async {
            let log = browser.console_log().await;
            log.iter()
                .any(browser::LogEntry::is_csp_violation)
                .then_some(())
        })
        .await;
    assert_eq!(
        browser.eval("return window.__xss === undefined;").await,
        json!(true),
        "the CSP refused the inline handler"
    );
    browser.close().await;
}

/// The page's content overflows the viewport sideways (a phone would scroll).
async fn overflows_sideways(browser: &Browser) -> bool {
    browser
        .eval("return document.documentElement.scrollWidth > window.innerWidth + 1;")
        .await
        .as_bool()
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_fits_a_phone_and_works_from_the_keyboard() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    // A phone's viewport: 375 CSS pixels wide.
    browser.client.set_window_size(375, 812).await.unwrap();
    let width = browser.eval("return window.innerWidth;").await;
    assert!(
        width.as_u64().is_some_and(|w| w <= 400),
        "the viewport is phone-sized: {width}"
    );
    let hub = TestHub::start().await;
    let key = key(&hub, Role::Operator).await;
    let devices = Devices::start(
        &hub,
        &[Spec::thermometer("a-rather-long-device-name-for-a-phone").with_relay()],
    )
    .await;
    let id = devices.id(0);

    // Sign in with the keyboard only: type the key, press Enter.
    browser.goto(&hub.http_url()).await;
    let input = browser.wait_for("input#signin-key", WAIT).await;
    input.send_keys(&key).await.unwrap();
    input.send_keys(&Key::Enter.to_string()).await.unwrap();
    wait_count(&browser, 1).await;
    wait_online(&browser, &id, true).await;
    assert!(
        !overflows_sideways(&browser).await,
        "the fleet view fits 375 px"
    );
    browser.screenshot_to("phone-fleet.png").await;

    // Tab from the top of the page reaches the device's row; Enter opens it.
    let reached = browser
        .eval_with(
            "document.activeElement && document.activeElement.blur();
             const row = document.querySelector(arguments[0]);
             return row !== null && row.tabIndex >= 0;",
            vec![Json::String(row(&id))],
        )
        .await;
    assert_eq!(reached, Json::Bool(true), "the device row is focusable");
    let mut focused_row = false;
    for _ in 0..40 {
        browser
            .client
            .active_element()
            .await
            .unwrap()
            .send_keys(&Key::Tab.to_string())
            .await
            .unwrap();
        let on_row = browser
            .eval_with(
                "const a = document.activeElement;
                 return a !== null && a.closest(arguments[0]) !== null;",
                vec![Json::String(row(&id))],
            )
            .await;
        if on_row == Json::Bool(true) {
            focused_row = true;
            break;
        }
    }
    assert!(focused_row, "Tab reaches the device row");
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    browser.wait_for("[data-testid=device-title]", WAIT).await;
    wait_points_above(&browser, "canvas[data-testid=chart][data-sensor=\"1\"]", 0).await;
    browser
        .wait_for("form[data-testid=command-form]", WAIT)
        .await;
    assert!(
        !overflows_sideways(&browser).await,
        "the device view fits 375 px"
    );
    browser.screenshot_to("phone-device.png").await;

    browser
        .eval("location.hash = '#/overview'; return true;")
        .await;
    browser
        .wait_for("[data-testid=overview-connected]", WAIT)
        .await;
    assert!(
        !overflows_sideways(&browser).await,
        "the overview fits 375 px"
    );
    browser.assert_no_csp_violations().await;

    browser.close().await;
    devices.finish().await;
}
