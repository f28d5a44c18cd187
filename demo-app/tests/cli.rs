//! CLI tests of the `reflow` binary: happy paths on a temp data dir, wrong arguments, bad data
//! dirs, the demo, and the web UI's HTTP API (all traffic on loopback).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn reflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reflow"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run reflow")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = reflow(dir, args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "reflow {args:?} failed: {se}\n{so}");
    so.into_owned()
}

fn fails(dir: &Path, args: &[&str], code: i32, needle: &str) {
    let out = reflow(dir, args);
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "reflow {args:?}: {se}");
    assert!(
        se.contains(needle),
        "reflow {args:?}: stderr {se:?} lacks {needle:?}"
    );
    assert!(
        !se.contains("panicked") && !se.contains("RUST_BACKTRACE"),
        "{se}"
    );
}

/// A data dir with a network, units, agents, a location, a spec and two events.
fn setup() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let d = t.path();
    ok(d, &["init"]);
    ok(
        d,
        &[
            "network",
            "create",
            "market",
            "--as",
            "Joris",
            "--agent-id",
            "joris",
        ],
    );
    ok(d, &["unit", "add", "kg", "kilogram"]);
    ok(d, &["agent", "add", "ana", "Ana"]);
    ok(d, &["agent", "add", "cafe", "Repair Café", "--org"]);
    ok(
        d,
        &[
            "location", "add", "stall", "Stall 4", "--lat", "52.37", "--long", "4.89",
        ],
    );
    ok(d, &["spec", "add", "apple", "Apples"]);
    let produce = [
        "event",
        "record",
        "--action",
        "produce",
        "--provider",
        "joris",
        "--receiver",
        "joris",
        "--quantity",
        "10 kg",
        "--new-resource",
        "apples",
        "--new-resource-name",
        "Apples",
        "--conforms-to",
        "apple",
        "--at-location",
        "stall",
    ];
    ok(d, &produce);
    t
}

