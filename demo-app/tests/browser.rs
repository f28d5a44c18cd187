//! The web UI in a real headless Chromium (Debian's `chromium` and `chromium-driver`), driven
//! over WebDriver's HTTP protocol (a few lines of HTTP/1.1 over a loopback TCP socket).
//!
//! One test runs `reflow demo` (three nodes syncing over iroh on loopback, each serving its
//! UI on 127.0.0.1) and drives two browsers, one on the repair café's page (node A) and one
//! on the market stall's (node B): an event recorded through A's form appears live in B's
//! inventory (without a reload); the map, a trace, a conflict and its correction, an offer,
//! the market flow (an offer with a price accepted on the other node, delivered and paid
//! through the commitments' prefilled forms, seen live on both), the flows chart, the peers
//! page, the invite with its QR code, and the inventory on a phone-sized window.
//! It opens each page with the key the demo printed, and shows that without the key, from a
//! foreign Host (DNS rebinding, simulated by resolving evil.example to 127.0.0.1 in Chromium)
//! or from another site's page, the node records nothing and answers nothing.
//! Every wait polls the DOM with a deadline; nothing sleeps for synchronisation.
//!
//! With `REFLOW_SCREENSHOTS=1` the main pages are saved as PNG under `docs/screenshots/`.
//! Without chromium or chromedriver the test fails when `CI=true` and skips (with a message)
//! otherwise. All traffic stays on 127.0.0.1.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or `None` (after failing under CI) when absent.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = which(&["chromium", "chromium-browser"]);
    let driver = which(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => {
            let msg = format!(
                "browser tests need Debian's chromium and chromium-driver \
                 (apt-get install -y chromium chromium-driver); found chromium: {}, chromedriver: {}",
                c.is_some(),
                d.is_some()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// One HTTP/1.1 request to a loopback URL; the status and the JSON body.
fn http(method: &str, url: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    http_with(method, url, None, "", body)
}

/// [`http`] with `Host` (default: the URL's) and extra header lines (each ending in CRLF).
fn http_with(
    method: &str,
    url: &str,
    host: Option<&str>,
    headers: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("only loopback URLs: {url}"));
    let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port")))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let host = host.map_or_else(|| format!("127.0.0.1:{port}"), str::to_string);
    write!(
        s,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // Read the headers, then as much body as they announce (the server may keep the
    // connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let (split, head) = loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed before the headers ended",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (i, String::from_utf8_lossy(&raw[..i]).to_lowercase());
        }
    };
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[split + 4..];
        let done = match length {
            Some(len) => body.len() >= len,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut content = raw[split + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &content[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .map_err(std::io::Error::other)?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 4 + size..];
        }
        content = out;
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        serde_json::from_slice(&content).unwrap_or(Value::Null),
    ))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Ask a child process to stop (SIGINT, like Ctrl-C), then kill it if it does not within 10 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `reflow demo` on free ports: three nodes, their UIs' URLs.
struct Demo {
    child: Child,
    /// `http://127.0.0.1:<port>`, without the key.
    urls: Vec<String>,
    /// Each launch's key, from the printed URLs (`<url>/?key=<key>`).
    keys: Vec<String>,
}

impl Demo {
    /// The URL the demo printed for node `i`: it opens the page with the key.
    fn login(&self, i: usize) -> String {
        format!("{}/?key={}", self.urls[i], self.keys[i])
    }

    /// How many events node `i`'s API lists (asked with its key, as a non-browser client).
    fn events(&self, i: usize) -> usize {
        let key = format!("X-Reflow-Key: {}\r\n", self.keys[i]);
        let url = format!("{}/api/events", self.urls[i]);
        let (status, v) = http_with("GET", &url, None, &key, None).expect("GET /api/events");
        assert_eq!(status, 200, "{v}");
        v.as_array().map(Vec::len).expect("the event list")
    }
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reflow"))
            .args(["demo", "--port", "0", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start reflow demo");
        let out = child.stdout.take().expect("demo stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                eprintln!("demo | {line}");
                if tx.send(line).is_err() {
                    // Keep draining so the demo never blocks on a full pipe.
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(180);
        let (mut urls, mut keys) = (Vec::new(), Vec::new());
        while urls.len() < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(i) = line.find("http://") {
                        let printed = line[i..].trim();
                        let (url, key) = printed
                            .split_once("/?key=")
                            .unwrap_or_else(|| panic!("no key in the printed URL {printed}"));
                        assert_eq!(key.len(), 64, "the key in {printed}");
                        urls.push(url.to_string());
                        keys.push(key.to_string());
                    }
                }
                Err(e) => {
                    stop(&mut child);
                    panic!("reflow demo did not print three URLs within 180 s ({e}); got {urls:?}");
                }
            }
        }
        for u in &urls {
            assert!(
                u.starts_with("http://127.0.0.1:"),
                "UI not on loopback: {u}"
            );
        }
        Demo { child, urls, keys }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A chromedriver process.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(driver: &Path, log: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let d = Driver { child, base };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, v)) = http("GET", &format!("{}/status", d.base), None) {
                if v["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 30 s (log: {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn session(&self, chromium: &Path, profile: &Path) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--no-proxy-server",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--disable-extensions",
                    "--disable-features=Translate,OptimizationHints,MediaRouter",
                    // A foreign name that resolves to this machine, as after DNS rebinding
                    // (nothing is looked up on the internet).
                    "--host-resolver-rules=MAP evil.example 127.0.0.1",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let (_, r) = http("POST", &format!("{}/session", self.base), Some(&caps))
            .expect("new WebDriver session");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            base: format!("{}/session/{id}", self.base),
        }
    }
}

/// One WebDriver session (one Chromium).
struct Browser {
    base: String,
}

impl Browser {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let (status, v) =
            http(method, &url, body.as_ref()).unwrap_or_else(|e| panic!("{url}: {e}"));
        if !(200..300).contains(&status) {
            panic!("WebDriver {method} {path} failed ({status}): {v}");
        }
        v["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.cmd("POST", path, Some(body))
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url}));
    }

    fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
    }

    /// Run `script`, which calls its last argument with the result (a promise's, say).
    fn js_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({"script": script, "args": args}))
    }

    fn location(&self) -> String {
        let v = self.js("return location.href", json!([]));
        v.as_str().unwrap_or_default().to_string()
    }

    /// Poll `script` (a function body returning a value) until it returns something truthy.
    fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.js(script, args.clone());
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText.slice(0, 3000)", json!([]));
                panic!("timed out after {WAIT:?} waiting for {what}; page text:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for an element matching `css`; its WebDriver id.
    fn find(&self, css: &str) -> String {
        self.wait_js(
            &format!("element {css}"),
            "return document.querySelector(arguments[0]) !== null",
            json!([css]),
        );
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        // The W3C element reference: an object with one "element-6066-…" key.
        v.as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.starts_with("element-6066")))
            .and_then(|(_, id)| id.as_str())
            .unwrap_or_else(|| panic!("no element reference for {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/clear"), json!({}));
        self.post(&format!("/element/{e}/value"), json!({"text": text}));
    }

    /// Choose the option with `value` of the select `css` (a real click on the option).
    fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
        let chosen = self.js(
            "return document.querySelector(arguments[0]).value",
            json!([css]),
        );
        assert_eq!(chosen, json!(value), "selecting {value} in {css}");
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Wait until the text of `css` contains `needle`.
    fn wait_text(&self, css: &str, needle: &str) {
        self.wait_js(
            &format!("{needle:?} in {css}"),
            "const e = document.querySelector(arguments[0]); return e !== null && e.innerText.includes(arguments[1])",
            json!([css, needle]),
        );
    }

    fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}));
    }

    /// Save a screenshot as docs/screenshots/`name`.png when REFLOW_SCREENSHOTS=1.
    fn screenshot(&self, name: &str) {
        let png = self
            .cmd("GET", "/screenshot", None)
            .as_str()
            .map(str::to_string)
            .expect("screenshot data");
        let bytes = data_encoding::BASE64
            .decode(png.as_bytes())
            .expect("screenshot base64");
        assert!(bytes.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if std::env::var("REFLOW_SCREENSHOTS").is_ok_and(|v| v == "1") {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            let path = dir.join(format!("{name}.png"));
            std::fs::write(&path, bytes).expect("write screenshot");
            eprintln!("saved {}", path.display());
        }
    }

    fn quit(self) {
        let _ = http("DELETE", &self.base, None);
    }
}

