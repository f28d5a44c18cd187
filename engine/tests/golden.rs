//! Golden files of every versioned format (docs/reliability.md, "Golden files"): small files
//! written once by the code of their version and committed in `tests/golden/`; these tests
//! check that today's code still reads each one and finds what was written.
//!
//! - `v2-network.json`, `v2-ledger.automerge`: a schema-v2 network (signed changes) and the
//!   admin's saved document;
//! - `v3-frames.bin`: sync protocol version 3 frames, length-prefixed as on a QUIC stream
//!   (Sync, a compressed Push, Refuse, Redeem);
//! - `v3-store.redb`: a store of version 3 holding the network's replica (migrated to 4 on
//!   open);
//! - `v4-store.redb`: a store of version 4 holding the admin's replica after member `cy`
//!   forked its history: `cy` is cut off, with its proof in the `reflow_cut_off` table;
//! - `v4-frames.bin`: sync protocol version 4's Document frame: the admin's saved document of
//!   the v2 network and its attestations, as a bootstrap sends them;
//! - `v5-store.redb`: a store of version 5 holding member `bo`'s replica joined from that
//!   document: every change but the attested ones has a 32-byte row naming the attested
//!   change that covers it;
//! - `v1-ticket.txt`: a ticket (binary version 1, `reflow1` text);
//! - `v1-trace-bundle.json`: a trace bundle of format version 1 (ids relative to
//!   `"@base": "urn:reflow:"`);
//! - `v2-trace-bundle.json`: a trace bundle of format version 2 (absolute IRIs, no `@base`),
//!   of the same trace.
//!
//! (Schema v1 has its own golden files, read by `tests/admission.rs`.)
//!
//! Regenerate (only for a new format version, never to make a test pass; the files of older
//! versions stay, with a reader or a migration):
//!
//! ```text
//! REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_files
//! ```
//!
//! Test keys only: admin `ana` secret = 32 bytes of 0x07, member `bo` = 32 bytes of 0x08,
//! the ticket's invitee = 32 bytes of 0x09, member `cy` = 32 bytes of 0x0b.
//!
//! The v4 store alone (from the committed `v2-network.json`, leaving the other files as they
//! are):
//!
//! ```text
//! REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_v4_store
//! ```
//!
//! The v4 frames and the v5 store (the same way; they refuse to overwrite):
//!
//! ```text
//! REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_v5_store
//! ```
//!
//! The v2 trace bundle alone (the same way):
//!
//! ```text
//! REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_v2_trace_bundle
//! ```

#![cfg(feature = "net")]

mod support;

use support::{golden, read_network};

use reflow::interop::bundle;
use reflow::node::Ticket;
use reflow::sync::frame::RefuseCode;
use reflow::{
    Action, Agent, DeviceKey, EconomicEvent, Frame, Id, Ledger, NetworkId, PeerAddr, Process,
    Quantity, Replica, ResourceDescription, Role, SignedChange, Store, Unit,
};

fn key(byte: u8) -> DeviceKey {
    DeviceKey::from_secret_bytes(&[byte; 32])
}

/// What every golden file of the v2 network holds.
const NETWORK_NAME: &str = "golden market";
const INVITE_EXPIRES: u64 = 4_102_444_800; // 2100-01-01

fn v2_network() -> (NetworkId, Vec<SignedChange>) {
    read_network("v2-network.json")
}

fn quantity(text: &str) -> Quantity {
    text.parse().expect("quantity")
}

/// The expected content of the v2 network, checked on any replica of it.
fn check_content(r: &Replica) {
    let l = r.ledger();
    assert_eq!(l.network_name(), NETWORK_NAME);
    let events = l.events(&Default::default());
    let actions: Vec<Action> = events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [Action::Produce, Action::Consume, Action::Produce],
        "{events:?}"
    );
    assert_eq!(
        events[0].has_point_in_time.as_deref(),
        Some("2026-11-02T09:00:00Z")
    );
    let wool = l.resource(&Id::from("wool")).expect("wool");
    assert_eq!(wool.onhand_quantity.has_numerical_value, quantity("6"));
    let yarn = l.resource(&Id::from("yarn")).expect("yarn");
    assert_eq!(yarn.onhand_quantity.has_numerical_value, quantity("3.5"));
    assert_eq!(yarn.onhand_quantity.has_unit, Id::from("kg"));
    assert_eq!(yarn.custodian, Some(Id::from("bo")));
    let members = r.members();
    let bo = members
        .iter()
        .find(|m| m.device == key(8).id())
        .expect("bo is a member");
    assert_eq!((bo.role, bo.agent.as_str()), (Role::Member, "bo"));
    assert_eq!(bo.added_by, key(7).id());
    let p = r.provenance(&events[2].id).expect("provenance");
    assert_eq!(p.device, key(8).id());
}