#[test]
fn every_command_happy_path() {
    let t = setup();
    let d = t.path();
    let consume = [
        "event",
        "record",
        "--action",
        "consume",
        "--provider",
        "joris",
        "--receiver",
        "joris",
        "--resource",
        "apples",
        "--quantity",
        "3 kg",
    ];
    let id = ok(d, &consume).trim().to_string();
    assert!(id.contains('@'), "event id {id}");
    let inv: serde_json::Value =
        serde_json::from_str(&ok(d, &["inventory", "--json"])).expect("json");
    assert_eq!(inv[0]["onhandQuantity"]["hasNumericalValue"], "7", "{inv}");
    ok(d, &["event", "correct", &id, "--quantity", "2 kg"]);
    let show: serde_json::Value =
        serde_json::from_str(&ok(d, &["resource", "show", "apples", "--json"])).expect("json");
    assert_eq!(show["onhandQuantity"]["hasNumericalValue"], "8", "{show}");
    assert!(ok(d, &["inventory"]).contains("apples"));
    let events: serde_json::Value =
        serde_json::from_str(&ok(d, &["event", "list", "--json"])).expect("json");
    assert_eq!(
        events.as_array().map(Vec::len),
        Some(2),
        "the corrected event is hidden: {events}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ok(d, &["event", "list", "--all", "--json"]))
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert!(ok(d, &["trace", "apples"]).contains("event"));
    assert!(ok(d, &["track", "apples", "--json"]).contains("steps"));
    assert_eq!(ok(d, &["conflicts"]).trim(), "no conflicts");
    assert!(ok(d, &["conflicts", "--json"]).contains('['));
    assert!(ok(d, &["peers"]).contains("no peers"));
    assert!(ok(d, &["network", "list"]).contains("market"));
    assert!(ok(d, &["network", "list", "--json"]).contains("market"));
    assert!(ok(d, &["network", "members", "--json"]).contains("joris"));
    assert!(ok(d, &["agent", "list"]).contains("Repair Café"));
    assert!(ok(d, &["agent", "list", "--json"]).contains("ana"));
    assert!(ok(d, &["location", "list"]).contains("52.37"));
    assert!(ok(d, &["spec", "list", "--json"]).contains("Apples"));
    assert!(ok(d, &["unit", "list"]).contains("kilogram"));
}

#[test]
fn validation_errors_are_one_line() {
    let t = setup();
    let d = t.path();
    let over = [
        "event",
        "record",
        "--action",
        "consume",
        "--provider",
        "joris",
        "--receiver",
        "joris",
        "--resource",
        "nope",
        "--quantity",
        "3 kg",
    ];
    fails(d, &over, 1, "nope");
    fails(
        d,
        &[
            "event",
            "record",
            "--action",
            "sell",
            "--provider",
            "a",
            "--receiver",
            "b",
        ],
        1,
        "sell",
    );
    fails(
        d,
        &[
            "event",
            "record",
            "--action",
            "consume",
            "--provider",
            "joris",
            "--receiver",
            "joris",
            "--resource",
            "apples",
            "--quantity",
            "3",
        ],
        1,
        "unit",
    );
    fails(d, &["resource", "show", "nope"], 1, "no resource nope");
    let out = reflow(
        d,
        &[
            "event",
            "record",
            "--action",
            "consume",
            "--provider",
            "joris",
            "--receiver",
            "joris",
            "--resource",
            "apples",
            "--quantity",
            "3 kg",
        ],
    );
    assert!(out.status.success());
}

#[test]
fn wrong_arguments_exit_2() {
    let t = tempfile::tempdir().expect("tempdir");
    fails(t.path(), &["frobnicate"], 2, "unrecognized subcommand");
    fails(t.path(), &["inventory", "--bogus"], 2, "--bogus");
    fails(
        t.path(),
        &["location", "add", "x", "X", "--lat", "1"],
        2,
        "--long",
    );
    fails(t.path(), &["inventory"], 1, "no network yet");
    let help = reflow(t.path(), &["event", "record", "--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--quantity"));
}

#[test]
fn bad_data_dirs_exit_3() {
    let t = tempfile::tempdir().expect("tempdir");
    let file = t.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    fails(&file, &["init"], 3, "not a directory");
    let corrupt = t.path().join("corrupt");
    std::fs::create_dir(&corrupt).expect("mkdir");
    std::fs::write(
        corrupt.join("reflow.redb"),
        b"this is not a redb database at all, sorry",
    )
    .expect("write");
    fails(&corrupt, &["init"], 3, "cannot open the store");
}

#[test]
fn demo_converges() {
    let t = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_reflow"))
        .args(["demo", "--exit-after-seed", "--timeout", "60", "--dir"])
        .arg(t.path().join("demo"))
        .output()
        .expect("run demo");
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("converged: 3 nodes agree on 12 events"), "{so}");
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn serve_http_api_and_live_updates() {
    let t = setup();
    let child = Command::new(env!("CARGO_BIN_EXE_reflow"))
        .arg("--data-dir")
        .arg(t.path())
        .args(["serve", "--port", "0", "--local-only"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut server = Server(child);
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let port: u16 = loop {
        let line = lines
            .next()
            .expect("serve printed its address")
            .expect("line");
        if let Some(rest) = line.strip_prefix("serving http://127.0.0.1:") {
            break rest
                .split('/')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
        }
    };
    let (status, body) = http(port, "GET", "/", "");
    assert!(
        status.contains("200") && body.contains("<title>Reflow</title>"),
        "{status}"
    );
    let (status, body) = http(port, "GET", "/api/inventory", "");
    assert!(
        status.contains("200") && body.contains("apples"),
        "{status} {body}"
    );
    assert!(http(port, "GET", "/api/actions", "")
        .1
        .contains("transferCustody"));
    // Subscribe to live updates, then record an event through the API.
    let mut sse = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sse.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    sse.write_all(b"GET /api/updates HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut sse = BufReader::new(sse);
    let mut line = String::new();
    while !line.starts_with("event: hello") {
        line.clear();
        sse.read_line(&mut line).expect("sse hello");
    }
    let event = r#"{"action":"consume","provider":"joris","receiver":"joris","resource":"apples","quantity":"1 kg"}"#;
    let (status, body) = http(port, "POST", "/api/events", event);
    assert!(
        status.contains("200") && body.contains('@'),
        "{status} {body}"
    );
    while !line.starts_with("event: update") {
        line.clear();
        sse.read_line(&mut line).expect("sse update within 20 s");
    }
    let (status, body) = http(
        port,
        "POST",
        "/api/events",
        r#"{"action":"consume","provider":"joris","receiver":"joris","resource":"nope","quantity":"1 kg"}"#,
    );
    assert!(
        status.contains("400") && body.contains("error"),
        "{status} {body}"
    );
    let (_, body) = http(port, "GET", "/api/resource/apples", "");
    assert!(body.contains("\"9\"") && body.contains("trace"), "{body}");
}
