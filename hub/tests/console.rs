//! The operator console's files as the hub serves them, over a real socket:
//! `/` is the page with the exact Content-Security-Policy and the other
//! security headers; every asset the page references, and every module the
//! JavaScript imports (followed transitively), is served with its content
//! type and the same headers; unknown files are 404 (with the headers too).
//!
//! Static checks on the embedded files back up the CSP: no inline script
//! bodies, `style=` or `on*=` attributes in the HTML, and no HTML sinks
//! (`innerHTML`, `outerHTML`, `insertAdjacentHTML`, `document.write`, `eval`)
//! anywhere in the JavaScript, so device- and caller-supplied strings can
//! only ever become text. The browser end-to-end tests are in
//! `console_browser.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, VecDeque};

use common::TestHub;
use hub::console::{ASSETS, CONTENT_SECURITY_POLICY};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

const EXPECTED_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The security headers every console response carries.
fn assert_security_headers(headers: &HeaderMap, what: &str) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(get("content-security-policy"), EXPECTED_CSP, "{what}: CSP");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("cache-control"), "no-cache", "{what}");
}

/// The content type a console file must be served with.
fn expected_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        other => panic!("unexpected console file type {other:?} ({path})"),
    }
}

/// Values of `attr="..."` in `html` (double or single quotes).
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    for quote in ['"', '\''] {
        let needle = format!(" {attr}={quote}");
        let mut from = 0;
        while let Some(at) = lower[from..].find(&needle) {
            let start = from + at + needle.len();
            let Some(len) = html[start..].find(quote) else {
                break;
            };
            out.push(html[start..start + len].to_owned());
            from = start + len;
        }
    }
    out
}

/// Static module specifiers in `js`: `import … from "x"`, `export … from
/// "x"`, `import "x"` and `import("x")`.
fn import_specifiers(js: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["from ", "import ", "import("] {
        let mut from = 0;
        while let Some(at) = js[from..].find(prefix) {
            let start = from + at + prefix.len();
            from = start;
            let rest = js[start..].trim_start();
            let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            if let Some(len) = rest[1..].find(quote) {
                out.push(rest[1..1 + len].to_owned());
            }
        }
    }
    out
}

/// The URL path of `specifier` imported from a module under `/console/`.
fn resolve(specifier: &str) -> String {
    if let Some(name) = specifier.strip_prefix("./") {
        format!("/console/{name}")
    } else if specifier.starts_with("/console/") {
        specifier.to_owned()
    } else {
        panic!("import {specifier:?} is neither ./relative nor under /console/");
    }
}