#[test]
fn golden_v2_network_and_ledger_read() {
    let (network, changes) = v2_network();
    let n = changes.len();
    let (replica, receipt) = Replica::join(network, key(0x0a), changes).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!((receipt.applied.len(), receipt.waiting), (n, 0));
    check_content(&replica);
    // The saved document (Automerge's format) loads to the same heads and the same views.
    let bytes = std::fs::read(golden("v2-ledger.automerge")).expect("golden file");
    let saved = Ledger::load(&bytes, key(0x0a).session_actor().expect("actor")).expect("load");
    assert_eq!(saved.heads(), replica.ledger().heads());
    assert_eq!(saved.snapshot(), replica.ledger().snapshot());
}

#[test]
fn golden_v3_frames_read() {
    let (network, changes) = v2_network();
    let bytes = std::fs::read(golden("v3-frames.bin")).expect("golden file");
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (frame, used) = Frame::split(&bytes[at..])
            .expect("a valid frame")
            .expect("a whole frame");
        frames.push(frame);
        at += used;
    }
    assert_eq!(frames.len(), 4);
    let hashes = |c: &[SignedChange]| c.iter().map(SignedChange::hash).collect::<Vec<_>>();
    match &frames[0] {
        Frame::Sync {
            seq,
            message,
            changes: carried,
        } => {
            assert_eq!(*seq, 1);
            assert!(!message.is_empty());
            assert_eq!(hashes(carried), hashes(&changes[..2]));
            assert_eq!(carried[1].signature, changes[1].signature);
        }
        other => panic!("frame 0: {other:?}"),
    }
    match &frames[1] {
        Frame::Push { changes: carried } => assert_eq!(hashes(carried), hashes(&changes)),
        other => panic!("frame 1: {other:?}"),
    }
    // The Push frame was written compressed (its body is over the compression threshold).
    let first_len = u32::from_be_bytes(bytes[..4].try_into().expect("4")) as usize;
    let second = 4 + first_len;
    let push_len = u32::from_be_bytes(bytes[second..second + 4].try_into().expect("4")) as usize;
    let raw: usize = changes.iter().map(|c| c.change.raw_bytes().len()).sum();
    assert!(
        push_len < raw,
        "push frame of {push_len} bytes for {raw} bytes of changes"
    );
    match &frames[2] {
        Frame::Refuse { code, reason } => {
            assert_eq!(*code, RefuseCode::NotAMember);
            assert_eq!(reason, "golden: not a member");
        }
        other => panic!("frame 2: {other:?}"),
    }
    match &frames[3] {
        Frame::Redeem {
            invite,
            secret,
            agent,
        } => {
            assert_eq!(invite.network, network);
            assert_eq!(invite.issuer, key(7).id());
            assert_eq!(invite.role, Role::Member);
            assert_eq!(invite.expires_at, INVITE_EXPIRES);
            invite.verify_signature().expect("the invite's signature");
            assert!(secret.is_some());
            assert_eq!(agent.as_ref().map(|a| a.id.as_str()), Some("cy"));
        }
        other => panic!("frame 3: {other:?}"),
    }
}

#[test]
fn golden_v3_store_opens() {
    let (network, changes) = v2_network();
    // Opening may write (a migration, the lock): work on a copy.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    std::fs::copy(golden("v3-store.redb"), &path).expect("copy");
    let store = Store::open(&path).expect("open the golden store");
    assert_eq!(
        store.networks().expect("networks"),
        vec![network.to_string()]
    );
    assert_eq!(store.device_key().expect("key").id(), key(7).id());
    let durable = store.open_replica(&network, key(7)).expect("replica");
    check_content(durable.replica());
    let want: Vec<_> = changes.iter().map(SignedChange::hash).collect();
    let mut have: Vec<_> = durable
        .replica()
        .signed_changes_since(&[])
        .iter()
        .map(SignedChange::hash)
        .collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    have.sort();
    assert_eq!(
        have, want_sorted,
        "every change is stored with its signature"
    );
}