/// Record an event through the form of the page `b` shows: action, then `(field, value)`
/// pairs (selects get an option clicked, inputs get typed into); returns the new event's id.
fn record(b: &Browser, action: &str, fields: &[(&str, &str)], shot: Option<&str>) -> String {
    b.find("#record-form");
    let fixed = b.js("return document.querySelector('#act').disabled", json!([]));
    if fixed == json!(true) {
        // A correction keeps the corrected event's action.
        let v = b.js("return document.querySelector('#act').value", json!([]));
        assert_eq!(v, json!(action), "the corrected event's action");
    } else {
        b.select("#act", action);
    }
    for (name, value) in fields {
        let css = format!("#record-form [name=\"{name}\"]");
        b.find(&css);
        let tag = b.js(
            "return document.querySelector(arguments[0]).tagName",
            json!([css]),
        );
        if tag == json!("SELECT") {
            b.select(&css, value);
        } else {
            b.fill(&css, value);
        }
    }
    if let Some(name) = shot {
        b.js("window.scrollTo(0, 0)", json!([]));
        b.screenshot(name);
    }
    b.click("#record-submit");
    let id = b
        .wait_js(
            "the form to report the recorded event",
            "const f = document.querySelector('#record-form'); const m = document.querySelector('#msg');
             if (f && f.dataset.recorded) return f.dataset.recorded;
             if (m && m.classList.contains('err')) return 'ERROR: ' + m.textContent;
             return null",
            json!([]),
        );
    let id = id.as_str().unwrap_or_default().to_string();
    assert!(!id.starts_with("ERROR"), "recording {action} failed: {id}");
    id
}

