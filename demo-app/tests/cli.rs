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
    let init: serde_json::Value = serde_json::from_str(&ok(d, &["init", "--json"])).expect("json");
    assert_eq!(init["networks"].as_array().map(Vec::len), Some(1), "{init}");
    assert!(init["device"].as_str().is_some_and(|s| !s.is_empty()));
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

/// A web UI as its printed URL names it: `http://127.0.0.1:<port>/?key=<key>`.
struct Ui {
    port: u16,
    key: String,
}

impl Ui {
    /// The UI whose URL ends `text` (a line that `serve` or `demo` printed).
    fn from_line(text: &str) -> Ui {
        let url = &text[text
            .find("http://")
            .unwrap_or_else(|| panic!("no URL in {text:?}"))..];
        let url = url.split_whitespace().next().unwrap_or_default();
        let rest = url
            .strip_prefix("http://127.0.0.1:")
            .unwrap_or_else(|| panic!("not a loopback URL: {url:?}"));
        let (port, key) = rest
            .split_once("/?key=")
            .unwrap_or_else(|| panic!("no key in the URL {url:?}"));
        assert_eq!(key.len(), 64, "the key in {url:?}");
        Ui {
            port: port.parse().expect("port"),
            key: key.to_string(),
        }
    }

    /// A request as the UI's own page makes it: its Host, its Origin and the key.
    fn http(&self, method: &str, path: &str, body: &str) -> (String, String) {
        let host = format!("127.0.0.1:{}", self.port);
        let headers = format!(
            "Host: {host}\r\nOrigin: http://{host}\r\nX-Reflow-Key: {}\r\n",
            self.key
        );
        http(self.port, method, path, &headers, body)
    }
}

/// One request with the given header lines; the status line and the body.
fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let req = format!("{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Write a row of garbage into `network`'s changes in the store of `dir` (docs/storage.md,
/// "Layout"), so that its ledger no longer loads.
fn damage_network(dir: &Path, network: &str) {
    const CHANGES: redb::TableDefinition<
        'static,
        (&'static str, &'static [u8; 32]),
        &'static [u8],
    > = redb::TableDefinition::new("reflow_changes");
    let db = redb::Database::open(dir.join("reflow.redb")).expect("open the store with redb");
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(CHANGES).expect("changes");
        t.insert((network, &[0x5a; 32]), b"garbage".as_slice())
            .expect("insert");
    }
    tx.commit().expect("commit");
}

#[test]
fn an_unavailable_network_is_listed_with_its_reason_and_the_rest_works() {
    let t = setup();
    let d = t.path();
    let broken = ok(d, &["network", "create", "broken", "--as", "Joris"])
        .trim()
        .to_string();
    damage_network(d, &broken);

    let list = ok(d, &["network", "list"]);
    assert!(list.contains("market"), "{list}");
    assert!(
        list.contains(&format!(
            "{broken}  UNAVAILABLE (damaged): its stored data is damaged"
        )),
        "{list}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&ok(d, &["network", "list", "--json"])).expect("json");
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == broken.as_str()))
        .expect("the broken network is listed");
    assert_eq!(row["status"], "unavailable", "{rows}");
    assert_eq!(row["kind"], "damaged", "{rows}");
    assert!(row["reason"]
        .as_str()
        .is_some_and(|r| r.contains("cannot be loaded")));

    // The default network works; the broken one says why it does not.
    assert!(ok(d, &["inventory"]).contains("apples"));
    fails(
        d,
        &["--network", &broken, "inventory"],
        1,
        "is unavailable on this node",
    );

    // `serve` starts, warns, and its UI answers with the reason.
    let child = Command::new(env!("CARGO_BIN_EXE_reflow"))
        .arg("--data-dir")
        .arg(d)
        .args(["--network", &broken, "serve", "--port", "0", "--local-only"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut server = Server(child);
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let ui = loop {
        let line = lines
            .next()
            .expect("serve printed its address")
            .expect("line");
        if line.starts_with("serving http://127.0.0.1:") {
            break Ui::from_line(&line);
        }
    };
    let (status, body) = ui.http("GET", "/api/info", "");
    assert!(
        status.contains("503") && body.contains("is unavailable on this node"),
        "{status} {body}"
    );
    let mut stderr = server.0.stderr.take().expect("stderr");
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut err = String::new();
    stderr.read_to_string(&mut err).expect("stderr");
    assert!(
        err.contains(&format!(
            "warning: network {broken} (the web UI's network) is unavailable (damaged)"
        )),
        "{err}"
    );
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
    let ui = loop {
        let line = lines
            .next()
            .expect("serve printed its address")
            .expect("line");
        if line.starts_with("serving http://127.0.0.1:") {
            break Ui::from_line(&line);
        }
    };
    let port = ui.port;
    let (status, body) = ui.http("GET", "/", "");
    assert!(
        status.contains("200") && body.contains("<title>Reflow</title>"),
        "{status}"
    );
    let (status, body) = ui.http("GET", "/api/inventory", "");
    assert!(
        status.contains("200") && body.contains("apples"),
        "{status} {body}"
    );
    assert!(ui
        .http("GET", "/api/actions", "")
        .1
        .contains("transferCustody"));
    // Another Host (DNS rebinding), no key, another Origin (a cross-site POST): refused.
    let key = format!("X-Reflow-Key: {}\r\n", ui.key);
    let (status, body) = http(
        port,
        "GET",
        "/api/inventory",
        &format!("Host: localhost\r\n{key}"),
        "",
    );
    assert!(
        status.contains("421") && !body.contains("apples"),
        "{status} {body}"
    );
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    let (status, body) = http(port, "GET", "/api/inventory", &host, "");
    assert!(
        status.contains("403") && body.contains("key"),
        "{status} {body}"
    );
    let (status, body) = http(
        port,
        "POST",
        "/api/events",
        &format!("{host}{key}Origin: http://evil.example\r\n"),
        r#"{"action":"consume","provider":"joris","receiver":"joris","resource":"apples","quantity":"5 kg"}"#,
    );
    assert!(
        status.contains("403") && body.contains("Origin"),
        "{status} {body}"
    );
    // Subscribe to live updates, then record an event through the API.
    let mut sse = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sse.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        sse,
        "GET /api/updates HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Reflow-Key: {}\r\n\r\n",
        ui.key
    )
    .expect("send");
    let mut sse = BufReader::new(sse);
    let mut line = String::new();
    while !line.starts_with("event: hello") {
        line.clear();
        sse.read_line(&mut line).expect("sse hello");
    }
    let event = r#"{"action":"consume","provider":"joris","receiver":"joris","resource":"apples","quantity":"1 kg"}"#;
    let (status, body) = ui.http("POST", "/api/events", event);
    assert!(
        status.contains("200") && body.contains('@'),
        "{status} {body}"
    );
    while !line.starts_with("event: update") {
        line.clear();
        sse.read_line(&mut line).expect("sse update within 20 s");
    }
    let (status, body) = ui.http(
        "POST",
        "/api/events",
        r#"{"action":"consume","provider":"joris","receiver":"joris","resource":"nope","quantity":"1 kg"}"#,
    );
    assert!(
        status.contains("400") && body.contains("error"),
        "{status} {body}"
    );
    let (_, body) = ui.http("GET", "/api/resource/apples", "");
    // 10 kg less the 1 kg consumed: the refused 5 kg consume recorded nothing.
    assert!(body.contains("\"9\"") && body.contains("trace"), "{body}");
}