/// The v4 store: the v2 network's content, and `cy` cut off for a fork, read from the
/// `reflow_cut_off` table even when the quarantine rows of the fork are gone.
#[test]
fn golden_v4_store_opens_with_its_cut_off() {
    let (network, _) = v2_network();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    std::fs::copy(golden("v4-store.redb"), &path).expect("copy");
    let check = |store: &Store| {
        let durable = store.open_replica(&network, key(7)).expect("replica");
        check_content(durable.replica());
        let cut: Vec<_> = durable.replica().cut_offs().cloned().collect();
        assert_eq!(cut.len(), 1, "{cut:?}");
        let c = &cut[0];
        assert_eq!(c.device, key(0x0b).id());
        assert!(
            matches!(&c.reason, reflow::Rejection::Forked { device, .. } if *device == c.device),
            "{:?}",
            c.reason
        );
        assert_eq!(c.changes.len(), 2, "both twins are stored");
        for t in &c.changes {
            assert!(c.twins.contains(&t.hash()));
            assert_eq!(
                reflow::DeviceId::of_actor(t.change.actor_id()),
                Some(c.device)
            );
            assert!(!durable.ledger().has_change(&t.hash()));
        }
        durable
            .replica()
            .quarantine()
            .map(|q| q.change.hash())
            .collect::<Vec<_>>()
    };
    let store = Store::open(&path).expect("open the golden store");
    let quarantined = check(&store);
    assert!(
        !quarantined.is_empty(),
        "the fork's refusals are quarantined"
    );
    // The cut-off is the table's, not the quarantine's: without readable quarantine rows it
    // stands.
    for h in &quarantined {
        store
            .put_raw_row(
                reflow::store::RawRow::Quarantine,
                &network.to_string(),
                &h.0,
                b"gone",
            )
            .expect("damage");
    }
    assert!(check(&store).is_empty());
}

#[test]
fn golden_v1_ticket_reads() {
    let (network, _) = v2_network();
    let text = std::fs::read_to_string(golden("v1-ticket.txt")).expect("golden file");
    let ticket: Ticket = text.trim().parse().expect("ticket");
    assert_eq!(ticket.network, network);
    assert_eq!(ticket.network_name, NETWORK_NAME);
    assert_eq!(ticket.inviter.device, key(7).id());
    assert_eq!(
        ticket.inviter.direct,
        vec!["127.0.0.1:4433".parse().expect("addr")]
    );
    assert_eq!(ticket.invite.expires_at, INVITE_EXPIRES);
    assert_eq!(ticket.invite.role, Role::Member);
    ticket.invite.verify_signature().expect("signature");
    assert!(ticket.secret.is_none(), "a device invite carries no secret");
    // And the text is what this code writes for the same ticket.
    assert_eq!(ticket.to_string(), text.trim());
}

#[test]
fn golden_v1_trace_bundle_verifies() {
    let bytes = std::fs::read(golden("v1-trace-bundle.json")).expect("golden file");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["formatVersion"], 1);
    assert_eq!(v["trace"]["@context"]["@base"], "urn:reflow:");
    check_golden_bundle(&bytes);
}

#[test]
fn golden_v2_trace_bundle_verifies() {
    let bytes = std::fs::read(golden("v2-trace-bundle.json")).expect("golden file");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["formatVersion"], 2);
    assert!(v["trace"]["@context"].get("@base").is_none());
    for n in v["trace"]["@graph"].as_array().expect("graph") {
        let id = n["@id"].as_str().expect("@id");
        assert!(id.starts_with("urn:reflow:"), "{id}");
        assert_eq!(n["resourceQuantity"]["hasUnit"], "urn:reflow:kg");
    }
    check_golden_bundle(&bytes);
    // And this code writes the same bundle from the committed network.
    assert_eq!(v2_bundle(), bytes);
}

/// The v2 bundle of the yarn's trace, as this code writes it from `v2-network.json`.
fn v2_bundle() -> Vec<u8> {
    let (network, changes) = v2_network();
    let (admin, receipt) = Replica::join(network, key(7), changes).expect("replica");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    bundle::export(&admin, &Id::from("yarn")).expect("bundle")
}