#[test]
fn web_ui_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = Demo::start(&tmp.path().join("demo"));
    let (cafe, stall) = (demo.urls[0].clone(), demo.urls[1].clone());
    let driver = Driver::start(&chromedriver, &tmp.path().join("chromedriver.log"));
    let a = driver.session(&chromium, &tmp.path().join("profile-a"));
    let b = driver.session(&chromium, &tmp.path().join("profile-b"));

    // Without the key the page loads but the node's API refuses, and the page says why.
    b.goto(&format!("{stall}/#inventory"));
    b.wait_text("#no-access", "key");
    b.wait_text("#no-access", "?key=");
    // The printed URL: the key goes into a cookie and the browser goes on to the page without
    // it (the fragment kept).
    b.goto(&format!("{}#inventory", demo.login(1)));
    b.wait_text("#inventory-table", "Apple jam");
    assert_eq!(
        b.location(),
        format!("{stall}/#inventory"),
        "the key left the URL"
    );
    assert_eq!(
        b.js("return document.cookie", json!([])),
        json!(""),
        "the key's cookie is HttpOnly"
    );
    // B watches its inventory; a marker on `window` shows the page was never reloaded.
    b.goto(&format!("{stall}/#inventory"));
    b.wait_text("#inventory-table", "Apple jam");
    b.js("window.__noReload = 42", json!([]));
    // Everything the page loaded came from its own node.
    let foreign = b.js(
        "return performance.getEntriesByType('resource').map(e => e.name)
           .filter(n => !n.startsWith(location.origin + '/'))",
        json!([]),
    );
    assert_eq!(foreign, json!([]), "resources loaded from elsewhere");

    // A records a produce of a new resource through its form.
    a.goto(&demo.login(0));
    a.find("#inventory-table");
    a.goto(&format!("{cafe}/#record"));
    let id = record(
        &a,
        "produce",
        &[
            ("provider", "cafe"),
            ("receiver", "cafe"),
            ("quantityValue", "5"),
            ("quantityUnit", "jar"),
            ("newResource", "plum-jam"),
            ("newResourceName", "Plum jam from the browser"),
            ("atLocation", "workshop"),
            ("note", "recorded by the browser test"),
        ],
        Some("event-form"),
    );
    assert!(id.contains('@'), "event id {id}");

    // It appears live in B's inventory, without a reload.
    b.wait_text("#inventory-table", "Plum jam from the browser");
    assert_eq!(
        b.js("return window.__noReload", json!([])),
        json!(42),
        "B's page was reloaded"
    );
    let row = b.text("#inventory-table tr[data-id=\"plum-jam\"]");
    assert!(row.contains("5 jar"), "quantity in B's row: {row}");
    assert!(row.contains("Café workshop"), "location in B's row: {row}");
    b.screenshot("inventory");

    // The event log on B lists it.
    b.goto(&format!("{stall}/#events"));
    b.find(&format!("#events-table tr[data-id=\"{id}\"]"));

    // A moves two brake pads from the depot to the workshop, into a new resource.
    a.goto(&format!("{cafe}/?move#record"));
    record(
        &a,
        "move",
        &[
            ("provider", "cafe"),
            ("receiver", "cafe"),
            ("quantityValue", "2"),
            ("quantityUnit", "one"),
            ("resource", "pads"),
            ("newResource", "pads-workshop"),
            ("newResourceName", "Brake pads at the workshop"),
            ("atLocation", "depot"),
            ("toLocation", "workshop"),
        ],
        None,
    );

    // The map: three places drawn from their coordinates, with the resources at them and
    // the move between two of them.
    b.goto(&format!("{stall}/#map"));
    b.find("#map-svg .place");
    let places = b.js(
        "return document.querySelectorAll('#map-svg .place').length",
        json!([]),
    );
    assert_eq!(places, json!(3), "places on the map");
    b.wait_text(".map-wrap", "Market stall 4");
    b.wait_text(".map-wrap", "Plum jam from the browser");
    b.wait_text(".map-wrap", "Brake pads at the workshop");
    b.find("#map-svg path.move");
    b.screenshot("map");

    // A trace: Ana's bicycle came out of the repair process, which took in work and pads.
    b.goto(&format!("{stall}/#resource/bike"));
    b.wait_text("#resource-name", "Ana's bicycle");
    b.wait_text("#trace", "Fix Ana's brakes");
    b.wait_text("#trace", "Brake pads");
    b.wait_text("#trace", "work");
    b.screenshot("trace");

    // A conflict: A consumes more apples than there are; B sees it live and corrects it.
    b.goto(&format!("{stall}/#conflicts"));
    b.find("#no-conflicts");
    // A query string makes this a new page load, so no earlier form is around.
    a.goto(&format!("{cafe}/?again#record"));
    let overdraw = record(
        &a,
        "consume",
        &[
            ("provider", "stall"),
            ("receiver", "stall"),
            ("resource", "apples"),
            ("quantityValue", "20"),
            ("quantityUnit", "kg"),
        ],
        None,
    );
    b.find(&format!(".card.conflict tr[data-id=\"{overdraw}\"]"));
    b.wait_text(".card.conflict", "Windfall apples");
    b.screenshot("conflicts");
    b.click(".card.conflict .correct-link");
    b.find("#record-form");
    let original = b.text("#view .card");
    assert!(original.contains("consume"), "correcting: {original}");
    let fix = record(
        &b,
        "consume",
        &[("quantityValue", "3"), ("quantityUnit", "kg")],
        None,
    );
    a.goto(&format!("{cafe}/#conflicts"));
    a.find("#no-conflicts");
    a.goto(&format!("{cafe}/#events"));
    a.find(&format!(
        "#events-table tr[data-id=\"{fix}\"][data-corrects=\"{overdraw}\"]"
    ));
    a.find(&format!(
        "#events-table tr.corrected[data-id=\"{overdraw}\"]"
    ));

    // An offer, published in a proposal, listed on the other node.
    a.goto(&format!("{cafe}/#offers"));
    a.select("#intent-form [name=\"agent\"]", "cafe");
    a.select("#intent-form [name=\"conformsTo\"]", "mechanics");
    a.fill("#intent-form [name=\"quantityValue\"]", "2");
    a.select("#intent-form [name=\"quantityUnit\"]", "hour");
    a.fill("#intent-form [name=\"proposal\"]", "Saturday repairs");
    a.click("#intent-form button");
    a.wait_text("#intents-table", "Saturday repairs");
    b.goto(&format!("{stall}/#offers"));
    b.wait_text("#intents-table", "Bicycle mechanics");
    b.screenshot("offers");

    // The market flow across the two nodes: the café offers a brake check for a jar of jam
    // (an intent, a reciprocal intent, a proposal); the stall accepts it on its node, which
    // makes an agreement with commitments both ways; the café delivers the service and the
    // stall pays, each through the prefilled form of its commitment; both nodes see the
    // progress live. (Navigation stays within one page load: each full load leaves its
    // live-update connection open for a while, and Chromium allows 6 per host.)
    // Both pages are still on their offers tab (from above): the list there redraws live.
    a.find("#intent-form");
    a.select("#intent-form [name=\"agent\"]", "cafe");
    a.select("#intent-form [name=\"action\"]", "deliverService");
    a.select("#intent-form [name=\"conformsTo\"]", "mechanics");
    a.fill("#intent-form [name=\"quantityValue\"]", "1");
    a.select("#intent-form [name=\"quantityUnit\"]", "hour");
    a.fill("#intent-form [name=\"proposal\"]", "Brake check");
    a.fill("#intent-form [name=\"priceValue\"]", "1");
    a.select("#intent-form [name=\"priceUnit\"]", "jar");
    a.click("#intent-form button");
    a.wait_text("#intents-table", "Brake check");
    b.wait_text("#proposals-table", "Brake check");
    b.js(
        "[...document.querySelectorAll('#proposals-table tr')]
           .find(r => r.innerText.includes('Brake check')).querySelector('button.accept').click()",
        json!([]),
    );
    b.wait_text("#accept-msg", "agreement");
    // The café's commitments page shows the agreement, both clauses open.
    a.goto(&format!("{cafe}/#commitments"));
    a.wait_text(".card.agreement", "Brake check");
    a.wait_js(
        "two open clauses",
        "return document.querySelectorAll('.card.agreement tr[data-progress=\"open\"]').length === 2",
        json!([]),
    );
    // Its Record button opens the event form prefilled to fulfil the delivery.
    a.js(
        "document.querySelector('.card.agreement table.commitments:nth-of-type(1) a.fulfil').click()",
        json!([]),
    );
    a.wait_text("#fulfils", "Fulfils commitment");
    let prefilled = a.js(
        "return ['provider', 'receiver', 'quantityValue', 'quantityUnit', 'conformsTo', 'fulfills']
           .map(n => document.querySelector('#record-form [name=\"' + n + '\"]').value).join(' ')",
        json!([]),
    );
    let prefilled = prefilled.as_str().unwrap_or_default().to_string();
    assert!(
        prefilled.starts_with("cafe stall 1 hour mechanics commit-"),
        "the form to fulfil the delivery: {prefilled}"
    );
    let delivered = record(&a, "deliverService", &[], None);
    assert!(delivered.contains('@'), "delivery {delivered}");
    // The stall sees the delivery fulfilled, live, and pays through its own Record button.
    b.goto(&format!("{stall}/#commitments"));
    b.wait_js(
        "the delivery fulfilled on the stall's node",
        "return document.querySelectorAll('.card.agreement tr[data-progress=\"fulfilled\"]').length === 1",
        json!([]),
    );
    b.js(
        "document.querySelector('.card.agreement table.commitments:nth-of-type(2) a.fulfil').click()",
        json!([]),
    );
    b.wait_text("#fulfils", "Fulfils commitment");
    record(
        &b,
        "transfer",
        &[("resource", "jam"), ("newResource", "cafe-jam")],
        None,
    );
    a.goto(&format!("{cafe}/#commitments"));
    a.wait_text(".card.agreement", "complete");
    a.screenshot("commitments");
    // The repair café plans a brake repair from its recipe: the work, the pads and the
    // repaired bicycle become open commitments of a new process.
    a.select("#recipe-form [name=\"recipeProcess\"]", "brake-repair");
    a.select("#recipe-form [name=\"provider\"]", "sam");
    a.select("#recipe-form [name=\"receiver\"]", "ana");
    a.fill("#recipe-form [name=\"plan\"]", "saturday");
    a.click("#recipe-form button");
    a.wait_js(
        "three planned commitments",
        "return [...document.querySelectorAll('table.commitments tr[data-progress=\"open\"]')]
           .filter(r => !r.closest('.agreement')).length === 3",
        json!([]),
    );
    // The flows: the events recorded through the form carry their time, so they are charted
    // by month and place (the demo's seed events carry none and are counted as undated).
    a.goto(&format!("{cafe}/#flows"));
    a.find("#flows-out svg.chart rect");
    a.wait_text("#flows-table", "Café workshop");
    a.wait_text("#flows-table", "1 jar");
    a.wait_text("#flows-out", "without a readable time");
    a.screenshot("flows");

    // Peers and sync: the café sees the two other devices connected.
    a.goto(&format!("{cafe}/#peers"));
    a.wait_js(
        "two connected peers",
        "return document.querySelectorAll('#peers-table tr').length === 3 && document.querySelector('#peers-table').innerText.split('connected').length - 1 === 2",
        json!([]),
    );
    a.screenshot("peers");

    // The invite: a ticket and its QR code (the café is the network's admin).
    a.goto(&format!("{cafe}/#invite"));
    a.select("#invite-role", "observer");
    a.click("#make-invite");
    a.find("#qr svg");
    a.wait_text("#invite-msg", "observer");
    let ticket = a.js("return document.querySelector('#ticket').value", json!([]));
    assert!(
        ticket.as_str().is_some_and(|t| t.starts_with("reflow1")),
        "ticket: {ticket}"
    );
    a.screenshot("invite");
    // B is not an admin: the page says so instead of showing a ticket.
    b.goto(&format!("{stall}/#invite"));
    b.click("#make-invite");
    b.wait_js(
        "the refusal",
        "const m = document.querySelector('#invite-msg'); return m && m.classList.contains('err') && m.textContent.length > 0",
        json!([]),
    );

    // The network's rules: the demo's admin published two; the page lists them and says
    // that nothing was refused or flagged.
    a.goto(&format!("{cafe}/#rules"));
    a.wait_text("#rules-in-force", "version 1");
    a.wait_text("#rules-table", "sale-within-onhand");
    a.wait_text("#rules-table", "stall-sells-own-produce");
    a.wait_text("#rules-record-for-others", "admins only");
    a.find("#rules-refused-none");
    a.find("#rules-flagged-none");
    a.screenshot("rules");

    // A phone-sized window: the inventory fits without sideways scrolling.
    b.resize(390, 844);
    b.goto(&format!("{stall}/#inventory"));
    b.wait_text("#inventory-table", "Plum jam from the browser");
    let overflow = b.js(
        "return document.documentElement.scrollWidth - window.innerWidth",
        json!([]),
    );
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 1),
        "the phone-sized page scrolls sideways by {overflow} px"
    );
    b.screenshot("inventory-phone");
    for page in [
        "events",
        "record",
        "map",
        "conflicts",
        "rules",
        "offers",
        "commitments",
        "flows",
        "peers",
    ] {
        b.goto(&format!("{stall}/#{page}"));
        b.wait_js(
            &format!("the {page} page"),
            "return document.querySelector('#view').dataset.view === arguments[0]",
            json!([page]),
        );
        let overflow = b.js(
            "return document.documentElement.scrollWidth - window.innerWidth",
            json!([]),
        );
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 1),
            "the phone-sized {page} page scrolls sideways by {overflow} px"
        );
    }

    attacks_are_refused(&a, &demo);

    a.quit();
    b.quit();
    drop(driver);
    drop(demo);
}

