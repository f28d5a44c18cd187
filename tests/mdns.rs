//! Local-network discovery (mDNS) between two nodes on a link of their own: two network
//! namespaces joined by a veth pair, made by this test, so that no multicast ever leaves them.
//!
//! - `mdns_discovery_in_network_namespaces` (the parent): prepares two data directories
//!   offline (A's store holds a network in which B's device is a member; B's store holds the
//!   replica B joined from A's signed changes), creates the namespaces and the veth pair
//!   (addresses 169.254.77.1 and .2, link-local), and runs this test binary's `mdns_child`
//!   once in each namespace. Neither child is given the other's address nor calls `connect`:
//!   A must see B on the link (`NodeEvent::Discovered` with B's veth address and the network),
//!   get a sync connection with it (`NodeEvent::Connected`; if A dialed, after the discovery),
//!   and receive B's events, the one B recorded before they met and the one after; B must
//!   receive A's. The parent reads the children's reports on their stdout, with deadlines.
//!   Without `ip netns` (not root, no CAP_NET_ADMIN, no iproute2) it says why on stderr and
//!   passes without running anything: it never falls back to the machine's own interfaces.
//! - `mdns_child`: one child (ignored unless run by the parent). It checks that it runs in
//!   the namespace the parent made (same namespace inode) before it opens its node.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reflow::node::NodeEvent;
use reflow::*;
use support::*;

/// Environment of a child: its role (`a` or `b`). The other variables follow.
const ROLE: &str = "REFLOW_MDNS_ROLE";
const DIR: &str = "REFLOW_MDNS_DIR";
const BIND: &str = "REFLOW_MDNS_BIND";
const NETWORK: &str = "REFLOW_MDNS_NETWORK";
const PEER: &str = "REFLOW_MDNS_PEER";
const PEER_IP: &str = "REFLOW_MDNS_PEER_IP";
const NETNS_INO: &str = "REFLOW_MDNS_NETNS_INO";

/// Prefix of the children's report lines on stdout.
const REPORT: &str = "REFLOW-MDNS ";

/// Longest wait for one step of the parent (a child's whole run is bounded by its own waits).
const STEP: Duration = Duration::from_secs(40);

const IP_A: &str = "169.254.77.1";
const IP_B: &str = "169.254.77.2";

// ---------------------------------------------------------------------------------------
// The parent.

#[test]
fn mdns_discovery_in_network_namespaces() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let started = Instant::now();
    assert!(NodeConfig::new("x").mdns, "discovery is on by default");
    assert!(
        !NodeConfig::loopback("x").mdns,
        "a loopback node never multicasts"
    );

    let tmp = tempdir();
    let (dir_a, dir_b, network, id_a, id_b) = prepare(tmp.path());

    let mut lab = match Lab::create(std::process::id()) {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!(
                "SKIPPED mdns_discovery_in_network_namespaces: cannot build the test's own \
                 network namespaces ({why}); it needs root (CAP_NET_ADMIN) and iproute2. \
                 mDNS is never tried on the machine's own interfaces."
            );
            return;
        }
    };
    let (tx, rx) = mpsc::channel::<(char, Option<String>)>();
    let mut reports = Reports {
        rx,
        pending: Vec::new(),
        exited: Vec::new(),
    };

    lab.spawn('a', &dir_a, IP_A, network, id_b, IP_B, tx.clone());
    let ready = reports.expect('a', "READY");
    assert_eq!(
        ready,
        id_a.to_string(),
        "A runs with the prepared device key"
    );
    lab.spawn('b', &dir_b, IP_B, network, id_a, IP_A, tx);
    let ready = reports.expect('b', "READY");
    assert_eq!(
        ready,
        id_b.to_string(),
        "B runs with the prepared device key"
    );

    let discovered = reports.expect('a', "DISCOVERED");
    assert!(
        discovered.contains(IP_B),
        "A found B at its veth address: {discovered}"
    );
    let connected = reports.expect('a', "CONNECTED");
    reports.expect('b', "SYNCED");
    reports.expect('a', "RECEIVED");
    eprintln!(
        "A found B and synced with it through mDNS in {:?} (A's connection: {connected})",
        started.elapsed()
    );

    lab.close_children();
    reports.expect('a', "CLOSED");
    reports.expect('b', "CLOSED");
    lab.wait_children();
    eprintln!("mdns test done in {:?}", started.elapsed());
}

