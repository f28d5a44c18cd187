//! Beyond one LAN (issue 13, item 8): two devices with no direct path between them meet
//! through a relay the network runs itself — an iroh relay server (the `iroh-relay` crate,
//! the one iroh's public relays run) started here on loopback over plain HTTP, as
//! iroh-relay's own tests do. Both nodes name it in their settings
//! (`RelayConfig::Custom`) and have no IP socket at all (`direct_paths: false`), so every
//! packet between them goes through the relay; the admin's ticket names the relay, and the
//! new member joins with that ticket and syncs both ways.
//!
//! Traffic stays on loopback: the relay binds 127.0.0.1, and nothing else is dialed.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use iroh_relay::server::{RelayConfig as RelayServerConfig, Server, ServerConfig};
use reflow::node::{Invitee, RelayConfig};
use reflow::*;
use support::*;

async fn relay_server() -> (Server, String) {
    let mut config = ServerConfig::default();
    config.relay = Some(RelayServerConfig::new((Ipv4Addr::LOCALHOST, 0)));
    let server = Server::spawn(config)
        .await
        .expect("relay server on loopback");
    let addr = server.http_addr().expect("the relay listens on HTTP");
    assert!(addr.ip().is_loopback(), "{addr}");
    (server, format!("http://{addr}"))
}

async fn relayed_node(dir: &std::path::Path, relay: &str) -> Node {
    let config = NodeConfig {
        relay: RelayConfig::Custom(vec![relay.to_owned()]),
        direct_paths: false,
        ..NodeConfig::loopback(dir)
    };
    let node = Node::open(config).await.expect("open a relay-only node");
    let addr = node.addr();
    assert!(addr.direct.is_empty(), "no direct path: {addr}");
    assert!(
        addr.relays.iter().all(|r| r.starts_with(relay)),
        "only the network's relay: {addr}"
    );
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_without_direct_paths_sync_through_the_networks_relay() {
    let (server, url) = relay_server().await;
    let (da, db) = (tempdir(), tempdir());
    let a = relayed_node(da.path(), &url).await;
    let b = relayed_node(db.path(), &url).await;
    let network = create_network(&a);
    a.write(network, |l| l.create(Agent::person("bo", "Bo")))
        .expect("agent");
    let e1 = a
        .record_event(network, produce("ana", "apples", 5))
        .expect("record");

    let ticket = a
        .invite(
            network,
            Role::Member,
            Some(Id::from("bo")),
            Duration::from_secs(600),
            Invitee::Device(b.device()),
        )
        .expect("ticket");
    assert!(ticket.inviter.direct.is_empty(), "{:?}", ticket.inviter);
    assert!(
        ticket.inviter.relays.iter().any(|r| r.starts_with(&url)),
        "the ticket names the network's relay: {:?}",
        ticket.inviter
    );
    let ticket: reflow::node::Ticket = ticket.to_string().parse().expect("ticket text");
    let joined = within(
        "join through the relay",
        b.join_with_ticket(&ticket, Agent::person("bo", "Bo")),
    )
    .await
    .expect("join");
    assert_eq!(joined, network);
    wait_until(&b, network, "the admin's event", |r| has_event(r, &e1)).await;

    // And back: the member's event reaches the admin through the relay.
    let e2 = b
        .record_event(network, produce("bo", "pears", 2))
        .expect("member records");
    wait_until(&a, network, "the member's event", |r| has_event(r, &e2)).await;
    converge(&[&a, &b], network).await;

    // Every path between them is the relay's.
    for peer in a.peers(network).expect("peers") {
        if let Some(addr) = peer.addr {
            assert!(addr.direct.is_empty(), "a direct path appeared: {addr}");
        }
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
    server.shutdown().await.expect("relay shutdown");
}
