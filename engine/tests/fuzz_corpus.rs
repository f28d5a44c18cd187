//! The fuzz targets' corpus and every crash they found, replayed on the stable toolchain in
//! the normal `cargo test` (issue 13, item 6). The coverage-guided targets (fuzz/, cargo
//! fuzz) call the same harnesses, [`reflow::fuzzing`]; what they find is minimized into
//! `fuzz/corpus/<target>/`, and a crash, once fixed, is kept in `fuzz/regressions/<target>/`.
//!
//! `write_seed_corpus` (ignored) writes the seeds the corpus started from: real frames,
//! tickets, changes and store rows.

use std::fs;
use std::path::{Path, PathBuf};

use reflow::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Feed every kept input of `target` to `harness`; returns how many there were.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).expect("read a corpus file");
            let run = std::panic::catch_unwind(|| harness(&data));
            assert!(run.is_ok(), "{target}: {} fails", file.display());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target} in {}", fuzz_dir().display());
    n
}

#[test]
fn frame_corpus() {
    replay("frame", fuzzing::frame);
}

#[cfg(feature = "net")]
#[test]
fn ticket_corpus() {
    replay("ticket", fuzzing::ticket);
}

#[test]
fn store_rows_corpus() {
    replay("store_rows", fuzzing::store_rows);
}

#[test]
fn receive_corpus() {
    replay("receive", fuzzing::receive);
}

#[test]
fn the_receive_harness_reaches_past_the_checksum() {
    // A real change with its checksum wiped: the harness puts it back, so fuzzed bytes reach
    // Automerge's parser and the replica instead of all failing the checksum.
    let key = reflow::DeviceKey::from_secret_bytes(&[5; 32]);
    let (replica, signed) =
        reflow::Replica::create_network("x", key, reflow::Agent::person("ana", "Ana"))
            .expect("network");
    drop(replica);
    let mut raw = signed[0].change.raw_bytes().to_vec();
    raw[..8].fill(0);
    let fixed = fuzzing::with_chunk_checksum(&raw);
    assert_eq!(fixed, signed[0].change.raw_bytes());
}

/// Write the seed inputs (real encodings) into fuzz/corpus/<target>/seed-*.
#[test]
#[ignore = "writes fuzz/corpus seeds; run by hand when the encodings change"]
fn write_seed_corpus() {
    use reflow::{Action, Agent, EconomicEvent, Frame, ResourceDescription, Unit};
    let key = reflow::DeviceKey::from_secret_bytes(&[5; 32]);
    let (mut replica, mut signed) =
        reflow::Replica::create_network("seed", key, Agent::person("ana", "Ana")).expect("net");
    let (_, more) = replica
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.record_event(
                EconomicEvent::new(Action::Produce, "ana", "ana")
                    .quantity(3, "kg")
                    .creating(ResourceDescription::new("apples", "Apples")),
            )
        })
        .expect("write");
    signed.extend(more);
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("corpus dir");
        fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    };
    let body = |f: &Frame| f.encode()[4..].to_vec();
    put(
        "frame",
        "push",
        &body(&Frame::Push {
            changes: signed.clone(),
        }),
    );
    put(
        "frame",
        "refuse",
        &body(&Frame::refuse(reflow::sync::RefuseCode::NotAMember, "no")),
    );
    put(
        "frame",
        "whole-push",
        &Frame::Push {
            changes: signed.clone(),
        }
        .encode(),
    );
    for (i, c) in signed.iter().enumerate() {
        put("receive", &format!("change-{i}"), c.change.raw_bytes());
        let mut row = vec![1u8];
        row.extend_from_slice(c.change.raw_bytes());
        put("store_rows", &format!("change-{i}"), &row);
    }
    let mut snap = vec![0u8, 1, 1, 0, 0, 0];
    snap.extend_from_slice(&signed[0].hash().0);
    snap.extend_from_slice(&replica.ledger().save());
    put("store_rows", "snapshot", &snap);
    let mut sig = vec![2u8];
    sig.extend_from_slice(&signed[0].signature.0);
    put("store_rows", "signature", &sig);
    put("store_rows", "device-key", &[4u8; 33]);
    // Ticket seeds: fuzz/corpus/ticket/ (an issued ticket needs a node; see tests/tickets.rs).
}
