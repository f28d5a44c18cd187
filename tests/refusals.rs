//! Who is refused, how, and that refusals and bad peers cost nobody else anything. Real
//! nodes over iroh on loopback (relays and address lookup disabled), real redb stores.
//!
//! - `stranger_and_removed_member_are_refused`: a device nobody admitted is refused with a
//!   clear, typed error on its side and an event and peer status on the refusing side; a
//!   member removed while connected is cut off and refused when it reconnects; meanwhile the
//!   remaining members keep syncing.
//! - `other_network_is_refused_at_the_handshake`: a node of another network dialing with its
//!   own network's ALPN fails the TLS handshake (no common ALPN) and gets a typed error; the
//!   refusing node keeps syncing.
//! - `an_old_protocol_version_is_refused_at_the_handshake`: a member's device speaking
//!   protocol version 4 (no catch-up by document, ALPN `reflow/4/<network>`), 3
//!   (change-by-change bootstrap) or 2 (schema-v1 software) fails the TLS handshake; the node emits `HandshakeFailed` and keeps
//!   syncing.
//! - `malformed_frames_close_only_that_connection`: a member speaking garbage (an oversized
//!   length prefix, an unknown frame type, an undecodable sync message) over a raw iroh
//!   connection is refused with `ProtocolViolation`; the node keeps syncing with others.

mod support;

use std::time::Instant;

