//! The raw Automerge baseline: the same document (Reflow's saved bytes, schema v2 shape), in
//! memory, with no model, signatures, admission, views or store.

use std::time::Instant;

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ReadDoc};
use serde_json::{json, Value};

/// One event to write: its bucket key, its key in the bucket and its JSON text.
pub type EventLine = (String, String, String);

/// Read the harness's events file (`bucket<TAB>key<TAB>json` per line).
pub fn read_events(path: &std::path::Path) -> Vec<EventLine> {
    std::fs::read_to_string(path)
        .expect("events file")
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, '\t');
            Some((p.next()?.into(), p.next()?.into(), p.next()?.into()))
        })
        .collect()
}

/// The object id of event bucket `bucket` in `doc`.
fn bucket(doc: &Automerge, bucket: &str) -> ObjId {
    let Ok(Some((_, set))) = doc.get(automerge::ROOT, "eventBuckets") else {
        panic!("not a schema-v2 document: no eventBuckets");
    };
    match doc.get(&set, bucket) {
        Ok(Some((_, b))) => b,
        _ => panic!("no bucket {bucket}"),
    }
}

/// Write `events` into `doc`, one change each (`suffix` appended to every key).
fn write(doc: &mut Automerge, events: &[EventLine], suffix: &str) {
    let mut buckets = std::collections::HashMap::new();
    for (b, key, text) in events {
        let obj = buckets
            .entry(b.clone())
            .or_insert_with(|| bucket(doc, b))
            .clone();
        let mut tx = doc.transaction();
        tx.put(&obj, format!("{key}{suffix}"), text.as_str())
            .expect("put");
        tx.commit();
    }
}

/// Record: the events into the genesis document, one change each, then `save()`.
pub fn record(genesis: &[u8], events: &[EventLine]) -> Value {
    let t0 = Instant::now();
    let mut doc = Automerge::load(genesis).expect("load genesis");
    write(&mut doc, events, "");
    let in_memory = t0.elapsed().as_secs_f64();
    let saved = doc.save();
    json!({ "s": t0.elapsed().as_secs_f64(), "in_memory_s": in_memory, "saved_bytes": saved.len() })
}

/// Open: `Automerge::load` of the saved document.
pub fn open(saved: &[u8]) -> Value {
    let t0 = Instant::now();
    let doc = Automerge::load(saved).expect("load");
    let s = t0.elapsed().as_secs_f64();
    assert!(!doc.get_heads().is_empty());
    json!({ "s": s })
}

/// Pass sync messages between `a` and `b` until neither has anything to say: (bytes,
/// messages). Messages are encoded and decoded, as on a wire.
fn sync_pair(
    a: &mut Automerge,
    sa: &mut State,
    b: &mut Automerge,
    sb: &mut State,
) -> (usize, usize) {
    let (mut bytes, mut messages) = (0, 0);
    loop {
        let mut moved = false;
        if let Some(m) = a.generate_sync_message(sa) {
            let wire = m.encode();
            bytes += wire.len();
            messages += 1;
            b.receive_sync_message(sb, Message::decode(&wire).expect("decode"))
                .expect("receive");
            moved = true;
        }
        if let Some(m) = b.generate_sync_message(sb) {
            let wire = m.encode();
            bytes += wire.len();
            messages += 1;
            a.receive_sync_message(sa, Message::decode(&wire).expect("decode"))
                .expect("receive");
            moved = true;
        }
        if !moved {
            return (bytes, messages);
        }
    }
}

/// Join (`prefix` empty) or catch-up: an in-memory sync of `saved` to a document holding
/// `prefix` (Automerge's default protocol: to an empty peer, the whole compressed document).
pub fn sync(saved: &[u8], prefix: Option<&[u8]>) -> Value {
    let mut a = Automerge::load(saved).expect("load");
    let mut b = match prefix {
        Some(p) => Automerge::load(p).expect("load prefix"),
        None => Automerge::new(),
    };
    let (mut sa, mut sb) = (State::new(), State::new());
    let t0 = Instant::now();
    let (bytes, messages) = sync_pair(&mut a, &mut sa, &mut b, &mut sb);
    let s = t0.elapsed().as_secs_f64();
    assert_eq!(a.get_heads(), b.get_heads(), "the raw sync converged");
    json!({ "s": s, "bytes": bytes, "messages": messages })
}

/// Live: `nodes` documents in memory, in a line or a full mesh, synced; each event written on
/// document 0 and passed on by sync messages, link by link, until every document has it
/// (line: hop by hop, in order; mesh: document 0 to every other directly). Latency of each
/// event to the last document.
pub fn live(saved: &[u8], events: &[EventLine], nodes: usize, mesh: bool, warmup: usize) -> Value {
    let mut docs: Vec<Automerge> = (0..nodes)
        .map(|_| Automerge::load(saved).expect("load"))
        .collect();
    let links: Vec<(usize, usize)> = if mesh {
        (0..nodes)
            .flat_map(|j| (0..j).map(move |i| (i, j)))
            .collect()
    } else {
        (1..nodes).map(|j| (j - 1, j)).collect()
    };
    let mut states: Vec<(State, State)> =
        links.iter().map(|_| (State::new(), State::new())).collect();
    let run_links = |docs: &mut Vec<Automerge>, states: &mut Vec<(State, State)>| {
        let mut bytes = 0;
        for (k, &(i, j)) in links.iter().enumerate() {
            let (left, right) = docs.split_at_mut(j);
            let (sa, sb) = &mut states[k];
            bytes += sync_pair(&mut left[i], sa, &mut right[0], sb).0;
        }
        bytes
    };
    run_links(&mut docs, &mut states);
    let mut lat = Vec::new();
    let mut bytes = 0;
    for (k, e) in events.iter().enumerate() {
        let t0 = Instant::now();
        write(&mut docs[0], std::slice::from_ref(e), "-live");
        let b = run_links(&mut docs, &mut states);
        let s = t0.elapsed().as_secs_f64();
        let heads = docs[0].get_heads();
        assert!(
            docs.iter().all(|d| d.get_heads() == heads),
            "live event reached every document"
        );
        if k >= warmup {
            lat.push(s);
            bytes += b;
        }
    }
    let n = lat.len().max(1);
    json!({ "lat": lat, "bytes_per_event": bytes as f64 / n as f64 })
}

/// Conflict merge: 4 copies of the document, each writes `k` events offline, then a full mesh
/// of sync sessions until all four are equal.
pub fn conflict_merge(saved: &[u8], events: &[EventLine], k: usize) -> Value {
    let mut docs: Vec<Automerge> = (0..4)
        .map(|_| Automerge::load(saved).expect("load"))
        .collect();
    for (i, d) in docs.iter_mut().enumerate() {
        write(d, &events[i * k..(i + 1) * k], &format!("-n{i}"));
    }
    let t0 = Instant::now();
    let mut bytes = 0;
    loop {
        let mut moved = 0;
        for j in 0..4 {
            for i in 0..j {
                let (left, right) = docs.split_at_mut(j);
                let (mut sa, mut sb) = (State::new(), State::new());
                let (b, m) = sync_pair(&mut left[i], &mut sa, &mut right[0], &mut sb);
                bytes += b;
                moved += m;
            }
        }
        let heads = docs[0].get_heads();
        if docs.iter().all(|d| d.get_heads() == heads) || moved == 0 {
            break;
        }
    }
    let s = t0.elapsed().as_secs_f64();
    let heads = docs[0].get_heads();
    assert!(docs.iter().all(|d| d.get_heads() == heads), "merged");
    json!({ "s": s, "bytes": bytes })
}