/// Two data directories, prepared offline (no socket): A's with a network in which B's
/// device is a member, B's with the replica B joined from A's history. A gets the smaller
/// device id, so it is the one that dials as soon as it sees B (see `node::discovery`).
fn prepare(root: &Path) -> (PathBuf, PathBuf, NetworkId, DeviceId, DeviceId) {
    let (x, y) = (root.join("x"), root.join("y"));
    let id_of = |dir: &Path| {
        std::fs::create_dir_all(dir).expect("data dir");
        let store = Store::open(dir.join(node::STORE_FILE)).expect("store");
        store.device_key().expect("device key").id()
    };
    let (ix, iy) = (id_of(&x), id_of(&y));
    let ((dir_a, id_a), (dir_b, id_b)) = if ix < iy {
        ((x, ix), (y, iy))
    } else {
        ((y, iy), (x, ix))
    };

    let store_a = Store::open(dir_a.join(node::STORE_FILE)).expect("A's store");
    let key_a = store_a.device_key().expect("A's key");
    let (replica, signed) =
        Replica::create_network("market", key_a, Agent::person("ana", "Ana")).expect("network");
    let network = replica.network();
    let mut a = store_a
        .create_replica(replica, &signed)
        .expect("A's replica");
    a.write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
        .expect("unit");
    a.write(|l| l.create(Agent::person("bea", "Bea")))
        .expect("agent");
    a.add_member(id_b, Role::Member, Id::from("bea"))
        .expect("B admitted");
    let history = a.replica().signed_changes_since(&[]);

    let store_b = Store::open(dir_b.join(node::STORE_FILE)).expect("B's store");
    let key_b = store_b.device_key().expect("B's key");
    let (replica, receipt) = Replica::join(network, key_b, history).expect("B joins offline");
    assert!(receipt.refused.is_empty(), "A's history is accepted");
    assert_eq!(replica.role(), Some(Role::Member));
    assert!(replica.member(&id_a).is_some());
    store_b
        .create_replica(replica, &receipt.applied)
        .expect("B's replica");
    (dir_a, dir_b, network, id_a, id_b)
}

/// The children's reports, as they arrive on their stdout (in any order between children).
struct Reports {
    rx: mpsc::Receiver<(char, Option<String>)>,
    /// Reports received while waiting for another: (child, word, rest of the line).
    pending: Vec<(char, String, String)>,
    /// Children whose stdout ended.
    exited: Vec<char>,
}

impl Reports {
    /// Wait for `child`'s report `word` (a failure of either child, or an exit of `child`
    /// before it, fails the test); returns the rest of the line.
    fn expect(&mut self, child: char, word: &str) -> String {
        if let Some(i) = self
            .pending
            .iter()
            .position(|(c, w, _)| *c == child && w == word)
        {
            return self.pending.remove(i).2;
        }
        let deadline = Instant::now() + STEP;
        loop {
            if self.exited.contains(&child) {
                panic!("child {child} exited before reporting {word}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Err(_) => {
                    panic!("timed out after {STEP:?} waiting for child {child} to report {word}")
                }
                Ok((c, None)) => self.exited.push(c),
                Ok((c, Some(line))) => {
                    let (w, rest) = line.split_once(' ').unwrap_or((&line, ""));
                    if w == "FAILED" {
                        panic!("child {c} failed: {rest}");
                    }
                    if c == child && w == word {
                        return rest.to_string();
                    }
                    self.pending.push((c, w.to_string(), rest.to_string()));
                }
            }
        }
    }
}

