//! Joining with tickets over real iroh endpoints on loopback (relays and address lookup
//! disabled), real redb stores in temporary directories.
//!
//! - `key_and_bearer_tickets_join`: a key invite (for one device) and a one-time bearer
//!   invite (for whoever holds the ticket) are turned into ticket text, read back, and
//!   redeemed by the admin's node; the newcomers get the history and keep syncing on the same
//!   connection. A second device presenting the used bearer ticket is refused with
//!   `InviteAlreadyRedeemed`: a typed error on its side, an event and a peer status on the
//!   admin's. Everyone keeps syncing afterwards and the refused device stores nothing.
//! - `bad_tickets_are_refused`: garbled ticket text (a changed character, cut, another prefix,
//!   too long) is a typed `TicketError` before any dial; an altered invite with a valid
//!   checksum, an expired invite, a wrong bearer secret and a key invite presented by another
//!   device are refused by the admin's node with their own codes on both sides. After each
//!   refusal the admin's node goes on syncing with its member, and the refused node is still
//!   usable: it finally joins with a good ticket.

mod support;

use std::time::{Duration, Instant};

use reflow::membership::BearerSecret;
use reflow::node::{Invitee, NodeEvent, Ticket, TicketError};
use reflow::sync::RefuseCode;
use reflow::*;
use support::*;

/// Long enough for any test, short enough to read.
const TTL: Duration = Duration::from_secs(3600);

/// What a person does with a ticket: copy its text, paste it elsewhere.
fn through_text(ticket: &Ticket) -> Ticket {
    let text = ticket.to_string();
    assert!(text.starts_with("reflow1"), "{text}");
    assert!(
        text.len() <= reflow::node::ticket::MAX_TICKET_LEN,
        "{}",
        text.len()
    );
    text.parse().expect("the ticket text reads back")
}

/// `who` tries `ticket` and is refused by `admin` with `code`: a typed error on its side,
/// a `Refused` event on both sides, the refusal in `admin`'s peer list, nothing stored.
async fn expect_refusal(
    admin: &Node,
    network: NetworkId,
    who: &Node,
    ticket: &Ticket,
    code: RefuseCode,
) {
    let mut admin_events = admin.events();
    let mut own_events = who.events();
    let err = within(
        "the refused join",
        who.join_with_ticket(ticket, Agent::person("dee", "Dee")),
    )
    .await
    .expect_err("the ticket is refused");
    match &err {
        NetError::InviteRefused {
            inviter,
            code: got,
            reason,
        } => {
            assert_eq!(*inviter, admin.device(), "{err}");
            assert_eq!(*got, code, "{err}");
            assert!(reason.contains(&ticket.invite.nonce), "{reason}");
        }
        other => panic!("expected InviteRefused({code}), got {other:?}"),
    }
    assert!(err.to_string().contains("refused the invite"), "{err}");
    assert!(
        who.networks().is_empty(),
        "nothing was stored on the refused node"
    );
    let event = wait_event(
        &mut admin_events,
        "the admin's refusal event",
        |e| matches!(e, NodeEvent::Refused { peer, by_us: true, .. } if *peer == who.device()),
    )
    .await;
    assert!(
        matches!(event, NodeEvent::Refused { code: c, .. } if c == code),
        "{event:?}"
    );
    let event = wait_event(
        &mut own_events,
        "the refused node's event",
        |e| matches!(e, NodeEvent::Refused { peer, by_us: false, .. } if *peer == admin.device()),
    )
    .await;
    assert!(
        matches!(event, NodeEvent::Refused { code: c, network: n, .. } if c == code && n == network),
        "{event:?}"
    );
    let status = admin
        .peers(network)
        .expect("peers")
        .into_iter()
        .find(|p| p.device == who.device())
        .expect("the refused device is listed by the admin");
    assert!(!status.connected, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&ticket.invite.nonce)),
        "{status:?}"
    );
    assert!(
        admin
            .read(network, |r| r.member(&who.device()).is_none())
            .expect("read"),
        "a refused device is not admitted"
    );
}