/// What both golden bundles hold: the yarn's trace, signed by bo, tamper-evident.
fn check_golden_bundle(bytes: &[u8]) {
    let (network, _) = v2_network();
    let t = bundle::verify(bytes).expect("the golden bundle verifies");
    assert_eq!(t.network, network);
    assert_eq!(t.creator, key(7).id());
    assert_eq!(t.resource, Id::from("yarn"));
    let events: Vec<(Action, String)> = t
        .events
        .iter()
        .map(|e| {
            (
                e.event.action,
                e.event
                    .resource_quantity
                    .as_ref()
                    .map(|q| q.has_numerical_value.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (Action::Produce, "3.5".to_string()),
            (Action::Consume, "4".to_string()),
            (Action::Produce, "10".to_string()),
        ]
    );
    assert!(t.events.iter().all(|e| e.device == key(8).id()));
    // Tampering with the golden bundle is still refused, by name.
    let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
    v["trace"]["@graph"][1]["resourceQuantity"]["hasNumericalValue"] = serde_json::json!("40");
    match bundle::verify(&serde_json::to_vec(&v).expect("json")) {
        Err(bundle::BundleError::EventField { field, .. }) => {
            assert_eq!(field, "resourceQuantity.hasNumericalValue")
        }
        other => panic!("{other:?}"),
    }
}

/// Writes every golden file of the current versions (see the module documentation).
#[test]
#[ignore = "writes tests/golden: REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_files"]
fn write_golden_files() {
    assert_eq!(
        std::env::var("REFLOW_WRITE_GOLDEN").as_deref(),
        Ok("1"),
        "set REFLOW_WRITE_GOLDEN=1 to overwrite the golden files"
    );
    assert_eq!(
        reflow::SCHEMA_VERSION,
        2,
        "name the files for the new version"
    );
    assert_eq!(
        reflow::store::STORE_VERSION,
        4,
        "name the files for the new version"
    );
    let (mut admin, mut changes) =
        Replica::create_network(NETWORK_NAME, key(7), Agent::person("ana", "Ana")).expect("create");
    let (_, more) = admin
        .write(|l| {
            l.create(Agent::person("bo", "Bo"))?;
            l.create(Unit::new("kg", "kilogram", "kg"))
        })
        .expect("write");
    changes.extend(more);
    changes.extend(
        admin
            .add_member(key(8).id(), Role::Member, Id::from("bo"))
            .expect("add"),
    );
    let (mut bo, _) = Replica::join(admin.network(), key(8), changes.clone()).expect("join");
    let (_, more) = bo
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Produce, "bo", "bo")
                    .quantity(10, "kg")
                    .at_time("2026-11-02T09:00:00Z")
                    .creating(ResourceDescription::new("wool", "Wool")),
            )?;
            l.create(Process::new("spin", "Spinning", None))?;
            l.record_event(
                EconomicEvent::new(Action::Consume, "bo", "bo")
                    .resource("wool")
                    .quantity(4, "kg")
                    .input_of("spin"),
            )?;
            l.record_event(
                EconomicEvent::new(Action::Produce, "bo", "bo")
                    .quantity(quantity("3.5"), "kg")
                    .output_of("spin")
                    .creating(ResourceDescription::new("yarn", "Yarn")),
            )
        })
        .expect("spin");
    let receipt = admin.receive(more.clone()).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    changes.extend(more);
    check_content(&admin);

    let network = admin.network();
    let json = serde_json::json!({
        "about": "Reflow ledger schema v2 golden file, written by engine/tests/golden.rs (write_golden_files). Test keys only: admin ana = 32 bytes of 0x07, member bo = 32 bytes of 0x08.",
        "network": network.to_string(),
        "changes": changes.iter().map(|c| serde_json::json!({
            "change": hex::encode(c.change.raw_bytes()),
            "signature": hex::encode(c.signature.0),
        })).collect::<Vec<_>>(),
    });
    let write = |name: &str, bytes: &[u8]| std::fs::write(golden(name), bytes).expect("write");
    write(
        "v2-network.json",
        format!("{}\n", serde_json::to_string_pretty(&json).expect("json")).as_bytes(),
    );
    write("v2-ledger.automerge", &admin.ledger().save());

    // Frames.
    let (invite, secret) = admin
        .invite_bearer(Role::Member, None, INVITE_EXPIRES)
        .expect("invite");
    // A real sync message of the admin's document, its changes taken out (as sessions send).
    let message = {
        use automerge::sync::SyncDoc;
        let doc = automerge::Automerge::load(&admin.ledger().save()).expect("doc");
        let mut state = automerge::sync::State::new();
        let mut m = doc.generate_sync_message(&mut state).expect("message");
        m.changes = automerge::sync::ChunkList::empty();
        m.encode()
    };
    let mut frames = Vec::new();
    frames.extend(
        Frame::Sync {
            seq: 1,
            message,
            changes: changes[..2].to_vec(),
        }
        .encode(),
    );
    frames.extend(
        Frame::Push {
            changes: changes.clone(),
        }
        .encode(),
    );
    frames.extend(Frame::refuse(RefuseCode::NotAMember, "golden: not a member").encode());
    frames.extend(
        Frame::Redeem {
            invite,
            secret: Some(secret),
            agent: Some(Agent::person("cy", "Cy")),
        }
        .encode(),
    );
    write("v3-frames.bin", &frames);

    // A ticket for a device.
    let invite = admin
        .invite_device(key(9).id(), Role::Member, None, INVITE_EXPIRES)
        .expect("invite");
    let mut inviter = PeerAddr::new(key(7).id());
    inviter.direct.push("127.0.0.1:4433".parse().expect("addr"));
    let ticket = Ticket {
        network,
        network_name: NETWORK_NAME.into(),
        invite,
        secret: None,
        inviter,
    };
    write("v1-ticket.txt", format!("{ticket}\n").as_bytes());

    // The trace bundle of the yarn.
    assert_eq!(
        bundle::FORMAT_VERSION,
        2,
        "name the bundle file for the new version"
    );
    write(
        "v2-trace-bundle.json",
        &bundle::export(&admin, &Id::from("yarn")).expect("bundle"),
    );

    // A store holding the admin's replica (the v3 store stays, as its version wrote it).
    write_v4_store(network, &changes);
}