#[tokio::test]
async fn the_page_and_everything_it_loads_are_served_with_the_csp() {
    let hub = TestHub::start().await;
    let client = reqwest::Client::new();

    let response = client.get(hub.http_url() + "/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers(), "/");
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert_eq!(CONTENT_SECURITY_POLICY, EXPECTED_CSP);

    // Everything index.html references, then every module those import.
    let mut queue: VecDeque<String> = attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
        .filter(|url| url.starts_with("/console/"))
        .collect();
    assert!(
        queue.iter().any(|u| u.ends_with(".js")) && queue.iter().any(|u| u.ends_with(".css")),
        "index.html loads a module and a stylesheet: {queue:?}"
    );
    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = client
            .get(format!("{}{path}", hub.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_security_headers(response.headers(), &path);
        assert_eq!(
            response.headers()["content-type"],
            expected_type(&path),
            "{path}"
        );
        let body = response.text().await.unwrap();
        if path.ends_with(".js") {
            queue.extend(import_specifiers(&body).iter().map(|s| resolve(s)));
        }
    }
    // The whole app is reachable from the page: every shipped module is
    // loaded by it (no dead file), and the walk found each one.
    for asset in ASSETS.iter().filter(|a| a.name != "index.html") {
        assert!(
            seen.contains(&format!("/console/{}", asset.name)),
            "{} is shipped but never loaded (loaded: {seen:?})",
            asset.name
        );
    }

    // Every embedded file is also served by name with its type.
    for asset in ASSETS {
        let path = format!("/console/{}", asset.name);
        let response = client
            .get(format!("{}{path}", hub.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_security_headers(response.headers(), &path);
        assert_eq!(
            response.headers()["content-type"],
            expected_type(&path),
            "{path}"
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), asset.body);
    }
}

#[tokio::test]
async fn unknown_console_files_are_404_with_the_same_headers() {
    let hub = TestHub::start().await;
    let client = reqwest::Client::new();
    // (path, whether the console answers it; the others fall through to
    // the hub's plain 404: a client normalises `%2e%2e`, and `/console/`
    // names no file).
    for (path, ours) in [
        ("/console/nope.js", true),
        ("/console/app.js.map", true),
        ("/console/sub/app.js", true),
        ("/console/..%2fsrc%2fconsole.rs", true),
        ("/console/%2e%2e/Cargo.toml", false),
        ("/console/", false),
    ] {
        let response = client
            .get(format!("{}{path}", hub.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        if ours {
            assert_security_headers(response.headers(), path);
        }
    }
    // The API keeps its own JSON 404s.
    let response = client
        .get(hub.http_url() + "/api/v1/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get("content-security-policy").is_none());
}

#[test]
fn every_file_in_the_console_folder_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "hub/console/ and console::ASSETS differ");
}

#[test]
fn html_has_no_inline_script_style_or_handlers() {
    for asset in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
        let html = std::str::from_utf8(asset.body).unwrap();
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "{}: <style> element", asset.name);
        assert!(
            !lower.contains("javascript:"),
            "{}: javascript: URL",
            asset.name
        );
        // Every tag's attributes: no style=, no on*= handlers.
        for tag in lower.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            for word in tag.split(|c: char| c.is_ascii_whitespace()) {
                let name = word.split('=').next().unwrap_or_default();
                assert!(
                    name != "style",
                    "{}: style attribute in <{tag}>",
                    asset.name
                );
                assert!(
                    !(name.len() > 2
                        && name.starts_with("on")
                        && name[2..].chars().all(|c| c.is_ascii_alphabetic())
                        && word.contains('=')),
                    "{}: event handler attribute in <{tag}>",
                    asset.name
                );
            }
        }
        // Scripts only by src, with empty bodies.
        let mut rest = lower.as_str();
        while let Some(at) = rest.find("<script") {
            let after = &rest[at..];
            let open_end = after.find('>').unwrap();
            let open = &after[..open_end];
            assert!(
                open.contains(" src="),
                "{}: <script> without src",
                asset.name
            );
            let close = after.find("</script>").unwrap();
            assert!(
                after[open_end + 1..close].trim().is_empty(),
                "{}: inline script body",
                asset.name
            );
            rest = &after[close..];
        }
    }
}

#[test]
fn javascript_never_writes_markup() {
    let sinks = [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "createContextualFragment",
        "srcdoc",
        "DOMParser",
        "setAttribute(\"style\"",
        "setAttribute('style'",
    ];
    let mut modules = 0;
    for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
        modules += 1;
        let js = std::str::from_utf8(asset.body).unwrap();
        for sink in sinks {
            assert!(!js.contains(sink), "{} uses {sink}", asset.name);
        }
        // Timers take functions, never strings of code.
        for timer in [
            "setTimeout(\"",
            "setInterval(\"",
            "setTimeout('",
            "setInterval('",
        ] {
            assert!(!js.contains(timer), "{} passes code to a timer", asset.name);
        }
    }
    assert!(modules >= 5, "only {modules} modules embedded");
}

#[test]
fn the_dom_contract_names_are_in_the_sources() {
    // A cheap guard that a rename does not silently break the browser tests.
    let all: String = ASSETS
        .iter()
        .map(|a| std::str::from_utf8(a.body).unwrap())
        .collect();
    for name in [
        "signin-key",
        "signin-submit",
        "signin-error",
        "signout",
        "conn-state",
        "\"role\"",
        "fleet-search",
        "fleet-filter",
        "fleet-count",
        "device-row",
        "data-device-id",
        "device-name",
        "device-online",
        "data-online",
        "device-last-seen",
        "sparkline",
        "data-points",
        "device-title",
        "sensor-latest",
        "data-sensor",
        "sensor-name",
        "sensor-value",
        "sensor-unit",
        "chart-window",
        "command-form",
        "data-actuator",
        "command-value",
        "command-send",
        "command-row",
        "data-command-id",
        "command-status",
        "overview-connected",
        "overview-rate",
        "overview-commands",
    ] {
        assert!(all.contains(name), "{name} missing from the console");
    }
    for window in ["300", "900", "3600", "21600", "86400"] {
        assert!(all.contains(window), "chart window {window}");
    }
}