/// `admin` and `member` still sync both ways.
async fn still_syncing(
    admin: &Node,
    member: &Node,
    network: NetworkId,
    member_agent: &str,
    tag: &str,
) {
    let e = admin
        .record_event(network, produce("ana", &format!("from-admin-{tag}"), 1))
        .expect("the admin writes");
    wait_until(member, network, "the admin's event on the member", |r| {
        has_event(r, &e)
    })
    .await;
    let e = member
        .record_event(
            network,
            produce(member_agent, &format!("from-member-{tag}"), 1),
        )
        .expect("the member writes");
    wait_until(admin, network, "the member's event on the admin", |r| {
        has_event(r, &e)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_and_bearer_tickets_join() {
    let started = Instant::now();
    let (da, db, dc, dd) = (tempdir(), tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let c = open(dc.path()).await;
    let d = open(dd.path()).await;
    let network = create_network(&a);
    record_history(&a, network, "ana", "apples", 60);
    let mut a_events = a.events();

    // A key invite: for B's device only, B describes its Agent.
    let ticket = a
        .invite(
            network,
            Role::Member,
            None,
            TTL,
            Invitee::Device(b.device()),
        )
        .expect("key invite");
    assert!(ticket.secret.is_none(), "a key invite carries no secret");
    // The sizes docs/protocol.md §7.1 gives (one IPv4 address, no relay, "market").
    assert_eq!(
        (ticket.to_bytes().len(), ticket.to_string().len()),
        (251, 409)
    );
    let ticket = through_text(&ticket);
    let joined = within(
        "B joins with its ticket",
        b.join_with_ticket(&ticket, Agent::person("bob", "Bob")),
    )
    .await
    .expect("B's key invite is redeemed");
    assert_eq!(joined, network);
    let event = wait_event(&mut a_events, "A redeems B's invite", |e| {
        matches!(e, NodeEvent::InviteRedeemed { .. })
    })
    .await;
    assert_eq!(
        event,
        NodeEvent::InviteRedeemed {
            network,
            device: b.device(),
            role: Role::Member,
            nonce: ticket.invite.nonce.clone(),
        }
    );
    converge(&[&a, &b], network).await;
    assert_eq!(
        b.read(network, |r| r.role()).expect("read"),
        Some(Role::Member)
    );
    assert_eq!(
        b.read(network, |r| r
            .ledger()
            .events(&EventFilter::default())
            .len())
            .expect("read"),
        60,
        "the history arrived"
    );
    still_syncing(&a, &b, network, "bob", "after-key").await;

    // A one-time bearer invite: whoever holds the text, once.
    let bearer = a
        .invite(network, Role::Member, None, TTL, Invitee::Anyone)
        .expect("bearer invite");
    assert!(
        bearer.secret.is_some(),
        "a bearer invite carries its secret"
    );
    assert_eq!(
        (bearer.to_bytes().len(), bearer.to_string().len()),
        (285, 463)
    );
    let bearer = through_text(&bearer);
    within(
        "C joins with the bearer ticket",
        c.join_with_ticket(&bearer, Agent::person("cy", "Cy")),
    )
    .await
    .expect("the bearer invite is redeemed");
    wait_event(
        &mut a_events,
        "A redeems C's invite",
        |e| matches!(e, NodeEvent::InviteRedeemed { device, .. } if *device == c.device()),
    )
    .await;
    // B learns of C's admission through A.
    converge(&[&a, &b, &c], network).await;
    assert!(b
        .read(network, |r| r.member(&c.device()).is_some())
        .expect("read"));

    // D presents the same bearer ticket: refused, on both sides.
    expect_refusal(&a, network, &d, &bearer, RefuseCode::InviteAlreadyRedeemed).await;

    // Nobody else noticed: A, B and C keep syncing (C's change reaches B through A).
    still_syncing(&a, &b, network, "bob", "after-reuse").await;
    still_syncing(&a, &c, network, "cy", "after-reuse-c").await;
    let from_c = c
        .record_event(network, produce("cy", "hop", 1))
        .expect("C writes");
    wait_until(&b, network, "C's event on B", |r| has_event(r, &from_c)).await;
    converge(&[&a, &b, &c], network).await;
    assert!(d.networks().is_empty());

    for n in [a, b, c, d] {
        n.close().await.expect("close");
    }
    eprintln!("key_and_bearer_tickets_join: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tickets_are_refused() {
    let started = Instant::now();
    let (da, db, dd) = (tempdir(), tempdir(), tempdir());
    let a = open(da.path()).await;
    let b = open(db.path()).await;
    let d = open(dd.path()).await;
    let network = create_network(&a);
    let ticket = a
        .invite(
            network,
            Role::Member,
            None,
            TTL,
            Invitee::Device(b.device()),
        )
        .expect("key invite");
    within(
        "B joins",
        b.join_with_ticket(&ticket, Agent::person("bob", "Bob")),
    )
    .await
    .expect("B joins");
    converge(&[&a, &b], network).await;

    // Garbled text: typed errors, no dial.
    let good = a
        .invite(network, Role::Member, None, TTL, Invitee::Anyone)
        .expect("bearer invite");
    let text = good.to_string();
    let mid = text.len() / 2;
    let flipped = if &text[mid..=mid] == "a" { "b" } else { "a" };
    let garbled = format!("{}{flipped}{}", &text[..mid], &text[mid + 1..]);
    assert!(
        matches!(
            garbled.parse::<Ticket>(),
            Err(TicketError::Checksum | TicketError::Encoding(_) | TicketError::Malformed(_))
        ),
        "{:?}",
        garbled.parse::<Ticket>()
    );
    let cut = &text[..text.len() - 7];
    assert!(cut.parse::<Ticket>().is_err(), "a cut ticket does not read");
    assert_eq!(
        text.replacen("reflow1", "reflow2", 1).parse::<Ticket>(),
        Err(TicketError::MissingPrefix)
    );
    assert_eq!("hello".parse::<Ticket>(), Err(TicketError::MissingPrefix));
    let long = format!(
        "reflow1{}",
        "a".repeat(reflow::node::ticket::MAX_TICKET_LEN)
    );
    assert!(matches!(
        long.parse::<Ticket>(),
        Err(TicketError::TooLong(_))
    ));
    let err = "reflow1!!!".parse::<Ticket>().expect_err("not base32");
    assert!(matches!(err, TicketError::Encoding(_)), "{err:?}");
    assert!(!err.to_string().is_empty());

    // An altered invite with a valid checksum (the role raised to admin): its signature
    // does not verify.
    let mut altered = through_text(&good);
    altered.invite.role = Role::Admin;
    let altered = through_text(&altered);
    expect_refusal(&a, network, &d, &altered, RefuseCode::InviteInvalid).await;
    still_syncing(&a, &b, network, "bob", "after-altered").await;

    // A wrong bearer secret.
    let mut wrong_secret = good.clone();
    wrong_secret.secret = Some(BearerSecret([7; 32]));
    expect_refusal(
        &a,
        network,
        &d,
        &wrong_secret,
        RefuseCode::InviteWrongSecret,
    )
    .await;
    still_syncing(&a, &b, network, "bob", "after-secret").await;

    // An expired invite (a zero lifetime: expired by A's clock as soon as it is made).
    let expired = a
        .invite(network, Role::Member, None, Duration::ZERO, Invitee::Anyone)
        .expect("invite");
    expect_refusal(
        &a,
        network,
        &d,
        &through_text(&expired),
        RefuseCode::InviteExpired,
    )
    .await;
    still_syncing(&a, &b, network, "bob", "after-expired").await;

    // A key invite made for B's device, presented by D.
    let for_b = a
        .invite(
            network,
            Role::Member,
            None,
            TTL,
            Invitee::Device(b.device()),
        )
        .expect("invite");
    expect_refusal(&a, network, &d, &for_b, RefuseCode::InviteWrongDevice).await;
    still_syncing(&a, &b, network, "bob", "after-wrong-device").await;

    // The refused node is fine: the good ticket (never redeemed) still works for it.
    within(
        "D joins with the good ticket",
        d.join_with_ticket(&good, Agent::person("dee", "Dee")),
    )
    .await
    .expect("D joins");
    converge(&[&a, &b, &d], network).await;
    let from_d = d
        .record_event(network, produce("dee", "at-last", 1))
        .expect("D writes");
    wait_until(&b, network, "D's event on B", |r| has_event(r, &from_d)).await;
    assert!(a
        .read(network, |r| r.member(&d.device()).is_some())
        .expect("read"));

    for n in [a, b, d] {
        n.close().await.expect("close");
    }
    eprintln!("bad_tickets_are_refused: {:?}", started.elapsed());
}