/// Writes `v4-store.redb` alone, from the committed v2 network (see the module
/// documentation).
#[test]
#[ignore = "writes tests/golden/v4-store.redb: REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_v4_store"]
fn write_golden_v4_store() {
    assert_eq!(
        std::env::var("REFLOW_WRITE_GOLDEN").as_deref(),
        Ok("1"),
        "set REFLOW_WRITE_GOLDEN=1 to overwrite the golden files"
    );
    assert_eq!(
        reflow::store::STORE_VERSION,
        4,
        "name the file for the new version"
    );
    let (network, changes) = v2_network();
    write_v4_store(network, &changes);
}

/// Writes `v2-trace-bundle.json` alone, from the committed v2 network (see the module
/// documentation); refuses to overwrite it.
#[test]
#[ignore = "writes tests/golden/v2-trace-bundle.json: REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_v2_trace_bundle"]
fn write_golden_v2_trace_bundle() {
    assert_eq!(
        std::env::var("REFLOW_WRITE_GOLDEN").as_deref(),
        Ok("1"),
        "set REFLOW_WRITE_GOLDEN=1 to write the golden file"
    );
    assert_eq!(
        bundle::FORMAT_VERSION,
        2,
        "name the file for the new version"
    );
    let path = golden("v2-trace-bundle.json");
    assert!(
        !path.exists(),
        "{} exists: a golden file is never rewritten",
        path.display()
    );
    std::fs::write(&path, v2_bundle()).expect("write");
}

/// A store of this version holding the admin's replica of `changes` in which member `cy`
/// (key 0x0b) forked: two changes of two sessions, neither knowing the other (compacted, so
/// the file stays small).
fn write_v4_store(network: NetworkId, changes: &[SignedChange]) {
    let path = golden("v4-store.redb");
    let _ = std::fs::remove_file(&path);
    let store = Store::open(&path).expect("store");
    store
        .put_node_meta("device_key", key(7).secret_bytes().as_slice())
        .expect("key");
    let (mut admin, _) = Replica::join(network, key(7), changes.to_vec()).expect("replica");
    let mut history = changes.to_vec();
    let (_, more) = admin
        .write(|l| l.create(Agent::person("cy", "Cy")))
        .expect("cy's agent");
    history.extend(more);
    history.extend(
        admin
            .add_member(key(0x0b).id(), Role::Member, Id::from("cy"))
            .expect("add cy"),
    );
    let mut durable = store.create_replica(admin, &history).expect("create");
    let fork = |unit: &str| {
        let (mut cy, _) = Replica::join(network, key(0x0b), history.clone()).expect("cy joins");
        let unit = Unit::new(unit, unit, unit);
        cy.write(|l| l.create(unit)).expect("cy writes").1
    };
    let (a, b) = (fork("g"), fork("lb"));
    let receipt = durable.receive(a).expect("a");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    let receipt = durable.receive(b).expect("b");
    assert_eq!(receipt.cut_off, vec![key(0x0b).id()], "{receipt:?}");
    durable.compact().expect("compact");
}