use iroh::endpoint::{presets, ConnectionError, PortmapperConfig, RecvStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey, TransportAddr};
use reflow::node::NodeEvent;
use reflow::sync::{Frame, RefuseCode, MAX_FRAME_LEN};
use reflow::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stranger_and_removed_member_are_refused() {
    let started = Instant::now();
    let (da, db, dc, ds) = (tempdir(), tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let c = open(dc.path()).await;
    let stranger = open(ds.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bob");
    admit(&a, network, c.device(), "cy");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    within("C joins", c.join(network, &a.addr()))
        .await
        .expect("C joins");

    // A stranger tries to join through A.
    let mut a_events = a.events();
    let mut s_events = stranger.events();
    let err = within("the stranger's join", stranger.join(network, &a.addr()))
        .await
        .expect_err("a stranger is refused");
    match &err {
        NetError::Refused { peer, code, reason } => {
            assert_eq!(*peer, a.device());
            assert_eq!(*code, RefuseCode::NotAMember);
            assert!(reason.contains("not a member"), "{reason}");
            assert!(reason.contains(&stranger.device().to_string()), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(stranger.networks().is_empty(), "nothing was stored");
    wait_event(&mut a_events, "A's refusal event", |e| {
        matches!(e, NodeEvent::Refused { peer, by_us: true, code: RefuseCode::NotAMember, .. } if *peer == stranger.device())
    })
    .await;
    wait_event(
        &mut s_events,
        "the stranger's refusal event",
        |e| matches!(e, NodeEvent::Refused { peer, by_us: false, .. } if *peer == a.device()),
    )
    .await;
    let status = a
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == stranger.device())
        .expect("the refused stranger is listed");
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not a member")),
        "{status:?}"
    );

    // The members keep syncing.
    let e = a
        .record_event(network, produce("ana", "after-stranger", 1))
        .expect("write");
    wait_until(&b, network, "A's event on B", |r| has_event(r, &e)).await;
    wait_until(&c, network, "A's event on C", |r| has_event(r, &e)).await;

    // A removes B while B is connected: B is cut off.
    let mut b_events = b.events();
    a.remove_member(network, b.device()).expect("remove B");
    wait_event(&mut b_events, "B's refusal", |e| {
        matches!(e, NodeEvent::Refused { peer, by_us: false, code: RefuseCode::NotAMember, .. } if *peer == a.device())
    })
    .await;
    wait_event(
        &mut b_events,
        "B's disconnection",
        |e| matches!(e, NodeEvent::Disconnected { peer, .. } if *peer == a.device()),
    )
    .await;
    let err = within("B reconnects", b.connect(network, &a.addr()))
        .await
        .expect_err("a removed member is refused");
    assert!(
        matches!(
            err,
            NetError::Refused {
                code: RefuseCode::NotAMember,
                ..
            }
        ),
        "{err:?}"
    );
    // C learns of the removal and keeps syncing with A.
    let after = a
        .record_event(network, produce("ana", "after-removal", 1))
        .expect("write");
    wait_until(&c, network, "A's event on C", |r| has_event(r, &after)).await;
    assert!(c
        .read(network, |r| r.member(&b.device()).is_none())
        .expect("read"));
    converge(&[&a, &c], network).await;

    for n in [a, b, c, stranger] {
        n.close().await.expect("close");
    }
    eprintln!(
        "stranger_and_removed_member_are_refused: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_network_is_refused_at_the_handshake() {
    let started = Instant::now();
    let (da, db, dx) = (tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let x = open(dx.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bob");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");

    // X has its own network and believes A is in it.
    let other = create_network(&x);
    admit(&x, other, a.device(), "a");
    let mut a_events = a.events();
    let err = within("X dials A", x.connect(other, &a.addr()))
        .await
        .expect_err("A does not serve X's network");
    match &err {
        NetError::NetworkNotServed {
            peer,
            network: n,
            version,
        } => {
            assert_eq!(*peer, a.device());
            assert_eq!(*n, other);
            assert_eq!(*version, reflow::sync::PROTOCOL_VERSION);
        }
        other => panic!("expected a handshake refusal, got {other:?}"),
    }
    wait_event(&mut a_events, "A's handshake failure", |e| {
        matches!(e, NodeEvent::HandshakeFailed { .. })
    })
    .await;
    // Joining A's network as X (not admitted) is refused by membership, not by ALPN.
    let err = within("X joins A's network", x.join(network, &a.addr()))
        .await
        .expect_err("X is not a member");
    assert!(
        matches!(
            err,
            NetError::Refused {
                code: RefuseCode::NotAMember,
                ..
            }
        ),
        "{err:?}"
    );

    // A keeps syncing with B.
    let e = a
        .record_event(network, produce("ana", "still-here", 1))
        .expect("write");
    wait_until(&b, network, "A's event on B", |r| has_event(r, &e)).await;
    converge(&[&a, &b], network).await;
    for n in [a, b, x] {
        n.close().await.expect("close");
    }
    eprintln!(
        "other_network_is_refused_at_the_handshake: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_protocol_version_is_refused_at_the_handshake() {
    let (da, db) = (tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bob");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    // An old build of a member's device: its key is admitted, its protocol is version 4
    // (a Document frame only for a joiner), 3 (per-change bootstrap, no Document frame) or 2.
    let old = DeviceKey::generate().expect("key");
    admit(&a, network, old.id(), "old");
    let ep = raw_endpoint(&old).await;
    let current = reflow::net::alpn(&network);
    assert!(current.starts_with(b"reflow/5/"), "{current:?}");
    for version in [b'4', b'3', b'2'] {
        let mut previous = current.clone();
        previous[7] = version;
        let mut a_events = a.events();
        // The server's TLS alert (no application protocol, 120) ends the handshake: the
        // connection never opens, so no Refuse frame can be sent.
        let err = within(
            "an old dial",
            ep.connect(endpoint_addr(&a.addr()), &previous),
        )
        .await
        .expect_err("an old version's dial is refused at the handshake");
        let text = err.to_string();
        assert!(text.contains("120"), "{text}");
        wait_event(&mut a_events, "A's handshake failure", |e| {
            matches!(e, NodeEvent::HandshakeFailed { .. })
        })
        .await;
    }
    // A keeps syncing with B.
    let e = a
        .record_event(network, produce("ana", "after-old", 1))
        .expect("write");
    wait_until(&b, network, "A's event on B", |r| has_event(r, &e)).await;
    ep.close().await;
    for n in [a, b] {
        n.close().await.expect("close");
    }
}

/// A raw iroh endpoint with `key` (a member's key), on loopback only.
async fn raw_endpoint(key: &DeviceKey) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key.secret_bytes()))
        .relay_mode(RelayMode::Disabled)
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .expect("loopback address")
        .bind()
        .await
        .expect("bind a raw endpoint")
}

fn endpoint_addr(addr: &PeerAddr) -> EndpointAddr {
    let id = EndpointId::from_bytes(addr.device.as_bytes()).expect("endpoint id");
    EndpointAddr::from_parts(id, addr.direct.iter().copied().map(TransportAddr::Ip))
}

/// The opening frame of a device that has nothing: an Automerge sync message with no heads.
fn opening() -> Vec<u8> {
    let message = automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: vec![automerge::sync::Have::default()],
        changes: automerge::sync::ChunkList::empty(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    Frame::Sync {
        seq: 1,
        message: message.encode(),
        changes: Vec::new(),
    }
    .encode()
}

/// Read frames until a refusal; returns its code.
async fn read_until_refusal(recv: &mut RecvStream) -> RefuseCode {
    loop {
        let mut prefix = [0u8; 4];
        recv.read_exact(&mut prefix)
            .await
            .expect("a frame or the refusal before the close");
        let len = Frame::read_len(prefix).expect("a frame within the limit");
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.expect("frame body");
        if let Frame::Refuse { code, .. } = Frame::decode(&body).expect("a valid frame") {
            return code;
        }
    }
}

fn closed_with(e: &ConnectionError) -> Option<u64> {
    match e {
        ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_frames_close_only_that_connection() {
    let started = Instant::now();
    let (da, db) = (tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let network = create_network(&a);
    admit(&a, network, b.device(), "bob");
    within("B joins", b.join(network, &a.addr()))
        .await
        .expect("B joins");
    let rogue = DeviceKey::generate().expect("key");
    admit(&a, network, rogue.id(), "rogue");
    let ep = raw_endpoint(&rogue).await;
    let alpn = reflow::net::alpn(&network);
    let violation = u64::from(RefuseCode::ProtocolViolation.to_u16());
    let mut a_events = a.events();

    // 1. An oversized length prefix as the very first frame.
    let conn = within("dial", ep.connect(endpoint_addr(&a.addr()), &alpn))
        .await
        .expect("the rogue is a member: the handshake succeeds");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    let too_long = u32::try_from(MAX_FRAME_LEN + 1).expect("fits");
    send.write_all(&too_long.to_be_bytes())
        .await
        .expect("write prefix");
    // A may refuse on the prefix alone, before these bytes are written: then the write fails
    // with A's close, which is checked below either way.
    if let Err(e) = send.write_all(&[0u8; 64]).await {
        assert!(
            matches!(&e, iroh::endpoint::WriteError::ConnectionLost(c) if closed_with(c) == Some(violation)),
            "{e:?}"
        );
    }
    let closed = within("A closes the rogue connection", conn.closed()).await;
    assert_eq!(closed_with(&closed), Some(violation), "{closed:?}");
    wait_event(&mut a_events, "A's protocol-violation event", |e| {
        matches!(e, NodeEvent::Refused { peer, by_us: true, code: RefuseCode::ProtocolViolation, .. } if *peer == rogue.id())
    })
    .await;

    // 2. A valid opening, then a frame of an unknown type: a Refuse frame, then the close.
    let conn = within("dial", ep.connect(endpoint_addr(&a.addr()), &alpn))
        .await
        .expect("dial again");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&opening()).await.expect("opening");
    send.write_all(&[0, 0, 0, 2, reflow::sync::PROTOCOL_VERSION, 0x7f])
        .await
        .expect("unknown frame type");
    let code = within("the refusal", read_until_refusal(&mut recv)).await;
    assert_eq!(code, RefuseCode::ProtocolViolation);
    let closed = within("the close", conn.closed()).await;
    assert!(closed_with(&closed).is_some(), "{closed:?}");

    // 3. A valid opening, then a sync frame whose message does not decode.
    let conn = within("dial", ep.connect(endpoint_addr(&a.addr()), &alpn))
        .await
        .expect("dial again");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&opening()).await.expect("opening");
    let bad = Frame::Sync {
        seq: 2,
        message: vec![0x42, 1, 2, 3],
        changes: Vec::new(),
    };
    send.write_all(&bad.encode()).await.expect("bad sync frame");
    let code = within("the refusal", read_until_refusal(&mut recv)).await;
    assert_eq!(code, RefuseCode::ProtocolViolation);
    let status = a
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == rogue.id())
        .expect("the rogue is listed");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("protocol")),
        "{status:?}"
    );

    // A went on syncing with B all along.
    let e = a
        .record_event(network, produce("ana", "unbothered", 1))
        .expect("write");
    wait_until(&b, network, "A's event on B", |r| has_event(r, &e)).await;
    let from_b = b
        .record_event(network, produce("bob", "also", 1))
        .expect("write");
    wait_until(&a, network, "B's event on A", |r| has_event(r, &from_b)).await;
    assert!(a
        .peers(network)
        .expect("peers")
        .iter()
        .any(|p| p.device == b.device() && p.connected));
    ep.close().await;
    for n in [a, b] {
        n.close().await.expect("close");
    }
    eprintln!(
        "malformed_frames_close_only_that_connection: {:?}",
        started.elapsed()
    );
}
