//! The address book and automatic reconnection, with real nodes over iroh on loopback
//! (relays and address lookup disabled) and real redb stores.
//!
//! - `address_book_survives_restarts_and_redials_with_backoff`: B (automatic reconnection on)
//!   joins A's network, so A's address is in B's store. B closes and reopens from the same
//!   data directory and, told nothing, dials A again and catches up with what A wrote while
//!   it was down. Then A goes away: B schedules retries with growing, jittered delays
//!   (`NodeEvent::RetryScheduled`, each checked against the backoff formula) and lists the
//!   next retry in `Node::peers`; A comes back from its data directory on the port it had
//!   (the node reuses its last port), and B's next retry connects; they converge. A itself
//!   never redials (reconnection off), so every connection here is B's doing.

mod support;

use std::time::{Duration, Instant};

use reflow::node::{Backoff, NodeEvent};
use reflow::*;
use support::*;

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_millis(800),
};

/// B's configuration: loopback, automatic reconnection with [`BACKOFF`], and a short
/// connect timeout (a dial to a node that is down fails after it).
fn redialing(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::loopback(dir);
    config.reconnect = Some(BACKOFF);
    config.connect_timeout = Duration::from_secs(1);
    config
}

/// The bounds of the delay of retry `attempt` (1, 2, …) after a lost connection: the base
/// `min(max, initial × 2^(attempt-1))`, times a jitter factor in [0.5, 1).
fn delay_bounds(attempt: u32) -> (Duration, Duration) {
    let base = BACKOFF
        .initial
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(BACKOFF.max);
    (base / 2, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn address_book_survives_restarts_and_redials_with_backoff() {
    let started = Instant::now();
    let (da, db) = (tempdir(), tempdir());
    let a = open(da.path()).await;
    let network = create_network(&a);
    record_history(&a, network, "ana", "apples", 30);
    let b = Node::open(redialing(db.path())).await.expect("open B");
    admit(&a, network, b.device(), "bob");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    converge(&[&a, &b], network).await;
    let a_addr = a.addr();
    let known = b
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == a.device())
        .expect("A is a peer of B");
    assert_eq!(known.addr.as_ref(), Some(&a_addr), "B's address book has A");

    // B restarts; A writes while B is down.
    b.close().await.expect("close B");
    let mut a_events = a.events();
    let while_down = a
        .record_event(network, produce("ana", "while-b-down", 1))
        .expect("A writes");
    let b = Node::open(redialing(db.path())).await.expect("reopen B");
    wait_event(
        &mut a_events,
        "B redials A on its own",
        |e| matches!(e, NodeEvent::Connected { peer, inbound: true, .. } if *peer == b.device()),
    )
    .await;
    wait_until(&b, network, "A's event on B after B's restart", |r| {
        has_event(r, &while_down)
    })
    .await;
    converge(&[&a, &b], network).await;

    // A goes away: B retries with backoff.
    let mut b_events = b.events();
    a.close().await.expect("close A");
    wait_event(
        &mut b_events,
        "B loses A",
        |e| matches!(e, NodeEvent::Disconnected { peer, .. } if *peer == a_addr.device),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = wait_event(&mut b_events, "B schedules a retry", |e| {
            matches!(e, NodeEvent::RetryScheduled { .. })
        })
        .await;
        let NodeEvent::RetryScheduled {
            network: n,
            peer,
            attempt,
            after,
        } = event
        else {
            unreachable!()
        };
        assert_eq!((n, peer), (network, a_addr.device));
        let (lo, hi) = delay_bounds(attempt);
        assert!(
            lo <= after && after <= hi,
            "retry {attempt} after {after:?}, not in [{lo:?}, {hi:?}]"
        );
        seen.push((attempt, after));
    }
    let attempts: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert!(
        attempts.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive attempts: {seen:?}"
    );
    let status = b
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == a_addr.device)
        .expect("A is listed");
    assert!(!status.connected, "{status:?}");
    assert!(status.retries >= 1, "{status:?}");
    assert_eq!(status.addr.as_ref(), Some(&a_addr), "{status:?}");
    let from_b = b
        .record_event(network, produce("bob", "while-a-down", 1))
        .expect("B writes");

    // A comes back from its data directory, on the port it had.
    let a = open(da.path()).await;
    assert_eq!(a.device(), a_addr.device);
    assert_eq!(a.addr(), a_addr, "A is back on the address B knows");
    let mut a_events = a.events();
    if !a
        .peers(network)
        .expect("peers")
        .iter()
        .any(|p| p.device == b.device() && p.connected)
    {
        wait_event(&mut a_events, "B's retry reaches A", |e| {
            matches!(e, NodeEvent::Connected { peer, inbound: true, .. } if *peer == b.device())
        })
        .await;
    }
    wait_until(&a, network, "B's event on A after A's return", |r| {
        has_event(r, &from_b)
    })
    .await;
    converge(&[&a, &b], network).await;
    let status = b
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == a_addr.device)
        .expect("A is listed");
    assert!(status.connected, "{status:?}");
    assert_eq!(status.next_retry, None, "{status:?}");

    a.close().await.expect("close A");
    b.close().await.expect("close B");
    eprintln!(
        "address_book_survives_restarts_and_redials_with_backoff: {:?} (retries seen: {seen:?})",
        started.elapsed()
    );
}