/// The namespaces and children of one run; removed and ended when dropped, whatever happens.
struct Lab {
    namespaces: Vec<String>,
    children: Vec<(char, Child, Option<ChildStdin>)>,
}

impl Lab {
    /// Two namespaces (`reflow-mdns-<pid>-a`, `-b`), each with loopback up and one end of a
    /// veth pair (`veth0`), multicast on, a link-local address and a multicast route. The
    /// veth pair is created inside the namespaces: it never appears among the machine's own
    /// interfaces.
    fn create(pid: u32) -> Result<Lab, String> {
        let mut lab = Lab {
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let (na, nb) = (
            format!("reflow-mdns-{pid}-a"),
            format!("reflow-mdns-{pid}-b"),
        );
        for ns in [&na, &nb] {
            ip(&["netns", "add", ns])?;
            lab.namespaces.push(ns.clone());
        }
        ip(&[
            "-n", &na, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns",
            &nb,
        ])?;
        for (ns, addr) in [(&na, IP_A), (&nb, IP_B)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "veth0",
            ])?;
            ip(&["-n", ns, "link", "set", "veth0", "multicast", "on"])?;
            ip(&["-n", ns, "link", "set", "veth0", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "veth0"])?;
        }
        Ok(lab)
    }

    fn namespace(&self, child: char) -> &str {
        let i = if child == 'a' { 0 } else { 1 };
        &self.namespaces[i]
    }

    /// Run `mdns_child` in the child's namespace; its report lines go to `tx`.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        child: char,
        dir: &Path,
        ip: &str,
        network: NetworkId,
        peer: DeviceId,
        peer_ip: &str,
        tx: mpsc::Sender<(char, Option<String>)>,
    ) {
        let ns = self.namespace(child).to_string();
        let ino = std::fs::metadata(format!("/run/netns/{ns}"))
            .expect("the namespace's file")
            .ino();
        let exe = std::env::current_exe().expect("this test binary");
        let mut proc = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args([
                "mdns_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, child.to_string())
            .env(DIR, dir)
            .env(BIND, format!("{ip}:0"))
            .env(NETWORK, network.to_string())
            .env(PEER, peer.to_string())
            .env(PEER_IP, peer_ip)
            .env(NETNS_INO, ino.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run a child in its namespace");
        let stdout = proc.stdout.take().expect("stdout");
        let stderr = proc.stderr.take().expect("stderr");
        let stdin = proc.stdin.take();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may have started the line ("test mdns_child ... ") before the
                // child's first report.
                match line.find(REPORT).map(|i| &line[i + REPORT.len()..]) {
                    Some(report) => {
                        eprintln!("[child {child}] {report}");
                        if tx.send((child, Some(report.to_string()))).is_err() {
                            return;
                        }
                    }
                    None => eprintln!("[child {child} stdout] {line}"),
                }
            }
            let _ = tx.send((child, None));
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[child {child} stderr] {line}");
            }
        });
        self.children.push((child, proc, stdin));
    }

    /// Ask the children to close their nodes.
    fn close_children(&mut self) {
        for (_, _, stdin) in &mut self.children {
            if let Some(mut s) = stdin.take() {
                let _ = writeln!(s, "CLOSE");
            }
        }
    }

    /// Wait for the children to exit, and check that they succeeded.
    fn wait_children(&mut self) {
        for (child, mut proc, _) in self.children.drain(..) {
            let status = proc.wait().expect("wait for a child");
            assert!(status.success(), "child {child} exited with {status}");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, proc, _) in &mut self.children {
            let _ = proc.kill();
            let _ = proc.wait();
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("could not remove the network namespace {ns}: {e}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------
// A child, in its namespace.

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{REPORT}{line}");
    let _ = out.flush();
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the parent"))
}

/// Until a report line says otherwise, a panic in the child is reported as a failure.
struct FailureReport;

impl Drop for FailureReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            report("FAILED (see the child's stderr)");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child of mdns_discovery_in_network_namespaces, which runs it in a network namespace"]
async fn mdns_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let _failure = FailureReport;
    // Never multicast outside the namespace the parent made for this child.
    let expected: u64 = env(NETNS_INO).parse().expect("inode");
    let own = std::fs::metadata("/proc/self/ns/net")
        .expect("own network namespace")
        .ino();
    assert_eq!(
        own, expected,
        "the child is not in the namespace made for it: refusing to start mDNS"
    );

    let network: NetworkId = env(NETWORK).parse().expect("network id");
    let peer: DeviceId = env(PEER).parse().expect("peer id");
    let peer_ip: IpAddr = env(PEER_IP).parse().expect("peer address");
    let mut config = NodeConfig::new(env(DIR));
    config.bind_addr = env(BIND).parse::<SocketAddr>().expect("bind address");
    config.relay = RelayConfig::Disabled;
    config.portmapper = false;
    assert!(config.mdns);
    let node = Node::open(config).await.expect("open the node");
    let mut events = node.events();
    assert_eq!(node.networks(), vec![network]);
    report(&format!("READY {}", node.device()));

    let stdin = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line
    });
    if role == "a" {
        run_a(&node, &mut events, network, peer, peer_ip).await;
    } else {
        run_b(&node, network).await;
    }
    let line = stdin.await.expect("stdin");
    assert!(
        line.trim() == "CLOSE" || line.is_empty(),
        "unexpected: {line}"
    );
    node.close().await.expect("close");
    report("CLOSED");
}

