//! Fuzz harnesses: one function per decoder that a peer's or a file's bytes reach. The
//! coverage-guided targets in `fuzz/` (cargo fuzz, libFuzzer) call them, and so do the stable
//! regression tests (`engine/tests/fuzz_corpus.rs`), which replay the kept corpus and every
//! crash ever found. Each harness panics only when an invariant breaks: bad input must give
//! a typed error, never a panic, and what decodes must round-trip.
//!
//! Checksums (Automerge's change chunks, tickets) are recomputed over the fuzzer's bytes, so
//! that mutations reach the parsers behind them instead of all stopping at the checksum.
//!
//! Not a stable API: for the fuzz targets and tests only.

use std::sync::OnceLock;

use automerge::Change;
use sha2::{Digest, Sha256};

use crate::identity::{DeviceKey, SignedChange};
use crate::membership::Role;
use crate::replica::Replica;
use crate::store::fault::FaultyDisk;
use crate::store::Store;
use crate::sync::{Frame, FrameError, MAX_REDEEM_LEN};
use crate::vf::{Agent, Unit};
use crate::NetworkId;

/// The sync protocol's frame decoder: [`Frame::split`], [`Frame::decode`] and the stranger's
/// [`Frame::decode_limited`]. A frame that decodes re-encodes to a frame that decodes to the
/// same bytes.
pub fn frame(data: &[u8]) {
    if let Ok(Some((frame, used))) = Frame::split(data) {
        assert!(used <= data.len());
        round_trip(&frame);
    }
    match Frame::decode(data) {
        Ok(frame) => round_trip(&frame),
        Err(e) => drop(e.to_string()),
    }
    if let Ok(frame) = Frame::decode_limited(data, MAX_REDEEM_LEN) {
        round_trip(&frame);
    }
}

fn round_trip(frame: &Frame) {
    let encoded = frame.encode();
    let again = match Frame::split(&encoded) {
        Ok(Some((f, n))) if n == encoded.len() => f,
        Ok(other) => panic!("a decoded frame does not re-split: {other:?}"),
        Err(FrameError::TooLong { .. }) => return,
        Err(e) => panic!("a decoded frame re-encodes to a bad frame: {e}"),
    };
    assert_eq!(again.encode(), encoded, "encoding is not stable");
}

/// The ticket parser: binary ([`crate::node::Ticket::from_bytes`], checksum fixed up) and
/// text (`FromStr`). A ticket that parses round-trips.
#[cfg(feature = "net")]
pub fn ticket(data: &[u8]) {
    use crate::node::Ticket;
    const CHECKSUM_LEN: usize = 4;
    let _ = Ticket::from_bytes(data);
    if data.len() > CHECKSUM_LEN {
        let mut fixed = data.to_vec();
        let body_len = fixed.len() - CHECKSUM_LEN;
        let sum = Sha256::digest(&fixed[..body_len]);
        fixed[body_len..].copy_from_slice(&sum[..CHECKSUM_LEN]);
        if let Ok(t) = Ticket::from_bytes(&fixed) {
            assert_eq!(Ticket::from_bytes(&t.to_bytes()).ok(), Some(t.clone()));
            let text = t.to_string();
            assert_eq!(text.parse::<Ticket>().ok(), Some(t));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = text.parse::<Ticket>() {
            assert_eq!(t.to_string().parse::<Ticket>().ok(), Some(t));
        }
    }
}

/// Automerge's chunk magic bytes.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// `data` as an Automerge change chunk with a correct checksum (magic bytes put in front,
/// the checksum over the rest recomputed), if it is long enough.
pub fn with_chunk_checksum(data: &[u8]) -> Vec<u8> {
    let mut raw = data.to_vec();
    if raw.len() >= 9 {
        raw[..4].copy_from_slice(&CHUNK_MAGIC);
        let sum = Sha256::digest(&raw[8..]);
        raw[4..8].copy_from_slice(&sum[..4]);
    }
    raw
}

/// A network with an admin and a member, built once: what [`receive`] feeds changes to.
struct Fixture {
    admin: DeviceKey,
    history: Vec<SignedChange>,
    member: DeviceKey,
    network: NetworkId,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let admin_key = DeviceKey::from_secret_bytes(&[1; 32]);
        let member = DeviceKey::from_secret_bytes(&[2; 32]);
        let (mut admin, _) =
            Replica::create_network("fuzz", admin_key, Agent::person("ana", "Ana"))
                .expect("fixture network");
        admin
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                l.create(Agent::person("bo", "Bo"))
            })
            .expect("fixture objects");
        admin
            .add_member(member.id(), Role::Member, "bo".into())
            .expect("fixture member");
        let network = admin.network();
        Fixture {
            admin: admin.key().clone(),
            history: admin.signed_changes_since(&[]),
            member,
            network,
        }
    })
}