/// The v2 network's admin replica and its bootstrap document (Document frames as a session
/// sends them to a joiner, length-prefixed).
fn v4_document_frames() -> Vec<u8> {
    let (network, changes) = v2_network();
    let (admin, _) = Replica::join(network, key(7), changes).expect("admin");
    let (doc, attestations) = admin.bootstrap_document().expect("a document");
    Frame::Document {
        total: doc.len() as u64,
        offset: 0,
        bytes: doc,
        attestations,
    }
    .encode()
}

/// The document of `v4-frames.bin`, read back: its bytes and attestations.
fn read_v4_document() -> (Vec<u8>, Vec<reflow::Attestation>) {
    let bytes = std::fs::read(golden("v4-frames.bin")).expect("golden file");
    let (frame, used) = Frame::split(&bytes)
        .expect("a valid frame")
        .expect("a whole frame");
    assert_eq!(used, bytes.len(), "one frame");
    match frame {
        Frame::Document {
            total,
            offset,
            bytes,
            attestations,
        } => {
            assert_eq!((offset, total), (0, bytes.len() as u64));
            (bytes, attestations)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn golden_v4_document_frame_reads_and_joins() {
    let (network, changes) = v2_network();
    let (doc, attestations) = read_v4_document();
    // The v2 network was written by two devices, one session each: two attestations.
    assert_eq!(attestations.len(), 2, "{attestations:?}");
    let (r, receipt) = Replica::join_document(network, key(8), &doc, &attestations).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(receipt.applied.len(), changes.len());
    check_content(&r);
    // Today's code writes the same frame, but for its version byte: version 5 kept version
    // 4's layout (it only sends the frame to far-behind peers too).
    let mut old = std::fs::read(golden("v4-frames.bin")).expect("golden file");
    let today = v4_document_frames();
    assert_eq!((old[4], today[4]), (4, reflow::sync::PROTOCOL_VERSION));
    old[4] = reflow::sync::PROTOCOL_VERSION;
    assert_eq!(today, old);
}

/// The v5 store: `bo`'s replica joined from the v4 document, with 32-byte rows.
#[test]
fn golden_v5_store_opens_with_attested_rows() {
    let (network, changes) = v2_network();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    std::fs::copy(golden("v5-store.redb"), &path).expect("copy");
    let store = Store::open(&path).expect("open the golden store");
    assert_eq!(store.device_key().expect("key").id(), key(8).id());
    let durable = store.open_replica(&network, key(8)).expect("replica");
    let r = durable.replica();
    check_content(r);
    let (_, attestations) = read_v4_document();
    for c in &changes {
        let h = c.hash();
        if attestations.iter().any(|a| a.hash == h) {
            assert_eq!(r.signature(&h), Some(c.signature), "{h}");
            assert_eq!(r.attested_by(&h), None);
        } else {
            assert_eq!(r.signature(&h), None, "{h}");
            let by = r.attested_by(&h).expect("covered");
            assert!(attestations.iter().any(|a| a.hash == by));
        }
    }
    // It serves the same bootstrap in turn.
    let (_, again) = r.bootstrap_document().expect("a document");
    assert_eq!(again, attestations);
}

/// Writes `v4-frames.bin` and `v5-store.redb` from the committed v2 network; refuses to
/// overwrite either.
#[test]
#[ignore = "writes tests/golden/v4-frames.bin and v5-store.redb: REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --test golden -- --ignored write_golden_v5_store"]
fn write_golden_v5_store() {
    assert_eq!(
        std::env::var("REFLOW_WRITE_GOLDEN").as_deref(),
        Ok("1"),
        "set REFLOW_WRITE_GOLDEN=1 to write the golden files"
    );
    assert_eq!(
        reflow::store::STORE_VERSION,
        5,
        "name the file for the new version"
    );
    assert_eq!(
        reflow::sync::PROTOCOL_VERSION,
        4,
        "name the file for the new version"
    );
    let (frames, store_path) = (golden("v4-frames.bin"), golden("v5-store.redb"));
    for p in [&frames, &store_path] {
        assert!(
            !p.exists(),
            "{} exists: a golden file is never rewritten",
            p.display()
        );
    }
    std::fs::write(&frames, v4_document_frames()).expect("write");
    let (network, _) = v2_network();
    let (doc, attestations) = read_v4_document();
    let store = Store::open(&store_path).expect("store");
    store
        .put_node_meta("device_key", key(8).secret_bytes().as_slice())
        .expect("key");
    let (bo, receipt) = Replica::join_document(network, key(8), &doc, &attestations).expect("join");
    store.create_replica(bo, &receipt.applied).expect("create");
}