/// Lines of a child's stdout, read by a thread, to wait on with a timeout.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) containing `needle`, within 60 s.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no line with {needle:?} ({e}); saw {:#?}", self.seen),
            }
        }
    }
}

fn spawn(dir: &Path, args: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_reflow"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reflow");
    Server(child)
}

/// Send `signal` (TERM, INT) and expect a clean exit.
fn terminate(mut s: Server, lines: &mut Lines, signal: &str) {
    let pid = s.0.id().to_string();
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    lines.wait_for("stopping");
    let status = s.0.wait().expect("wait");
    assert!(status.success(), "exit status {status:?}");
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let text = ok(dir, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn device_of(dir: &Path) -> String {
    let init = ok(dir, &["init"]);
    init.lines()
        .find_map(|l| l.strip_prefix("device: "))
        .expect("device line")
        .trim()
        .to_string()
}

fn onhand(dir: &Path, resource: &str) -> String {
    let r = json(dir, &["resource", "show", resource, "--json"]);
    r["onhandQuantity"]["hasNumericalValue"]
        .as_str()
        .expect("quantity")
        .to_string()
}

#[test]
fn network_invite_join_sync_remove() {
    let a = setup();
    let (ad, b, c) = (
        a.path(),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let bd = b.path();
    let ticket = ok(ad, &["network", "invite", "--local-only"])
        .trim()
        .to_string();
    assert!(ticket.starts_with("reflow1"), "{ticket}");
    let detail = json(
        ad,
        &[
            "network",
            "invite",
            "--local-only",
            "--role",
            "observer",
            "--expires",
            "30m",
            "--json",
        ],
    );
    assert_eq!(detail["role"], "observer");
    assert_eq!(detail["expiresInSeconds"], 1800);
    assert!(detail["ticket"]
        .as_str()
        .is_some_and(|t| t.starts_with("reflow1")));

    // A key invite: for K's device only, acting for the existing agent `ana`.
    let k = tempfile::tempdir().expect("tempdir");
    let k_device = device_of(k.path());
    let key_ticket = ok(
        ad,
        &[
            "network",
            "invite",
            "--local-only",
            "--device",
            &k_device,
            "--agent",
            "ana",
        ],
    )
    .trim()
    .to_string();

    // A runs in the foreground; B joins with the ticket over loopback.
    let mut sync_a = spawn(ad, &["sync", "--local-only"]);
    let mut lines_a = Lines::of(&mut sync_a.0);
    lines_a.wait_for("syncing network market");
    let joined = ok(
        bd,
        &[
            "network",
            "join",
            &ticket,
            "--as",
            "Bea",
            "--agent-id",
            "bea",
            "--local-only",
        ],
    );
    let b_device = device_of(bd);
    lines_a.wait_for(&format!("invite redeemed: {b_device} joined as member"));
    assert_eq!(
        json(bd, &["network", "list", "--json"])[0]["id"].as_str(),
        Some(joined.trim())
    );
    // B sees A's events and resources, and its own agent.
    assert_eq!(onhand(bd, "apples"), "10");
    assert!(ok(bd, &["agent", "list"]).contains("Bea"));
    assert!(ok(bd, &["network", "list"]).contains("market"));
    // A one-time ticket cannot be used twice.
    fails(
        c.path(),
        &["network", "join", &ticket, "--local-only"],
        1,
        "refused",
    );
    // The key invite works for K only.
    fails(
        c.path(),
        &["network", "join", &key_ticket, "--local-only"],
        1,
        "refused",
    );
    ok(k.path(), &["network", "join", &key_ticket, "--local-only"]);
    lines_a.wait_for(&format!("invite redeemed: {k_device} joined as member"));
    let members = json(k.path(), &["network", "members", "--json"]);
    let me = members
        .as_array()
        .and_then(|m| m.iter().find(|m| m["device"] == k_device.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("K not a member: {members}"));
    assert_eq!(me["agent"], "ana", "{me}");

    // B records while offline, then syncs: A receives it live.
    let consume = [
        "event",
        "record",
        "--action",
        "consume",
        "--provider",
        "bea",
        "--receiver",
        "bea",
        "--resource",
        "apples",
        "--quantity",
        "1 kg",
    ];
    ok(bd, &consume);
    // B acts for bea: an event between other agents is refused before anything is written;
    // a provider and receiver left out are bea.
    let events = json(bd, &["event", "list", "--json"]);
    fails(
        bd,
        &[
            "event",
            "record",
            "--action",
            "produce",
            "--provider",
            "joris",
            "--receiver",
            "joris",
            "--new-resource",
            "forged",
            "--quantity",
            "1 kg",
        ],
        1,
        "acts for bea but recorded an event between joris and joris",
    );
    assert_eq!(
        json(bd, &["event", "list", "--json"]),
        events,
        "nothing written"
    );
    ok(
        bd,
        &[
            "event",
            "record",
            "--action",
            "consume",
            "--resource",
            "apples",
            "--quantity",
            "1 kg",
        ],
    );
    let mine = json(bd, &["event", "list", "--json"]);
    let last = mine
        .as_array()
        .and_then(|l| l.iter().find(|e| !events.as_array().unwrap().contains(e)))
        .cloned()
        .expect("the new event");
    assert_eq!(
        (&last["provider"], &last["receiver"]),
        (&"bea".into(), &"bea".into()),
        "{last}"
    );
    let mut sync_b = spawn(bd, &["sync", "--local-only"]);
    let mut lines_b = Lines::of(&mut sync_b.0);
    lines_a.wait_for(&format!("change(s) from {b_device}"));
    lines_b.wait_for("connected");
    terminate(sync_b, &mut lines_b, "INT"); // as Ctrl-C does
    terminate(sync_a, &mut lines_a, "TERM");
    assert_eq!(onhand(ad, "apples"), "8");
    let peers = ok(ad, &["peers", "--json"]);
    assert!(peers.contains(&b_device), "A remembers B: {peers}");

    // A ticket whose inviter is not running: a clear error, after the connect timeout.
    let fresh = ok(ad, &["network", "invite", "--local-only"])
        .trim()
        .to_string();
    fails(
        c.path(),
        &["network", "join", &fresh, "--local-only"],
        1,
        "it must be running `reflow sync` or `reflow serve`",
    );
    assert!(json(c.path(), &["init", "--json"])["networks"]
        .as_array()
        .is_some_and(Vec::is_empty));

    // A removes B.
    let members = ok(ad, &["network", "members", "--json"]);
    assert!(members.contains(&b_device), "{members}");
    assert!(ok(ad, &["network", "remove", &b_device]).contains("removed"));
    let members = ok(ad, &["network", "members", "--json"]);
    assert!(!members.contains(&b_device), "{members}");
    // Wrong arguments and bad tickets.
    fails(
        bd,
        &["network", "join", "not-a-ticket"],
        1,
        "not a Reflow ticket",
    );
    fails(
        bd,
        &[
            "network",
            "join",
            &format!("{}x", &ticket[..ticket.len() - 3]),
        ],
        1,
        "ticket",
    );
    fails(ad, &["network", "invite", "--expires", "0"], 2, "positive");
    fails(
        ad,
        &["network", "invite", "--expires", "soon"],
        2,
        "duration",
    );
    fails(ad, &["network", "invite", "--role", "king"], 2, "king");
    fails(ad, &["network", "remove", "zzz"], 1, "bad device");
}

#[test]
fn processes_intents_and_proposals() {
    let t = setup();
    let d = t.path();
    ok(d, &["unit", "add", "hour", "hour", "--symbol", "h"]);
    ok(d, &["process", "spec-add", "repair", "Repair"]);
    ok(
        d,
        &[
            "process",
            "create",
            "fix",
            "Fix Ana's bike",
            "--based-on",
            "repair",
        ],
    );
    let work = [
        "event",
        "record",
        "--action",
        "work",
        "--provider",
        "ana",
        "--receiver",
        "joris",
        "--effort",
        "2 hour",
        "--conforms-to",
        "apple",
        "--input-of",
        "fix",
    ];
    ok(d, &work);
    let show = json(d, &["process", "show", "fix", "--json"]);
    assert_eq!(show["id"], "fix");
    assert_eq!(show["basedOn"], "repair");
    assert_eq!(show["inputs"].as_array().map(Vec::len), Some(1), "{show}");
    assert_eq!(show["outputs"].as_array().map(Vec::len), Some(0), "{show}");
    assert!(ok(d, &["process", "show", "fix"]).contains("work"));
    assert_eq!(json(d, &["process", "list", "--json"])[0]["id"], "fix");
    ok(d, &["process", "finish", "fix"]);
    assert!(ok(d, &["process", "list"]).contains("finished"));

    ok(
        d,
        &[
            "intent",
            "add",
            "jam-offer",
            "--action",
            "transfer",
            "--provider",
            "joris",
            "--conforms-to",
            "apple",
            "--quantity",
            "2 kg",
            "--at-location",
            "stall",
        ],
    );
    ok(
        d,
        &[
            "intent",
            "add",
            "fix-req",
            "--action",
            "work",
            "--receiver",
            "ana",
        ],
    );
    let offers = json(d, &["intent", "list", "--offers", "--json"]);
    assert_eq!(offers.as_array().map(Vec::len), Some(1), "{offers}");
    assert_eq!(offers[0]["id"], "jam-offer");
    assert_eq!(offers[0]["resourceQuantity"]["hasNumericalValue"], "2");
    let requests = json(d, &["intent", "list", "--requests", "--json"]);
    assert_eq!(requests[0]["id"], "fix-req", "{requests}");
    assert!(ok(d, &["intent", "list"]).contains("offer"));
    ok(
        d,
        &[
            "proposal",
            "create",
            "swap",
            "Apples for a repair",
            "--intent",
            "jam-offer",
            "--intent",
            "fix-req",
            "--unit-based",
        ],
    );
    let list = json(d, &["proposal", "list", "--json"]);
    assert_eq!(
        list[0]["intents"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    assert_eq!(list[0]["status"], "open");
    ok(d, &["proposal", "status", "swap", "accepted"]);
    assert_eq!(
        json(d, &["proposal", "show", "swap", "--json"])["status"],
        "accepted"
    );
    assert!(ok(d, &["proposal", "show", "swap"]).contains("jam-offer"));
    ok(d, &["intent", "finish", "fix-req"]);
    assert_eq!(
        json(d, &["intent", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        json(d, &["intent", "list", "--all", "--json"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Wrong input.
    fails(
        d,
        &["intent", "add", "x", "--action", "transfer"],
        2,
        "--provider",
    );
    fails(
        d,
        &[
            "intent",
            "add",
            "x",
            "--action",
            "sell",
            "--provider",
            "joris",
        ],
        1,
        "sell",
    );
    fails(
        d,
        &[
            "intent",
            "add",
            "x",
            "--action",
            "transfer",
            "--provider",
            "nobody",
        ],
        1,
        "nobody",
    );
    fails(
        d,
        &["proposal", "create", "p", "P", "--intent", "nope"],
        1,
        "nope",
    );
    fails(d, &["proposal", "create", "p", "P"], 2, "--intent");
    fails(d, &["process", "show", "nope"], 1, "no process nope");
    fails(d, &["process", "create", "fix", "Again"], 1, "fix");
}

/// A ledger with corrections, transfers creating resources, processes and intents.
fn rich() -> tempfile::TempDir {
    let t = setup();
    let d = t.path();
    let rec = |args: &[&str]| {
        let mut v = vec!["event", "record"];
        v.extend_from_slice(args);
        ok(d, &v).trim().to_string()
    };
    let id = rec(&[
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
    ]);
    ok(d, &["event", "correct", &id, "--quantity", "2.5 kg"]);
    rec(&[
        "--action",
        "transfer",
        "--provider",
        "joris",
        "--receiver",
        "ana",
        "--resource",
        "apples",
        "--quantity",
        "1 kg",
        "--new-resource",
        "ana-apples",
        "--new-resource-name",
        "Ana's apples",
    ]);
    ok(d, &["process", "create", "jam", "Jam making"]);
    rec(&[
        "--action",
        "consume",
        "--provider",
        "ana",
        "--receiver",
        "ana",
        "--resource",
        "ana-apples",
        "--quantity",
        "0.5 kg",
        "--input-of",
        "jam",
    ]);
    ok(
        d,
        &[
            "intent",
            "add",
            "i1",
            "--action",
            "transfer",
            "--provider",
            "ana",
            "--resource",
            "ana-apples",
        ],
    );
    ok(d, &["proposal", "create", "p1", "Apples", "--intent", "i1"]);
    t
}

fn events_without_ids(dir: &Path) -> Vec<serde_json::Value> {
    let events = json(dir, &["event", "list", "--all", "--json"]);
    events
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let m = e.as_object_mut().expect("object");
            m.remove("id");
            // Where an imported event came from is the copy's own record.
            m.remove("importedFrom");
            m.remove("importSource");
            if m.remove("corrects").is_some() {
                m.insert("corrects".into(), "(an event)".into());
            }
            e
        })
        .collect()
}

#[test]
fn export_import_round_trip() {
    let a = rich();
    let ad = a.path();
    let file = ad.join("export.jsonld");
    ok(ad, &["export", "--output", file.to_str().expect("utf8")]);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert_eq!(
        doc["@context"]["@vocab"],
        "https://w3id.org/valueflows/ont/vf#"
    );
    let graph = doc["@graph"].as_array().expect("graph");
    let types: Vec<&str> = graph.iter().filter_map(|n| n["@type"].as_str()).collect();
    for t in [
        "EconomicEvent",
        "EconomicResource",
        "Person",
        "Organization",
        "Unit",
        "SpatialThing",
        "ResourceSpecification",
        "Process",
        "Intent",
        "Proposal",
    ] {
        assert!(types.contains(&t), "no {t} in {types:?}");
    }
    assert_eq!(
        ok(ad, &["export"]),
        std::fs::read_to_string(&file).expect("read")
    );

    let b = tempfile::tempdir().expect("tempdir");
    let bd = b.path();
    ok(
        bd,
        &[
            "network",
            "create",
            "copy",
            "--agent-id",
            "joris",
            "--as",
            "Joris",
        ],
    );
    let out = ok(bd, &["import", file.to_str().expect("utf8")]);
    assert!(out.contains("imported 5 events"), "{out}");
    assert_eq!(
        json(ad, &["inventory", "--json"]),
        json(bd, &["inventory", "--json"])
    );
    assert_eq!(events_without_ids(ad), events_without_ids(bd));
    assert_eq!(onhand(bd, "apples"), "6.5");
    assert_eq!(
        json(ad, &["proposal", "list", "--json"]),
        json(bd, &["proposal", "list", "--json"])
    );
    assert_eq!(
        json(ad, &["process", "list", "--json"]),
        json(bd, &["process", "list", "--json"])
    );
    // The import as JSON, from stdin.
    let c = tempfile::tempdir().expect("tempdir");
    ok(c.path(), &["network", "create", "c"]);
    let out = Command::new(env!("CARGO_BIN_EXE_reflow"))
        .arg("--data-dir")
        .arg(c.path())
        .args(["import", "-", "--json"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["events"], 5);
    assert_eq!(
        json(c.path(), &["inventory", "--json"]),
        json(ad, &["inventory", "--json"])
    );
}

#[test]
fn import_bad_files() {
    let t = setup();
    let d = t.path();
    let before = ok(d, &["event", "list", "--all", "--json"]);
    fails(d, &["import", "/nonexistent/file.jsonld"], 1, "reading");
    let bad = d.join("bad.jsonld");
    std::fs::write(&bad, "{ this is not json").expect("write");
    fails(d, &["import", bad.to_str().expect("utf8")], 1, "not JSON");
    std::fs::write(
        &bad,
        r#"{"@graph": [{"@id": "x", "@type": "Unit", "label": "x", "symbol": "x"}]}"#,
    )
    .expect("write");
    fails(d, &["import", bad.to_str().expect("utf8")], 1, "@context");
    std::fs::write(
        &bad,
        r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
            {"@id": "c1", "@type": "Claim", "action": "transfer"},
            {"@id": "e1", "@type": "EconomicEvent", "action": "produce", "provider": "ghost",
             "receiver": "joris", "resourceInventoriedAs": "r1", "colour": "red",
             "resourceQuantity": {"hasUnit": "kg", "hasNumericalValue": 2}},
            {"@id": "r1", "@type": "EconomicResource", "name": "R1"},
            {"@id": "e2", "@type": "EconomicEvent", "action": "fly", "provider": "joris", "receiver": "joris"}
        ]}"#,
    )
    .expect("write");
    let out = reflow(d, &["import", bad.to_str().expect("utf8")]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    // Claims are imported now and unknown properties (`colour`) kept: the unknown action is
    // what refuses the file, named with its node and field.
    for needle in ["nothing imported", "node e2, field action", "fly"] {
        assert!(se.contains(needle), "{needle:?} not in {se}");
    }
    assert_eq!(se.trim().lines().count(), 1, "one line: {se}");
    // A resource referenced by a missing agent: listed before anything is written.
    std::fs::write(
        &bad,
        r#"{"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": [
            {"@id": "e1", "@type": "EconomicEvent", "action": "produce", "provider": "ghost",
             "receiver": "joris", "resourceInventoriedAs": "r1",
             "resourceQuantity": {"hasUnit": "kg", "hasNumericalValue": 2}},
            {"@id": "r1", "@type": "EconomicResource", "name": "R1"},
            {"@id": "r2", "@type": "EconomicResource", "name": "R2"}
        ]}"#,
    )
    .expect("write");
    fails(
        d,
        &["import", bad.to_str().expect("utf8")],
        1,
        "node e1, field agent: refers to Person ghost",
    );
    fails(
        d,
        &["import", bad.to_str().expect("utf8")],
        1,
        "--create-missing",
    );
    // The spec's own example refers to agents it does not define: refused, naming them.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ex-production--00-simple-manufacturing-process.jsonld");
    let out = reflow(d, &["import", fixture.to_str().expect("utf8")]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    for needle in ["https://manufacturing.example/", "--create-missing"] {
        assert!(se.contains(needle), "{needle:?} not in {se}");
    }
    assert_eq!(
        ok(d, &["event", "list", "--all", "--json"]),
        before,
        "nothing applied"
    );
    // A valid spec-style file (http vocab, numbers, `vf:` prefixes) imports.
    std::fs::write(
        &bad,
        r#"{"@context": [{"@vocab": "http://w3id.org/valueflows/ont/vf#"}], "@graph": [
            {"@id": "alice", "@type": "Person", "name": "Alice"},
            {"@id": "e1", "@type": "vf:EconomicEvent", "vf:action": "raise", "provider": {"@id": "alice"},
             "receiver": "alice", "resourceInventoriedAs": "r1",
             "resourceQuantity": {"hasUnit": "kg", "hasNumericalValue": 2.5}},
            {"@id": "r1", "@type": "EconomicResource", "name": "R1",
             "accountingQuantity": {"hasUnit": "kg", "hasNumericalValue": 2.5}}
        ]}"#,
    )
    .expect("write");
    assert!(ok(d, &["import", bad.to_str().expect("utf8")]).contains("imported 1 events"));
    assert_eq!(onhand(d, "r1"), "2.5");
}

#[test]
fn import_create_missing_and_the_report() {
    let t = setup();
    let d = t.path();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/valueflows/ex-exchange--02-2.jsonld");
    let file = fixture.to_str().expect("utf8");
    let before = ok(d, &["event", "list", "--all", "--json"]);
    fails(
        d,
        &["import", file],
        1,
        "refers to Person https://alice.example",
    );
    assert_eq!(ok(d, &["event", "list", "--all", "--json"]), before);
    // With --create-missing: the agents and the specification are created, the standard unit
    // known by its OM name, the wallets opened with the file's "before" balances.
    let out = ok(d, &["import", file, "--create-missing"]);
    for needle in [
        "imported 3 events",
        "created missing: Person https://alice.example, Person https://bob.example, ResourceSpecification http://www.wikidata.org/entity/Q21002847",
        "standard units: http://www.ontology-of-units-of-measure.org/resource/om-2/one",
        "opening balances: https://faircoin.example/b75d8f6a-e2df-4e52-b36d-1a22a66f4ead (540 http://www.ontology-of-units-of-measure.org/resource/om-2/one)",
    ] {
        assert!(out.contains(needle), "{needle:?} not in {out}");
    }
    assert_eq!(
        onhand(
            d,
            "https://faircoin.example/b75d8f6a-e2df-4e52-b36d-1a22a66f4ead"
        ),
        "440"
    );
    // Bob's wallet: described before the transfer with 480, so it existed: 480 + 100.
    assert_eq!(
        onhand(
            d,
            "https://faircoin.example/3be5259d-10f0-431c-9fec-9c0c15a461d3"
        ),
        "580"
    );
    // Again: nothing changes, and the JSON report says so.
    let after = ok(d, &["event", "list", "--all", "--json"]);
    let again = json(d, &["import", file, "--create-missing", "--json"]);
    assert_eq!(again["events"], 0, "{again}");
    assert!(
        again["unchanged"].as_u64().expect("unchanged") > 0,
        "{again}"
    );
    assert_eq!(again["created"], serde_json::json!({}), "{again}");
    assert_eq!(ok(d, &["event", "list", "--all", "--json"]), after);
    // The imported events say where they came from.
    let events = json(d, &["event", "list", "--all", "--json"]);
    let imported: Vec<&serde_json::Value> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["importSource"] == "ex-exchange--02-2.jsonld")
        .collect();
    assert_eq!(imported.len(), 3, "{events:#}");
    assert!(imported
        .iter()
        .any(|e| e["importedFrom"] == "urn:uuid:e5afaa28-1080-4912-835b-46883efb83e6"));
}

/// A file of `n` raise events.
fn big_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut graph = vec![
        serde_json::json!({"@id": "kg", "@type": "Unit", "label": "kilogram", "symbol": "kg"}),
        serde_json::json!({"@id": "p", "@type": "Person", "name": "P"}),
    ];
    for i in 0..n {
        graph.push(
            serde_json::json!({"@id": format!("e{i}"), "@type": "EconomicEvent", "action": "raise",
            "provider": "p", "receiver": "p", "resourceInventoriedAs": format!("r{i}"),
            "resourceQuantity": {"hasUnit": "kg", "hasNumericalValue": i + 1}}),
        );
        graph.push(serde_json::json!({"@id": format!("r{i}"), "@type": "EconomicResource", "name": format!("R{i}")}));
    }
    let doc = serde_json::json!({"@context": {"@vocab": "https://w3id.org/valueflows/ont/vf#"}, "@graph": graph});
    let file = dir.join("big.jsonld");
    std::fs::write(&file, doc.to_string()).expect("write");
    file
}

#[test]
fn progress_bar_on_a_terminal_only() {
    let t = tempfile::tempdir().expect("tempdir");
    let d = t.path();
    ok(d, &["network", "create", "big"]);
    let file = big_file(d, 300);
    // Piped: no progress output at all.
    let out = reflow(d, &["import", file.to_str().expect("utf8")]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 300 events"));
    // On a terminal (a pseudo-terminal made by script(1)): a bar.
    let e = tempfile::tempdir().expect("tempdir");
    ok(e.path(), &["network", "create", "big"]);
    let cmd = format!(
        "{} --data-dir {} import {}",
        env!("CARGO_BIN_EXE_reflow"),
        e.path().display(),
        file.display()
    );
    let Ok(out) = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
    else {
        eprintln!("script(1) not available: terminal case skipped");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("importing"),
        "no progress bar on a terminal: {text:?}"
    );
    assert!(text.contains("imported 300 events"), "{text}");
}

#[test]
fn help_on_every_subcommand() {
    let t = tempfile::tempdir().expect("tempdir");
    let cmds: &[&[&str]] = &[
        &[],
        &["init"],
        &["network"],
        &["network", "create"],
        &["network", "invite"],
        &["network", "join"],
        &["network", "list"],
        &["network", "members"],
        &["network", "remove"],
        &["agent", "add"],
        &["agent", "list"],
        &["location", "add"],
        &["location", "list"],
        &["spec", "add"],
        &["spec", "list"],
        &["unit", "add"],
        &["unit", "list"],
        &["event", "record"],
        &["event", "list"],
        &["event", "correct"],
        &["inventory"],
        &["resource", "show"],
        &["trace"],
        &["track"],
        &["conflicts"],
        &["process", "create"],
        &["process", "spec-add"],
        &["process", "list"],
        &["process", "show"],
        &["process", "finish"],
        &["intent", "add"],
        &["intent", "list"],
        &["intent", "finish"],
        &["proposal", "create"],
        &["proposal", "list"],
        &["proposal", "show"],
        &["proposal", "status"],
        &["proposal", "accept"],
        &["commitment", "add"],
        &["commitment", "list"],
        &["commitment", "show"],
        &["commitment", "finish"],
        &["agreement", "list"],
        &["agreement", "show"],
        &["claim", "add"],
        &["claim", "list"],
        &["recipe", "process"],
        &["recipe", "exchange"],
        &["recipe", "flow"],
        &["recipe", "plan"],
        &["relationship", "add"],
        &["relationship", "role"],
        &["relationship", "list"],
        &["flows"],
        &["peers"],
        &["sync"],
        &["serve"],
        &["export"],
        &["import"],
        &["demo"],
        &["verify"],
    ];
    for c in cmds {
        let mut args = c.to_vec();
        args.push("--help");
        let out = reflow(t.path(), &args);
        let so = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && so.contains("Usage: reflow"),
            "{args:?}: {so}"
        );
    }
    // No store was created by asking for help.
    assert!(std::fs::read_dir(t.path()).expect("dir").next().is_none());
}

#[test]
fn demo_serves_three_nodes_and_stops_on_sigterm() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("demo");
    let mut demo = spawn(
        t.path(),
        &["demo", "--port", "0", "--dir", dir.to_str().expect("utf8")],
    );
    let mut lines = Lines::of(&mut demo.0);
    lines.wait_for("converged: 3 nodes agree on 12 events");
    let mut uis = Vec::new();
    for name in ["repair-cafe", "market-stall", "volunteer-laptop"] {
        uis.push(Ui::from_line(&lines.wait_for(name)));
    }
    lines.wait_for("Ctrl-C");
    for ui in &uis {
        let (status, body) = ui.http("GET", "/api/inventory", "");
        assert!(
            status.contains("200") && body.contains("jam"),
            "{status} {body}"
        );
    }
    // Each launch has its own key: one node's key opens no other node's API.
    assert!(uis[0].key != uis[1].key && uis[1].key != uis[2].key);
    let other = Ui {
        port: uis[1].port,
        key: uis[0].key.clone(),
    };
    let (status, body) = other.http("GET", "/api/inventory", "");
    assert!(
        status.contains("403") && !body.contains("jam"),
        "{status} {body}"
    );
    terminate(demo, &mut lines, "TERM");
}

/// The market flow on the command line: an offer with a price, accepted by another agent
/// (an agreement with commitments both ways), a delivery that fulfils one side; the flows
/// report as CSV; a repair planned from a recipe.
#[test]
fn market_flow_and_flows_report() {
    let t = setup();
    let d = t.path();
    ok(d, &["unit", "add", "EUR", "euro"]);
    ok(d, &["unit", "add", "hour", "hour"]);
    ok(d, &["spec", "add", "euro", "Euro"]);
    ok(
        d,
        &[
            "intent",
            "add",
            "offer",
            "--action",
            "transfer",
            "--provider",
            "joris",
            "--conforms-to",
            "apple",
            "--quantity",
            "2 kg",
        ],
    );
    ok(
        d,
        &[
            "intent",
            "add",
            "price",
            "--action",
            "transfer",
            "--receiver",
            "joris",
            "--conforms-to",
            "euro",
            "--quantity",
            "3 EUR",
        ],
    );
    ok(
        d,
        &[
            "proposal",
            "create",
            "p",
            "2 kg apples",
            "--intent",
            "offer",
            "--reciprocal",
            "price",
            "--purpose",
            "offer",
        ],
    );
    // A request's purpose contradicts an offer's intents: refused with the reason.
    fails(
        d,
        &[
            "proposal",
            "create",
            "p2",
            "x",
            "--intent",
            "offer",
            "--purpose",
            "request",
        ],
        1,
        "names no receiver",
    );
    // Relationships: a role, and who volunteers where.
    ok(
        d,
        &[
            "relationship",
            "role",
            "volunteer",
            "is volunteer of",
            "--inverse",
            "has volunteer",
        ],
    );
    ok(d, &["relationship", "add", "ana", "volunteer", "cafe"]);
    let rels = json(d, &["relationship", "list", "--json"]);
    assert_eq!(rels[0]["id"], r#"["ana","volunteer","cafe"]"#, "{rels}");
    assert_eq!(rels[0]["subject"], "ana", "{rels}");
    let text = ok(d, &["relationship", "list"]);
    assert!(text.contains("ana is volunteer of cafe"), "{text}");
    fails(
        d,
        &["relationship", "add", "nobody", "volunteer", "cafe"],
        1,
        "nobody",
    );
    let accepted = json(d, &["proposal", "accept", "p", "--agent", "ana", "--json"]);
    let deliver = accepted["commitments"][0]
        .as_str()
        .expect("commitment")
        .to_string();
    let agreement = accepted["agreement"]
        .as_str()
        .expect("agreement")
        .to_string();
    fails(
        d,
        &["proposal", "accept", "p", "--agent", "ana"],
        1,
        "not open",
    );
    let list = json(d, &["commitment", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert!(list
        .as_array()
        .expect("list")
        .iter()
        .all(|c| c["progress"] == "open"));

    ok(
        d,
        &[
            "event",
            "record",
            "--action",
            "transfer",
            "--provider",
            "joris",
            "--receiver",
            "ana",
            "--resource",
            "apples",
            "--quantity",
            "2 kg",
            "--new-resource",
            "ana-apples",
            "--fulfills",
            &deliver,
            "--realization-of",
            &agreement,
            "--at-time",
            "2026-03-07T10:00:00Z",
        ],
    );
    let c = json(d, &["commitment", "show", &deliver, "--json"]);
    assert_eq!(c["progress"], "fulfilled", "{c}");
    assert_eq!(c["fulfilled"]["hasNumericalValue"], "2", "{c}");
    let open = ok(d, &["commitment", "list"]);
    assert!(open.contains("3 EUR") && !open.contains(&deliver), "{open}");
    let a = ok(d, &["agreement", "show", &agreement]);
    assert!(a.contains("fulfilled") && !a.contains("complete"), "{a}");
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
            "1 kg",
            "--fulfills",
            &deliver,
        ],
        1,
        "transfer",
    );

    // The flows: the setup's produce has no time, so a period leaves it out.
    let csv = ok(
        d,
        &["flows", "--by", "action", "--period", "month", "--csv"],
    );
    assert_eq!(
        csv,
        "period,action,resourceSpecification,provider,receiver,place,unit,quantity,events\r\n\
         2026-03,transfer,,,,,kg,2,1\r\n"
    );
    let all = json(d, &["flows", "--by", "action,spec", "--json"]);
    assert_eq!(all["rows"][0]["action"], "produce", "{all}");
    assert_eq!(all["rows"][0]["resourceSpecification"], "apple", "{all}");
    assert_eq!(all["rows"][0]["quantity"], "10", "{all}");
    fails(d, &["flows", "--from", "March"], 1, "ISO 8601");
    fails(d, &["flows", "--by", "colour"], 1, "unknown dimension");

    // A repair planned from its recipe: the work and the part, as commitments; the part is
    // sold to the owner (a recipe exchange whose reciprocal clause is the price).
    ok(d, &["recipe", "process", "fix-bike", "Fix a bike"]);
    ok(d, &["recipe", "exchange", "parts-sale", "Parts sale"]);
    ok(
        d,
        &[
            "recipe",
            "flow",
            "--process",
            "fix-bike",
            "--action",
            "work",
            "--effort",
            "1 hour",
        ],
    );
    ok(
        d,
        &[
            "recipe",
            "flow",
            "--process",
            "fix-bike",
            "--action",
            "consume",
            "--quantity",
            "1 kg",
            "--conforms-to",
            "apple",
            "--clause-of",
            "parts-sale",
        ],
    );
    ok(
        d,
        &[
            "recipe",
            "flow",
            "--reciprocal-clause-of",
            "parts-sale",
            "--action",
            "transfer",
            "--quantity",
            "4 EUR",
            "--conforms-to",
            "euro",
        ],
    );
    let planned = json(
        d,
        &[
            "recipe",
            "plan",
            "fix-bike",
            "--provider",
            "ana",
            "--receiver",
            "cafe",
            "--plan",
            "repairs",
            "--due",
            "2026-01-01",
            "--json",
        ],
    );
    assert_eq!(
        planned["inputs"].as_array().map(Vec::len),
        Some(2),
        "{planned}"
    );
    // One agreement (the parts sale): the apple is its clause, the 4 EUR from the café (the
    // receiver) to ana its reciprocal clause.
    assert_eq!(
        planned["agreements"].as_array().map(Vec::len),
        Some(1),
        "{planned}"
    );
    let agreement = planned["agreements"][0].as_str().expect("agreement");
    let shown = json(d, &["agreement", "show", agreement, "--json"]);
    assert_eq!(
        shown["stipulates"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    let pay = &shown["stipulatesReciprocal"][0]["commitment"];
    assert_eq!(pay["provider"], "cafe", "{shown}");
    assert_eq!(pay["receiver"], "ana", "{shown}");
    // Work, part and payment are all due on 2026-01-01: three overdue by February.
    let overdue = ok(d, &["commitment", "list", "--now", "2026-02-01"]);
    assert_eq!(overdue.matches("OVERDUE").count(), 3, "{overdue}");
}

/// `reflow rules show | set | test` (docs/rules.md): a malformed set is refused with the
/// compiler's reason, a template publishes, a draft is tested without writing, a sale above the
/// stock is flagged and shown.
#[test]
fn rules_show_set_test() {
    let t = setup();
    let d = t.path();
    assert!(ok(d, &["rules", "show"]).contains("no rules"));
    let bad = d.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name":"Bad","version":1,"rules":[{"name":"r","outcome":"flag","check":"event.quantity.milli > 2.5","message":"m"}]}"#,
    )
    .expect("write");
    fails(
        d,
        &["rules", "set", bad.to_str().expect("path")],
        1,
        "floating-point",
    );
    assert!(ok(d, &["rules", "show"]).contains("no rules"));

    let sale = r#"{"action":"transfer","provider":"joris","receiver":"ana","resourceInventoriedAs":"apples","resourceQuantity":{"hasNumericalValue":"12","hasUnit":"kg"}}"#;
    let found = json(
        d,
        &["rules", "test", "food-market", "--json", "--event", sale],
    );
    assert_eq!(found[0]["rule"], "sale-within-onhand", "{found}");
    assert!(
        ok(d, &["rules", "show"]).contains("no rules"),
        "test writes nothing"
    );

    assert!(ok(d, &["rules", "set", "food-market"]).contains("version 1"));
    ok(
        d,
        &[
            "event",
            "record",
            "--action",
            "transfer",
            "--provider",
            "joris",
            "--receiver",
            "ana",
            "--resource",
            "apples",
            "--quantity",
            "12 kg",
            "--new-resource",
            "ana-apples",
            "--new-resource-name",
            "Apples",
        ],
    );
    let shown = json(d, &["rules", "show", "--json"]);
    assert_eq!(shown["ruleSet"]["version"], 1, "{shown}");
    assert_eq!(shown["flagged"][0]["rule"], "sale-within-onhand", "{shown}");
    assert_eq!(shown["refused"], serde_json::json!([]), "{shown}");
    assert!(ok(d, &["rules", "set", "time-bank"]).contains("version 2"));
    assert!(
        ok(d, &["rules", "show"]).contains("records for others: admins only"),
        "no grant yet"
    );
    // A grant: members and the agent `joris` record for others (rule-set format 2).
    let grant = d.join("grant.json");
    std::fs::write(
        &grant,
        r#"{"name":"Market","version":1,"rules":[],"recordForOthers":{"roles":["member"],"agents":["joris"]}}"#,
    )
    .expect("write");
    assert!(ok(d, &["rules", "set", grant.to_str().expect("path")]).contains("version 3"));
    let shown = ok(d, &["rules", "show"]);
    assert!(
        shown.contains("records for others: admins; roles [member]; agents [joris]; devices []"),
        "{shown}"
    );
    let shown = json(d, &["rules", "show", "--json"]);
    assert_eq!(shown["ruleSet"]["format"], 2, "{shown}");
    assert_eq!(
        shown["ruleSet"]["recordForOthers"],
        serde_json::json!({"roles": ["member"], "agents": ["joris"]}),
        "{shown}"
    );
}

/// A trace bundle exported from a real node verifies offline (another, empty data dir: no
/// node, no network); a flipped quantity, a flipped signature and a removed change are
/// refused, naming the event and field, the change.
#[test]
fn trace_bundle_export_and_verify() {
    let t = rich();
    let d = t.path();
    let file = d.join("ana-apples.bundle.json");
    let file_s = file.to_str().expect("utf-8 path");
    let out = ok(d, &["trace", "ana-apples", "--export", file_s]);
    assert!(
        out.contains("wrote the trace bundle of ana-apples"),
        "{out}"
    );
    let stranger = tempfile::tempdir().expect("tempdir");
    let v = ok(stranger.path(), &["verify", file_s]);
    assert!(
        v.starts_with("verified: trace of ana-apples in network market"),
        "{v}"
    );
    assert!(v.contains("transfer"), "{v}");
    let verified = json(stranger.path(), &["verify", file_s, "--json"]);
    let traced: Vec<String> = json(d, &["trace", "ana-apples", "--json"])["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["node"]["type"] == "economicEvent")
        .map(|s| s["node"]["id"].as_str().expect("id").to_string())
        .collect();
    let ids: Vec<String> = verified["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect();
    assert!(!ids.is_empty());
    assert_eq!(ids, traced, "the bundle holds the trace the node shows");
    assert!(
        std::fs::read_dir(stranger.path())
            .expect("dir")
            .next()
            .is_none(),
        "verify opens no store"
    );

    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    let write = |name: &str, v: &serde_json::Value| {
        let p = d.join(name);
        std::fs::write(&p, serde_json::to_vec(v).expect("json")).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    // A quantity flipped: 1 kg transferred becomes 100 kg.
    let mut bad = bundle.clone();
    let graph = bad["trace"]["@graph"].as_array_mut().expect("graph");
    let transfer = graph
        .iter_mut()
        .find(|n| n["action"] == "transfer")
        .expect("the transfer is in the trace");
    // Bundle format 2: the node's @id is the event's IRI; refusals name the ledger id.
    let id = transfer["@id"]
        .as_str()
        .expect("id")
        .strip_prefix("urn:reflow:")
        .expect("an id under urn:reflow:")
        .to_string();
    assert_eq!(transfer["resourceQuantity"]["hasNumericalValue"], "1");
    transfer["resourceQuantity"]["hasNumericalValue"] = serde_json::json!("100");
    let p = write("quantity.json", &bad);
    fails(
        stranger.path(),
        &["verify", &p],
        1,
        &format!("event {id}: field resourceQuantity.hasNumericalValue is \"100\""),
    );
    // A signature flipped.
    let mut bad = bundle.clone();
    let sig = bad["changes"][1]["signature"]
        .as_str()
        .expect("sig")
        .to_string();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    bad["changes"][1]["signature"] = serde_json::json!(flipped);
    let hash = bad["changes"][1]["hash"]
        .as_str()
        .expect("hash")
        .to_string();
    let p = write("signature.json", &bad);
    fails(
        stranger.path(),
        &["verify", &p],
        1,
        &format!("change {hash}: signature refused"),
    );
    // A change removed.
    let mut bad = bundle;
    let removed = bad["changes"].as_array_mut().expect("changes").remove(1);
    let p = write("removed.json", &bad);
    fails(
        stranger.path(),
        &["verify", &p],
        1,
        &format!(
            "change {} is missing",
            removed["hash"].as_str().expect("hash")
        ),
    );
    fails(
        stranger.path(),
        &["verify", "/nonexistent/bundle.json"],
        1,
        "reading",
    );
}