/// [`Replica::receive`] fed arbitrary change bytes, signed by a member (so that they get past
/// the signature check to admission and the views): whatever the bytes, the replica gives a
/// receipt or a typed error, and its views stay equal to a fresh fold of its ledger.
pub fn receive(data: &[u8]) {
    let f = fixture();
    let raw = with_chunk_checksum(data);
    let Ok(change) = Change::from_bytes(raw) else {
        return;
    };
    let signature = f.member.sign_change(&f.network, &change.hash());
    let Ok((mut replica, _)) = Replica::join(f.network, f.admin.clone(), f.history.clone()) else {
        panic!("the fixture's history does not join");
    };
    let before = replica.ledger().heads();
    match replica.receive(vec![SignedChange { change, signature }]) {
        Ok(receipt) => {
            assert!(receipt.applied.len() + receipt.refused.len() + receipt.waiting <= 1);
            if receipt.applied.is_empty() {
                assert_eq!(
                    replica.ledger().heads(),
                    before,
                    "a refused change moved the heads"
                );
            }
        }
        Err(e) => drop(e.to_string()),
    }
    assert_eq!(
        replica.ledger().snapshot(),
        replica.ledger().snapshot_from_scratch(),
        "views differ from a fresh fold"
    );
}

/// A store holding the fixture's network, built once; each input opens a copy.
fn template() -> &'static (FaultyDisk, NetworkId, DeviceKey) {
    static TEMPLATE: OnceLock<(FaultyDisk, NetworkId, DeviceKey)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let disk = FaultyDisk::new(0);
        let d = disk.clone();
        let store = Store::open_backend("fuzz-template", move || d.backend()).expect("store");
        let key = DeviceKey::from_secret_bytes(&[3; 32]);
        let (mut replica, mut signed) =
            Replica::create_network("fuzz", key.clone(), Agent::person("ana", "Ana"))
                .expect("network");
        let (_, more) = replica
            .write(|l| l.create(Unit::new("kg", "kilogram", "kg")))
            .expect("unit");
        signed.extend(more);
        let network = replica.network();
        let mut durable = store.create_replica(replica, &signed).expect("stored");
        durable.compact().expect("snapshot");
        durable
            .write(|l| l.create(Agent::person("bo", "Bo")))
            .expect("tail change");
        (disk, network, key)
    })
}

/// The store's record decoders, through the store's own read path: `data[0]` picks a row
/// (snapshot, change, signature, quarantine, device key), the rest is its value, written
/// into a copy of a valid store; opening the store and the replica gives the replica or a
/// typed error, never a panic.
pub fn store_rows(data: &[u8]) {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    let (template, network, key) = template();
    let disk = template.copy();
    let d = disk.clone();
    let Ok(store) = Store::open_backend("fuzz-copy", move || d.backend()) else {
        panic!("a copy of a valid store does not open");
    };
    let row = match which % 5 {
        0 => crate::store::RawRow::Snapshot,
        1 => crate::store::RawRow::Change,
        2 => crate::store::RawRow::Signature,
        3 => crate::store::RawRow::Quarantine,
        _ => crate::store::RawRow::DeviceKey,
    };
    let hash: [u8; 32] = Sha256::digest(value).into();
    store
        .put_raw_row(row, &network.to_string(), &hash, value)
        .expect("write a row");
    match store.open_replica(network, key.clone()) {
        Ok(r) => assert_eq!(
            r.ledger().snapshot(),
            r.ledger().snapshot_from_scratch(),
            "views differ from a fresh fold"
        ),
        Err(e) => drop(e.to_string()),
    }
    let _ = store.stats(&network.to_string());
    let _ = store.device_key();
}