/// A: sees B on the link, is connected to it, and receives B's events.
async fn run_a(
    node: &Node,
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    network: NetworkId,
    peer: DeviceId,
    peer_ip: IpAddr,
) {
    let mut discovered = None;
    let mut connected = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while discovered.is_none() || connected.is_none() {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no discovery and connection of B after {WAIT:?}: {discovered:?} {connected:?}"
                )
            })
            .expect("node events");
        match event {
            NodeEvent::Discovered {
                peer: addr,
                networks,
            } if addr.device == peer => {
                assert_eq!(networks, vec![network], "B is a member of the network");
                assert!(
                    addr.direct.iter().any(|a| a.ip() == peer_ip),
                    "B's veth address was discovered: {addr}"
                );
                report(&format!("DISCOVERED {addr}"));
                discovered = Some(addr);
            }
            NodeEvent::Connected {
                network: n,
                peer: p,
                inbound,
            } if p == peer => {
                assert_eq!(n, network);
                // No `connect` is called here: an outbound connection is discovery's.
                if !inbound {
                    assert!(discovered.is_some(), "A dialed B only after discovering it");
                }
                let how = if inbound { "inbound" } else { "outbound" };
                report(&format!("CONNECTED {how}"));
                connected = Some(inbound);
            }
            e @ (NodeEvent::Refused { .. } | NodeEvent::ChangesRefused { .. }) => {
                panic!("unexpected refusal: {e:?}")
            }
            _ => {}
        }
    }
    node.record_event(network, produce("ana", "a-crate", 2))
        .expect("A writes");
    wait_until(node, network, "B's two events on A", |r| {
        r.ledger().resource(&Id::from("b-before")).is_some()
            && r.ledger().resource(&Id::from("b-after")).is_some()
    })
    .await;
    let peers = node.peers(network).expect("peers");
    assert!(
        peers.iter().any(|p| p.device == peer && p.connected),
        "{peers:?}"
    );
    report("RECEIVED");
}

/// B: records an event before meeting A, waits for A's event (A writes once connected), and
/// records another.
async fn run_b(node: &Node, network: NetworkId) {
    node.record_event(network, produce("bea", "b-before", 3))
        .expect("B writes before meeting A");
    wait_until(node, network, "A's event on B", |r| {
        r.ledger().resource(&Id::from("a-crate")).is_some()
    })
    .await;
    node.record_event(network, produce("bea", "b-after", 4))
        .expect("B writes after meeting A");
    report("SYNCED");
}