/// A web site on another port of 127.0.0.1: every request gets the same small page.
fn another_site() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind another site");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let _ = s.set_read_timeout(Some(WAIT));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let page = "<!doctype html><title>another site</title><p>another site</p>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

/// Requests of other sites to the café's node, which `a`'s browser has the key of, record
/// nothing and read nothing.
fn attacks_are_refused(a: &Browser, demo: &Demo) {
    let cafe = &demo.urls[0];
    let port = cafe.rsplit(':').next().expect("port");
    let before = demo.events(0);
    let event = json!({"action": "produce", "provider": "cafe", "receiver": "cafe",
        "quantity": "1 jar", "newResource": "script-jam", "newResourceName": "Jam from a script"});
    let body = event.to_string();

    // DNS rebinding: evil.example resolves to 127.0.0.1, so its page at evil.example:<port>
    // reaches the node as its own origin. The node answers it nothing.
    let rebound = format!("http://evil.example:{port}");
    a.goto(&format!("{rebound}/"));
    a.wait_js(
        "the refusal of a foreign Host",
        "return document.body && document.body.innerText.includes('is not this server')",
        json!([]),
    );
    let answers = a.js_async(
        "const [body, done] = arguments;
         const status = p => p.then(r => r.status, e => 'failed: ' + e);
         Promise.all([
           status(fetch('/api/events')),
           status(fetch('/app.js')),
           status(fetch('/api/events', {method: 'POST', headers: {'content-type': 'application/json'}, body})),
         ]).then(done);",
        json!([body]),
    );
    assert_eq!(
        answers,
        json!([421, 421, 421]),
        "the rebound page's requests"
    );

    // Cross-site requests from pages of another port of 127.0.0.1 (the same site: the key's
    // SameSite cookie goes along) and of evil.example (another site): a form-like POST and a
    // read.
    let other = another_site();
    for page in [
        format!("http://127.0.0.1:{other}/"),
        format!("http://evil.example:{other}/"),
    ] {
        a.goto(&page);
        a.wait_text("body", "another site");
        let answers = a.js_async(
            "const [cafe, body, done] = arguments;
             Promise.all([
               fetch(cafe + '/api/events', {method: 'POST', mode: 'no-cors', credentials: 'include',
                   headers: {'content-type': 'text/plain'}, body})
                 .then(r => 'sent ' + r.type, e => 'failed: ' + e),
               fetch(cafe + '/api/events', {credentials: 'include'})
                 .then(r => r.text().then(t => 'READ ' + t.slice(0, 200)), e => 'refused: ' + e.name),
             ]).then(done);",
            json!([cafe, body]),
        );
        eprintln!("requests from {page}: {answers}");
        // The POST left the browser: the node, not the browser, refused it.
        assert_eq!(answers[0], json!("sent opaque"), "{page}: {answers}");
        assert!(
            !answers[1].as_str().unwrap_or_default().starts_with("READ"),
            "{page} read the café's ledger: {answers}"
        );
    }

    // Raw HTTP: a forged Host with the key is refused, and so is a POST with the right Host
    // and key from another Origin.
    let key = format!("X-Reflow-Key: {}\r\n", demo.keys[0]);
    let url = format!("{cafe}/api/events");
    for method in ["GET", "POST"] {
        let (status, v) = http_with(
            method,
            &url,
            Some("evil.example"),
            &format!("{key}Origin: http://evil.example\r\n"),
            Some(&event),
        )
        .expect("forged Host");
        assert_eq!(status, 421, "{method} with a forged Host: {v}");
    }
    let (status, v) = http_with(
        "POST",
        &url,
        None,
        &format!("{key}Origin: http://evil.example\r\n"),
        Some(&event),
    )
    .expect("foreign Origin");
    assert_eq!(status, 403, "a POST from another Origin: {v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("Origin")),
        "{v}"
    );

    assert_eq!(demo.events(0), before, "an attack recorded an event");
    // The same POST as the café's own page sends it is recorded: the refusals above were
    // about where the requests came from, not about the event.
    let (status, v) = http_with(
        "POST",
        &url,
        None,
        &format!("{key}Origin: {cafe}\r\n"),
        Some(&event),
    )
    .expect("own Origin");
    assert_eq!(status, 200, "{v}");
    assert_eq!(demo.events(0), before + 1);
}
