//! Admission: attacks by a member holding its own valid key, judged by what the change does.
//!
//! Each attack is a change built with Automerge directly on a copy of the member's replica,
//! signed with the member's own key, so that the signature and membership checks pass: only
//! admission stands between it and the ledger. All attacks are mixed into honest traffic and
//! delivered to four replicas in three orders and batchings. Checked: identical heads,
//! quarantine (hash and reason kind), members and views on every replica; every honest change
//! applied everywhere; each attack refused with the expected reason; every replica's document
//! saves and loads again with the same views. docs/security.md lists each attack with this
//! test. Equivocation and strong removal, whose verdicts depend on concurrent changes, are
//! in tests/removal.rs.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ObjId, ReadDoc, ScalarValue, ROOT};
use reflow::*;

fn key() -> DeviceKey {
    DeviceKey::generate().expect("OS randomness")
}

fn produce(resource: &str, agent: &str) -> NewEvent {
    EconomicEvent::new(Action::Produce, agent, agent)
        .quantity(1, "kg")
        .creating(ResourceDescription::new(resource, resource))
}

/// The network: `ana`'s admin device and `bo`'s member device, with a little honest history.
struct Setup {
    admin: Replica,
    bo: Replica,
    bo_key: DeviceKey,
    history: Vec<SignedChange>,
}

fn setup() -> Setup {
    let admin_key = key();
    let bo_key = key();
    let (mut admin, mut history) =
        Replica::create_network("market", admin_key, Agent::person("ana", "Ana")).expect("create");
    let (_, c) = admin
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Agent::organization("cafe", "Repair Café"))?;
            l.create(AgentRelationshipRole {
                id: Id::from("volunteer"),
                role_label: "is volunteer of".into(),
                inverse_role_label: Some("has volunteer".into()),
                note: None,
                other_properties: Default::default(),
            })?;
            l.create(Agent::person("bo", "Bo"))
        })
        .expect("setup");
    history.extend(c);
    history.extend(
        admin
            .add_member(bo_key.id(), Role::Member, Id::from("bo"))
            .expect("add bo"),
    );
    let (_, c) = admin
        .write(|l| l.record_event(produce("apples", "ana")))
        .expect("apples");
    history.extend(c);
    // ana's offer and commitment: planning objects only ana's devices (or an admin) edit.
    let (_, c) = admin
        .write(|l| {
            l.create(Intent {
                id: Id::from("ana-offer"),
                ..Intent::offer(Action::Transfer, "ana")
            })?;
            l.create(Commitment {
                id: Id::from("ana-delivers"),
                ..Commitment::new(Action::Transfer, "ana", "bo")
            })
        })
        .expect("planning");
    history.extend(c);
    let (mut bo, receipt) =
        Replica::join(admin.network(), bo_key.clone(), history.clone()).expect("join");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    // bo's own commitment to ana.
    let (_, c) = bo
        .write(|l| {
            l.create(Commitment {
                id: Id::from("bo-delivers"),
                ..Commitment::new(Action::Transfer, "bo", "ana")
            })
        })
        .expect("bo commits");
    admin.receive(c.clone()).expect("admin learns it");
    history.extend(c);
    Setup {
        admin,
        bo,
        bo_key,
        history,
    }
}

/// An Automerge copy of `r`'s document writing as `key`'s device with session `suffix`.
fn raw(r: &Replica, key: &DeviceKey, suffix: u8) -> Automerge {
    Automerge::load(&r.ledger().save())
        .expect("load")
        .with_actor(key.id().actor([suffix; 8]))
}

fn sign(network: NetworkId, key: &DeviceKey, doc: &Automerge) -> SignedChange {
    let change = doc.get_last_local_change().expect("a change");
    let signature = key.sign_change(&network, &change.hash());
    SignedChange { change, signature }
}

fn bucket(doc: &Automerge, set: &str, i: usize) -> ObjId {
    let (_, buckets) = doc.get(ROOT, set).expect("get").expect("bucket set");
    let (_, b) = doc
        .get(&buckets, format!("{i:02x}"))
        .expect("get")
        .expect("bucket");
    b
}

/// The (bucket, key) of the first event stored in `doc`.
fn some_event(doc: &Automerge) -> (ObjId, String) {
    for i in 0..256 {
        let b = bucket(doc, "eventBuckets", i);
        if let Some(item) = doc.map_range(&b, ..).next() {
            return (b, item.key.to_string());
        }
    }
    panic!("no event");
}

fn event_json(provider: &str, receiver: &str) -> String {
    let e = EconomicEvent::new(Action::Produce, provider, receiver)
        .resource("apples")
        .quantity(2, "kg");
    serde_json::to_string(&e).expect("json")
}

/// Which refusal an attack must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Schema,
    TooLarge,
    SpeaksForOthers,
    NotYourAgent,
    NotYourRelationship,
    AdminsOnly,
    NotYourObject,
    Equivocation,
    NotAnAdmin,
    DependsOnRefused,
}

fn kind(r: &Rejection) -> Option<Expect> {
    Some(match r {
        Rejection::Schema { .. } => Expect::Schema,
        Rejection::TooLarge { .. } => Expect::TooLarge,
        Rejection::SpeaksForOthers { .. } => Expect::SpeaksForOthers,
        Rejection::NotYourAgent { .. } => Expect::NotYourAgent,
        Rejection::NotYourRelationship { .. } => Expect::NotYourRelationship,
        Rejection::AdminsOnly { .. } => Expect::AdminsOnly,
        Rejection::NotYourObject { .. } => Expect::NotYourObject,
        Rejection::Equivocation { .. } => Expect::Equivocation,
        Rejection::NotAnAdmin { .. } => Expect::NotAnAdmin,
        Rejection::DependsOnRefused { .. } => Expect::DependsOnRefused,
        _ => return None,
    })
}

/// Build every attack on `bo`'s current state. Each uses its own session suffix (its own
/// actor) except the equivocation pair.
fn attacks(s: &Setup) -> Vec<(&'static str, SignedChange, Expect)> {
    let net = s.admin.network();
    let k = &s.bo_key;
    let mut out = Vec::new();
    let mut suffix = 10u8;
    let mut attack =
        |name: &'static str,
         expect: Expect,
         f: &dyn Fn(&mut automerge::transaction::Transaction<'_>, &Automerge)| {
            suffix += 1;
            let mut doc = raw(&s.bo, k, suffix);
            let snapshot = doc.clone();
            let mut tx = doc.transaction();
            f(&mut tx, &snapshot);
            tx.commit();
            assert!(doc.get_last_local_change().is_some(), "{name}: no change");
            out.push((name, sign(net, k, &doc), expect));
        };
    attack("schema-rewrite", Expect::Schema, &|tx, _| {
        tx.put(ROOT, "schemaVersion", 99u64).expect("put");
    });
    attack("root-key-delete", Expect::Schema, &|tx, _| {
        tx.delete(ROOT, "eventBuckets").expect("delete");
    });
    attack("event-delete", Expect::Schema, &|tx, d| {
        let (b, key) = some_event(d);
        tx.delete(&b, key.as_str()).expect("delete");
    });
    attack("event-overwrite", Expect::Schema, &|tx, d| {
        let (b, key) = some_event(d);
        tx.put(&b, key.as_str(), event_json("bo", "bo"))
            .expect("put");
    });
    attack("edit-other-agent", Expect::NotYourAgent, &|tx, d| {
        let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Agent, "ana"));
        tx.put(&b, "[\"agents\",\"ana\",\"name\"]", "\"Mallory\"")
            .expect("put");
    });
    // Agent relationships: only a party (subject or object) or an admin asserts one; the id
    // is [subject, relationship, object] and fixes those fields; roles are admins' alone.
    let relationship = |tx: &mut automerge::transaction::Transaction<'_>,
                        d: &Automerge,
                        rid: &str,
                        fields: &[(&str, &str)]| {
        let kind = ObjectKind::AgentRelationship;
        let b = bucket(d, "objectBuckets", object_bucket(kind, rid));
        let marker = serde_json::to_string(&[kind.root_key(), rid]).expect("json");
        tx.put(&b, marker.as_str(), kind.root_key()).expect("put");
        for (f, v) in fields {
            let k = serde_json::to_string(&[kind.root_key(), rid, f]).expect("json");
            let v = serde_json::to_string(v).expect("json");
            tx.put(&b, k.as_str(), v).expect("put");
        }
    };
    attack(
        "relationship-between-two-others",
        Expect::NotYourRelationship,
        &|tx, d| {
            relationship(
                tx,
                d,
                r#"["ana","volunteer","cafe"]"#,
                &[
                    ("subject", "ana"),
                    ("object", "cafe"),
                    ("relationship", "volunteer"),
                ],
            );
        },
    );
    attack(
        "edit-others-relationship-note",
        Expect::NotYourRelationship,
        &|tx, d| {
            let rid = r#"["ana","volunteer","cafe"]"#;
            let kind = ObjectKind::AgentRelationship;
            let b = bucket(d, "objectBuckets", object_bucket(kind, rid));
            let k = serde_json::to_string(&[kind.root_key(), rid, "note"]).expect("json");
            tx.put(&b, k.as_str(), "\"fired\"").expect("put");
        },
    );
    attack("relationship-free-id", Expect::Schema, &|tx, d| {
        relationship(
            tx,
            d,
            "bo-volunteers",
            &[
                ("subject", "bo"),
                ("object", "cafe"),
                ("relationship", "volunteer"),
            ],
        );
    });
    attack("relationship-id-non-canonical", Expect::Schema, &|tx, d| {
        relationship(tx, d, r#"[ "bo","volunteer","cafe"]"#, &[("subject", "bo")]);
    });
    attack(
        "relationship-fields-contradict-id",
        Expect::Schema,
        &|tx, d| {
            // bo is the id's subject, but the stored subject would say ana.
            relationship(
                tx,
                d,
                r#"["bo","volunteer","cafe"]"#,
                &[
                    ("subject", "ana"),
                    ("object", "cafe"),
                    ("relationship", "volunteer"),
                ],
            );
        },
    );
    attack("role-by-a-member", Expect::AdminsOnly, &|tx, d| {
        let kind = ObjectKind::AgentRelationshipRole;
        let b = bucket(d, "objectBuckets", object_bucket(kind, "boss"));
        tx.put(&b, r#"["agentRelationshipRoles","boss"]"#, kind.root_key())
            .expect("put");
        tx.put(
            &b,
            r#"["agentRelationshipRoles","boss","roleLabel"]"#,
            "\"is boss of\"",
        )
        .expect("put");
    });
    attack("relabel-a-role", Expect::AdminsOnly, &|tx, d| {
        let kind = ObjectKind::AgentRelationshipRole;
        let b = bucket(d, "objectBuckets", object_bucket(kind, "volunteer"));
        tx.put(
            &b,
            r#"["agentRelationshipRoles","volunteer","roleLabel"]"#,
            "\"is servant of\"",
        )
        .expect("put");
    });
    // Ownership: a member edits only the objects its agent's devices made.
    attack("edit-others-commitment", Expect::NotYourObject, &|tx, d| {
        put_field(
            tx,
            d,
            ObjectKind::Commitment,
            "ana-delivers",
            "finished",
            "true",
        );
    });
    attack("edit-others-intent", Expect::NotYourObject, &|tx, d| {
        put_field(
            tx,
            d,
            ObjectKind::Intent,
            "ana-offer",
            "note",
            "\"withdrawn\"",
        );
    });
    attack("rename-others-resource", Expect::NotYourObject, &|tx, d| {
        put_field(
            tx,
            d,
            ObjectKind::EconomicResource,
            "apples",
            "name",
            "\"rotten\"",
        );
    });
    attack(
        "delete-others-optional-field",
        Expect::NotYourObject,
        &|tx, d| {
            // Write then delete within one change: still an edit of ana's unit.
            put_field(tx, d, ObjectKind::Unit, "kg", "classifiedAs", "[\"mass\"]");
            let k = serde_json::to_string(&["units", "kg", "classifiedAs"]).expect("json");
            let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
            tx.delete(&b, k.as_str()).expect("delete");
        },
    );
    // Parties: a member commits only its own agent, and a made promise keeps its parties.
    attack("commit-two-others", Expect::SpeaksForOthers, &|tx, d| {
        let kind = ObjectKind::Commitment;
        let b = bucket(d, "objectBuckets", object_bucket(kind, "forged"));
        let marker = serde_json::to_string(&[kind.root_key(), "forged"]).expect("json");
        tx.put(&b, marker.as_str(), kind.root_key()).expect("put");
        for (f, v) in [
            ("action", "\"transfer\""),
            ("provider", "\"ana\""),
            ("receiver", "\"cafe\""),
        ] {
            put_field(tx, d, kind, "forged", f, v);
        }
    });
    attack("change-the-parties-of-own", Expect::Schema, &|tx, d| {
        put_field(
            tx,
            d,
            ObjectKind::Commitment,
            "bo-delivers",
            "receiver",
            "\"cafe\"",
        );
    });
    attack("fields-of-an-uncreated-object", Expect::Schema, &|tx, d| {
        put_field(
            tx,
            d,
            ObjectKind::Commitment,
            "ghost",
            "action",
            "\"transfer\"",
        );
    });
    attack("make-object", Expect::Schema, &|tx, d| {
        let b = bucket(d, "objectBuckets", 3);
        tx.put_object(&b, "nested", automerge::ObjType::Map)
            .expect("make");
    });
    attack("event-key-not-own-id", Expect::Schema, &|tx, d| {
        let b = bucket(d, "eventBuckets", 0);
        tx.put(&b, "1@00", event_json("bo", "bo")).expect("put");
    });
    attack("field-wrong-type", Expect::Schema, &|tx, d| {
        let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
        tx.put(&b, "[\"units\",\"kg\",\"label\"]", "5")
            .expect("put");
    });
    attack("unknown-field", Expect::Schema, &|tx, d| {
        let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
        tx.put(&b, "[\"units\",\"kg\",\"owner\"]", "\"bo\"")
            .expect("put");
    });
    attack("delete-required-field", Expect::Schema, &|tx, d| {
        let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
        tx.delete(&b, "[\"units\",\"kg\",\"symbol\"]")
            .expect("delete");
    });
    attack("delete-marker", Expect::Schema, &|tx, d| {
        let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
        tx.delete(&b, "[\"units\",\"kg\"]").expect("delete");
    });
    attack("wrong-object-bucket", Expect::Schema, &|tx, d| {
        let right = object_bucket(ObjectKind::Unit, "g");
        let b = bucket(d, "objectBuckets", (right + 1) % 256);
        tx.put(&b, "[\"units\",\"g\"]", "units").expect("put");
    });
    attack("rename-network", Expect::Schema, &|tx, d| {
        let (_, net) = d.get(ROOT, "network").expect("get").expect("network");
        tx.put(&net, "name", "pwned").expect("put");
    });
    attack("oversized", Expect::TooLarge, &|tx, d| {
        let b = bucket(d, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
        let big = serde_json::to_string(&"x".repeat(1_100_000)).expect("json");
        tx.put(&b, "[\"units\",\"kg\",\"label\"]", big)
            .expect("put");
    });
    attack("list-ops-in-a-bucket", Expect::Schema, &|tx, d| {
        let b = bucket(d, "eventBuckets", 5);
        tx.put(&b, "x", ScalarValue::Int(1)).expect("put");
    });

    // Speak for others and bad JSON need the op id: build them as the ledger would, with
    // the key the ledger computes, then alter the value.
    for (name, provider, text, expect) in [
        ("speak-for-others", "ana", None, Expect::SpeaksForOthers),
        ("bad-event-json", "bo", Some("{not json"), Expect::Schema),
        (
            "invalid-event",
            "bo",
            Some("{\"action\":\"produce\"}"),
            Expect::Schema,
        ),
    ] {
        suffix += 1;
        let mut doc = raw(&s.bo, k, suffix);
        let start = doc
            .get_heads()
            .iter()
            .filter_map(|h| doc.get_change_meta_by_hash(h))
            .map(|m| m.max_op)
            .max()
            .unwrap_or(0)
            + 1;
        let id = format!("{start}@{}", doc.get_actor());
        let b = bucket(&doc, "eventBuckets", (start & 0xff) as usize);
        let value = text.map_or_else(|| event_json(provider, provider), str::to_string);
        let mut tx = doc.transaction();
        tx.put(&b, id.as_str(), value).expect("put");
        tx.commit();
        out.push((name, sign(net, k, &doc), expect));
    }

    // A marker put again over ana's (the op names hers as predecessor, so a reopened
    // replica would no longer see her creation): made as a changed marker, its value then
    // set back, since Automerge's API skips a put of an equal value; modified software
    // need not.
    suffix += 1;
    let mut doc = raw(&s.bo, k, suffix);
    let kind = ObjectKind::Intent;
    let b = bucket(&doc, "objectBuckets", object_bucket(kind, "ana-offer"));
    let marker = serde_json::to_string(&[kind.root_key(), "ana-offer"]).expect("json");
    let mut tx = doc.transaction();
    tx.put(&b, marker.as_str(), "x").expect("put");
    tx.commit();
    let mut expanded = doc.get_last_local_change().expect("change").decode();
    assert_eq!(expanded.operations[0].pred.len(), 1, "over ana's marker");
    expanded.operations[0].action =
        automerge::legacy::OpType::Put(ScalarValue::Str(kind.root_key().into()));
    let change = automerge::Change::from(expanded);
    let signature = k.sign_change(&net, &change.hash());
    out.push((
        "marker-put-again",
        SignedChange { change, signature },
        Expect::Schema,
    ));

    // A membership record by a member, and a second migration.
    let mut doc = raw(&s.bo, k, 201);
    let record = MembershipRecord::Add {
        device: k.id(),
        role: Role::Admin,
        agent: "bo".into(),
        invite: None,
    };
    doc.empty_commit(CommitOptions::default().with_message(record.to_message()));
    out.push(("self-promotion", sign(net, k, &doc), Expect::NotAnAdmin));

    // A descendant of a refused change.
    let schema = out
        .iter()
        .find(|(n, _, _)| *n == "schema-rewrite")
        .map(|(_, c, _)| c.clone())
        .expect("schema attack");
    let mut doc = raw(&s.bo, k, 202);
    doc.apply_changes([schema.change.clone()]).expect("apply");
    let b = bucket(&doc, "objectBuckets", object_bucket(ObjectKind::Unit, "kg"));
    let mut tx = doc.transaction();
    tx.put(&b, "[\"units\",\"kg\",\"label\"]", "\"kilo\"")
        .expect("put");
    tx.commit();
    out.push((
        "descendant-of-refused",
        sign(net, k, &doc),
        Expect::DependsOnRefused,
    ));
    out
}

/// Put `value` (JSON text) as `field` of object `kind` `id`, in the object's own bucket.
fn put_field(
    tx: &mut automerge::transaction::Transaction<'_>,
    d: &Automerge,
    kind: ObjectKind,
    id: &str,
    field: &str,
    value: &str,
) {
    let k = serde_json::to_string(&[kind.root_key(), id, field]).expect("json");
    let b = bucket(d, "objectBuckets", object_bucket(kind, id));
    tx.put(&b, k.as_str(), value).expect("put");
}

fn object_bucket(kind: ObjectKind, id: &str) -> usize {
    // The format's FNV-1a over "<root key>/<id>" (docs/data-model.md).
    let mut h: u32 = 0x811c_9dc5;
    for b in kind
        .root_key()
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(id.bytes())
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0xff) as usize
}

#[test]
fn every_attack_is_refused_identically_by_four_replicas_in_any_order() {
    let mut s = setup();
    let net = s.admin.network();
    let attacks = attacks(&s);
    assert!(attacks.len() >= 20, "{}", attacks.len());

    // Honest traffic after the attacks were prepared: bo and ana keep recording.
    let mut honest = Vec::new();
    for i in 0..5 {
        let (_, c) =
            s.bo.write(|l| l.record_event(produce(&format!("pears{i}"), "bo")))
                .expect("bo records");
        honest.extend(c);
        let (_, c) = s
            .admin
            .write(|l| l.record_event(produce(&format!("plums{i}"), "ana")))
            .expect("ana records");
        honest.extend(c);
    }
    // bo asserts his own relationship (as its subject), the café's admin one between others.
    let (_, c) =
        s.bo.write(|l| l.create(AgentRelationship::new("bo", "volunteer", "cafe")))
            .expect("bo's own relationship");
    honest.extend(c);
    let (_, c) = s
        .admin
        .write(|l| l.create(AgentRelationship::new("ana", "volunteer", "cafe")))
        .expect("an admin records any relationship");
    honest.extend(c);
    // bo publishes his own offer and edits it; ana, an admin, edits it too.
    let (_, c) =
        s.bo.write(|l| {
            l.create(Intent {
                id: Id::from("bo-offer"),
                ..Intent::offer(Action::Transfer, "bo")
            })
        })
        .expect("bo's offer");
    honest.extend(c.clone());
    s.admin
        .receive(honest.clone())
        .expect("admin learns bo's offer");
    let (_, c) =
        s.bo.write(|l| l.update::<Intent>(&Id::from("bo-offer"), |i| i.note = Some("ripe".into())))
            .expect("bo edits his own");
    honest.extend(c);
    let (_, c) = s
        .admin
        .write(|l| l.update::<Intent>(&Id::from("bo-offer"), |i| i.finished = true))
        .expect("an admin edits anyone's");
    honest.extend(c);
    // ana, an admin, may record for others.
    let (_, c) = s
        .admin
        .write(|l| l.record_event(produce("for-bo", "bo")))
        .expect("admin records for bo");
    honest.extend(c);

    let mut mixed: Vec<SignedChange> = Vec::new();
    let mut a = attacks.iter().map(|(_, c, _)| c.clone());
    for h in &honest {
        mixed.push(h.clone());
        mixed.extend(a.next());
        mixed.extend(a.next());
    }
    mixed.extend(a);

    let orders: Vec<(&str, Vec<Vec<SignedChange>>)> = vec![
        ("one batch", vec![mixed.clone()]),
        (
            "one by one",
            mixed.iter().map(|c| vec![c.clone()]).collect(),
        ),
        ("reversed, threes", {
            let mut r = mixed.clone();
            r.reverse();
            r.chunks(3).map(<[SignedChange]>::to_vec).collect()
        }),
        ("attacks first, then honest", {
            let mut r: Vec<SignedChange> = attacks.iter().map(|(_, c, _)| c.clone()).collect();
            r.extend(honest.iter().cloned());
            r.chunks(7).map(<[SignedChange]>::to_vec).collect()
        }),
    ];
    let mut replicas = Vec::new();
    for (name, batches) in orders {
        let (mut r, _) = Replica::join(net, key(), s.history.clone()).expect("join");
        for batch in batches {
            r.receive(batch)
                .unwrap_or_else(|e| panic!("{name}: receive failed: {e}"));
        }
        replicas.push((name, r));
    }

    let honest_hashes: BTreeSet<ChangeHash> = honest.iter().map(SignedChange::hash).collect();
    let reference = &replicas[0].1;
    let quarantine = |r: &Replica| -> BTreeMap<ChangeHash, Option<Expect>> {
        r.quarantine()
            .map(|q| (q.change.hash(), kind(&q.reason)))
            .collect()
    };
    for (name, r) in &replicas {
        for h in &honest_hashes {
            assert!(
                r.ledger().has_change(h),
                "{name}: honest change {h} missing"
            );
        }
        let mut hr = r.ledger().heads();
        hr.sort();
        let mut h0 = reference.ledger().heads();
        h0.sort();
        assert_eq!(hr, h0, "{name}: heads differ");
        assert_eq!(r.members(), reference.members(), "{name}: members differ");
        assert_eq!(
            r.ledger().snapshot(),
            reference.ledger().snapshot(),
            "{name}: views differ"
        );
        assert_eq!(
            r.ledger().snapshot(),
            r.ledger().snapshot_from_scratch(),
            "{name}"
        );
        for (attack, change, expect) in &attacks {
            let h = change.hash();
            assert!(
                !r.ledger().has_change(&h),
                "{name}: attack {attack} was applied"
            );
            assert_eq!(
                quarantine(r).get(&h),
                Some(&Some(*expect)),
                "{name}: attack {attack} refused as {:?}",
                r.quarantine()
                    .find(|q| q.change.hash() == h)
                    .map(|q| q.reason.clone())
            );
        }
        // The document reopens whatever arrived.
        let reloaded = Ledger::load(&r.ledger().save(), ActorId::random()).expect("reopens");
        assert_eq!(reloaded.snapshot(), r.ledger().snapshot(), "{name}: reload");
        assert_eq!(reloaded.network_name(), "market");
        assert_eq!(reloaded.schema_version(), SCHEMA_VERSION);
    }
    for (name, r) in &replicas {
        assert_eq!(
            quarantine(r).into_keys().collect::<BTreeSet<_>>(),
            quarantine(reference).into_keys().collect::<BTreeSet<_>>(),
            "{name}: quarantine differs"
        );
    }
}

/// The reason a local write was refused (it must have been).
fn refusal<T: std::fmt::Debug>(r: Result<T>) -> Rejection {
    match r {
        Err(Error::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_device_never_makes_a_change_its_peers_would_refuse() {
    let mut s = setup();
    // bo may not record an event between other agents...
    let r = s.bo.write(|l| l.record_event(produce("not-mine", "ana")));
    let reason = refusal(r);
    assert!(
        matches!(reason, Rejection::SpeaksForOthers { .. }),
        "{reason:?}"
    );
    // ...nor rename ana.
    let r =
        s.bo.write(|l| l.update::<Agent>(&Id::from("ana"), |a| a.name = "X".into()));
    let reason = refusal(r);
    assert!(
        matches!(reason, Rejection::NotYourAgent { .. }),
        "{reason:?}"
    );
    // ...nor commit ana to the café...
    let r =
        s.bo.write(|l| l.create(Commitment::new(Action::Transfer, "ana", "cafe")));
    let reason = refusal(r);
    assert!(
        matches!(reason, Rejection::SpeaksForOthers { .. }),
        "{reason:?}"
    );
    // ...nor edit ana's commitment...
    let r =
        s.bo.write(|l| l.update::<Commitment>(&Id::from("ana-delivers"), |c| c.finished = true));
    let reason = refusal(r);
    assert!(
        matches!(reason, Rejection::NotYourObject { .. }),
        "{reason:?}"
    );
    // ...nor assert a relationship between two others, nor write a role.
    let r =
        s.bo.write(|l| l.create(AgentRelationship::new("ana", "volunteer", "cafe")));
    let reason = refusal(r);
    assert!(
        matches!(reason, Rejection::NotYourRelationship { .. }),
        "{reason:?}"
    );
    let r = s.bo.write(|l| {
        l.update::<AgentRelationshipRole>(&Id::from("volunteer"), |x| {
            x.role_label = "is servant of".into()
        })
    });
    let reason = refusal(r);
    assert!(
        matches!(
            reason,
            Rejection::AdminsOnly {
                kind: ObjectKind::AgentRelationshipRole,
                ..
            }
        ),
        "{reason:?}"
    );
    // bo may also assert a relationship of which bo is the object.
    s.bo.write(|l| l.create(AgentRelationship::new("cafe", "volunteer", "bo")))
        .expect("bo is its object");
    // bo may edit its own agent and record its own events.
    s.bo.write(|l| l.update::<Agent>(&Id::from("bo"), |a| a.note = Some("stall 4".into())))
        .expect("own agent");
    s.bo.write(|l| l.record_event(produce("mine", "bo")))
        .expect("own event");
    // A batch too large to sync is refused before it is made.
    let events: Vec<NewEvent> = (0..6000).map(|i| produce(&format!("r{i}"), "bo")).collect();
    let r = s.bo.write(|l| l.record_events(events));
    assert!(matches!(r, Err(Error::ChangeTooLarge { .. })), "{r:?}");
}

#[test]
fn a_v1_golden_ledger_loads_and_migrates() {
    let (network, changes) = golden_v1();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1-network.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json");
    let expected: serde_json::Value = golden["snapshot"].clone();
    // A member's replica of the v1 network: reads, but cannot write until migrated.
    let bo_key = DeviceKey::from_secret_bytes(&[8u8; 32]);
    let (mut bo, receipt) = Replica::join(network, bo_key, changes.clone()).expect("join v1");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(bo.ledger().schema_version(), 1);
    assert_eq!(
        serde_json::to_value(bo.ledger().snapshot()).expect("json"),
        expected
    );
    let before_ids: Vec<Id> = bo
        .ledger()
        .events(&Default::default())
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(before_ids.len(), 3);
    let r = bo.write(|l| l.record_event(produce("more", "bo")));
    assert!(matches!(r, Err(Error::MigrationRequired)), "{r:?}");
    assert!(matches!(bo.migrate(), Err(Error::NotAllowed { .. })));

    // The admin migrates: one change; event ids and views unchanged.
    let admin_key = DeviceKey::from_secret_bytes(&[7u8; 32]);
    let (mut admin, _) = Replica::join(network, admin_key, changes).expect("join v1");
    let migration = admin.migrate().expect("migrate");
    assert_eq!(migration.len(), 1);
    assert_eq!(admin.ledger().schema_version(), 2);
    let receipt = bo.receive(migration).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(bo.ledger().schema_version(), 2);
    let after_ids: Vec<Id> = bo
        .ledger()
        .events(&Default::default())
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(after_ids, before_ids, "event ids are stable");
    assert_eq!(
        serde_json::to_value(bo.ledger().snapshot()).expect("json"),
        expected
    );
    // Now both write v2; v1 objects are still read and can be updated.
    let (_, c) = bo
        .write(|l| {
            l.update::<Agent>(&Id::from("bo"), |a| a.note = Some("migrated".into()))?;
            l.record_event(
                EconomicEvent::new(Action::Transfer, "bo", "ana")
                    .resource("pears")
                    .quantity(1, "kg")
                    .creating(ResourceDescription::new("ana-pears", "Pears")),
            )
        })
        .expect("write after migration");
    let receipt = admin.receive(c).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(admin.ledger().snapshot(), bo.ledger().snapshot());
    assert_eq!(
        admin
            .ledger()
            .get::<Agent>(&Id::from("bo"))
            .and_then(|a| a.note),
        Some("migrated".into())
    );
    assert_eq!(admin.ledger().list::<Agent>().len(), 2);
    let pears = admin.ledger().resource(&Id::from("pears")).expect("pears");
    assert_eq!(pears.accounting_quantity.to_string(), "2 kg");
    // A second migration is refused by every replica.
    let second = admin.migrate().expect("no-op");
    assert!(second.is_empty());
}

/// The golden v1 network: its id and signed changes.
fn golden_v1() -> (NetworkId, Vec<SignedChange>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1-network.json");
    let text = std::fs::read_to_string(path).expect("golden file");
    let golden: serde_json::Value = serde_json::from_str(&text).expect("json");
    let network: NetworkId = golden["network"]
        .as_str()
        .expect("id")
        .parse()
        .expect("network id");
    let changes = golden["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let bytes = hex::decode(c["change"].as_str().expect("hex")).expect("hex");
            let sig = hex::decode(c["signature"].as_str().expect("hex")).expect("hex");
            SignedChange {
                change: Change::from_bytes(bytes).expect("change"),
                signature: ChangeSignature(sig.try_into().expect("64 bytes")),
            }
        })
        .collect();
    (network, changes)
}

/// A v1 root kind map and one of its objects.
fn v1_object(doc: &Automerge, root_key: &str, id: &str) -> (ObjId, ObjId) {
    let (_, map) = doc.get(ROOT, root_key).expect("get").expect("kind map");
    let (_, obj) = doc.get(&map, id).expect("get").expect("object");
    (map, obj)
}

/// Changes that member `bo` makes on a version-1 past (as modified or older software
/// would): what the version-1 rules refuse, and two honest edits.
fn v1_era_changes(
    network: NetworkId,
    bo: &Replica,
    key: &DeviceKey,
) -> (Vec<(&'static str, SignedChange, Expect)>, Vec<SignedChange>) {
    let saved = bo.ledger().save();
    let doc = |suffix: u8| {
        Automerge::load(&saved)
            .expect("load")
            .with_actor(key.id().actor([suffix; 8]))
    };
    let mut attacks = Vec::new();
    let mut attack =
        |name,
         expect,
         suffix,
         f: &dyn Fn(&mut automerge::transaction::Transaction<'_>, &Automerge)| {
            let mut d = doc(suffix);
            let snapshot = d.clone();
            let mut tx = d.transaction();
            f(&mut tx, &snapshot);
            tx.commit();
            attacks.push((name, sign(network, key, &d), expect));
        };
    attack(
        "v1-rename-another-agent",
        Expect::NotYourAgent,
        61,
        &|tx, d| {
            let (_, ana) = v1_object(d, "agents", "ana");
            tx.put(&ana, "name", "Mallory").expect("put");
        },
    );
    attack("v1-unknown-field", Expect::Schema, 62, &|tx, d| {
        let (_, kg) = v1_object(d, "units", "kg");
        tx.put(&kg, "colour", "red").expect("put");
    });
    attack("v1-wrong-type", Expect::Schema, 63, &|tx, d| {
        let (_, kg) = v1_object(d, "units", "kg");
        tx.put(&kg, "label", 5i64).expect("put");
    });
    attack("v1-delete-required-field", Expect::Schema, 64, &|tx, d| {
        let (_, kg) = v1_object(d, "units", "kg");
        tx.delete(&kg, "symbol").expect("delete");
    });
    attack("v1-replace-an-object", Expect::Schema, 65, &|tx, d| {
        let (units, _) = v1_object(d, "units", "kg");
        let kg = tx
            .put_object(&units, "kg", automerge::ObjType::Map)
            .expect("put");
        tx.put(&kg, "label", "kilo").expect("put");
        tx.put(&kg, "symbol", "k").expect("put");
    });
    attack(
        "v1-object-without-its-fields",
        Expect::Schema,
        66,
        &|tx, d| {
            let (units, _) = v1_object(d, "units", "kg");
            let lb = tx
                .put_object(&units, "lb", automerge::ObjType::Map)
                .expect("put");
            tx.put(&lb, "label", "pound").expect("put");
        },
    );
    attack(
        "v1-nested-value-of-a-wrong-type",
        Expect::Schema,
        67,
        &|tx, d| {
            let (units, _) = v1_object(d, "units", "kg");
            let oz = tx
                .put_object(&units, "oz", automerge::ObjType::Map)
                .expect("put");
            let label = tx
                .put_object(&oz, "label", automerge::ObjType::Map)
                .expect("put");
            tx.put(&label, "x", 1i64).expect("put");
            tx.put(&oz, "symbol", "oz").expect("put");
        },
    );
    attack(
        "v1-an-agent-for-someone-else",
        Expect::NotYourAgent,
        68,
        &|tx, d| {
            let (agents, _) = v1_object(d, "agents", "ana");
            let cy = tx
                .put_object(&agents, "cy", automerge::ObjType::Map)
                .expect("put");
            tx.put(&cy, "agentKind", "person").expect("put");
            tx.put(&cy, "name", "Cy").expect("put");
        },
    );
    attack("v1-an-object-in-a-value", Expect::Schema, 69, &|tx, d| {
        let (_, kg) = v1_object(d, "units", "kg");
        let label = tx
            .put_object(&kg, "label", automerge::ObjType::List)
            .expect("put");
        tx.insert(&label, 0, "kilo").expect("insert");
    });

    let mut honest = Vec::new();
    let mut d = doc(71);
    let (_, me) = v1_object(&d, "agents", "bo");
    let mut tx = d.transaction();
    tx.put(&me, "note", "at the market on Saturdays")
        .expect("put");
    tx.commit();
    honest.push(sign(network, key, &d));
    // The second honest edit builds on the first (a device's changes are one chain: two
    // concurrent ones would be a fork, docs/security.md); the attacks above are each refused
    // for what they do, before the fork would be looked at.
    let mut d = d.with_actor(key.id().actor([72; 8]));
    let (units, _) = v1_object(&d, "units", "kg");
    let mut tx = d.transaction();
    let lb = tx
        .put_object(&units, "lb", automerge::ObjType::Map)
        .expect("put");
    tx.put(&lb, "label", "pound").expect("put");
    tx.put(&lb, "symbol", "lb").expect("put");
    tx.commit();
    honest.push(sign(network, key, &d));
    (attacks, honest)
}

/// The version-1 rules: a change whose causal past holds no migration edits version-1
/// objects only as the version-1 code did (objects made whole, fields written whole, typed
/// as in version 2, an agent's description by its own devices or admins). The golden v1
/// history passes them whole; each attack is refused identically by replicas that receive
/// everything in different orders, before and after the ledger is migrated.
#[test]
fn version_1_era_changes_are_judged_by_the_version_1_rules() {
    let (network, history) = golden_v1();
    let bo_key = DeviceKey::from_secret_bytes(&[8u8; 32]);
    let (bo, receipt) = Replica::join(network, bo_key.clone(), history.clone()).expect("join");
    assert!(
        receipt.refused.is_empty(),
        "the golden history: {:?}",
        receipt.refused
    );
    let (attacks, honest) = v1_era_changes(network, &bo, &bo_key);
    let mut mixed: Vec<SignedChange> = Vec::new();
    for (i, (_, c, _)) in attacks.iter().enumerate() {
        mixed.push(c.clone());
        if let Some(h) = honest.get(i) {
            mixed.push(h.clone());
        }
    }
    // A migrated replica judges them too (their past holds no migration).
    let admin_key = DeviceKey::from_secret_bytes(&[7u8; 32]);
    let (mut admin, _) = Replica::join(network, admin_key, history.clone()).expect("join");
    let migration = admin.migrate().expect("migrate");
    // (name, changes joined with the history, batches received after)
    type Order<'a> = (&'a str, Vec<SignedChange>, Vec<Vec<SignedChange>>);
    let orders: Vec<Order<'_>> = vec![
        ("one batch", vec![], vec![mixed.clone()]),
        (
            "one by one, reversed",
            vec![],
            mixed.iter().rev().map(|c| vec![c.clone()]).collect(),
        ),
        ("in the history's batch", mixed.clone(), vec![]),
        (
            "after the migration",
            migration.clone(),
            mixed.chunks(2).map(<[SignedChange]>::to_vec).collect(),
        ),
    ];
    for (name, extra, batches) in orders {
        let mut all = history.clone();
        all.extend(extra);
        let (mut r, _) = Replica::join(network, key(), all).expect("join");
        for batch in batches {
            r.receive(batch)
                .unwrap_or_else(|e| panic!("{name}: receive failed: {e}"));
        }
        for h in &honest {
            assert!(
                r.ledger().has_change(&h.hash()),
                "{name}: an honest v1 edit refused: {:?}",
                r.quarantine()
                    .find(|q| q.change.hash() == h.hash())
                    .map(|q| q.reason.clone())
            );
        }
        for (attack, change, expect) in &attacks {
            let h = change.hash();
            assert!(!r.ledger().has_change(&h), "{name}: {attack} applied");
            let reason = r
                .quarantine()
                .find(|q| q.change.hash() == h)
                .map(|q| q.reason.clone());
            assert_eq!(
                reason.as_ref().and_then(kind),
                Some(*expect),
                "{name}: {attack} refused as {reason:?}"
            );
        }
        assert_eq!(
            r.ledger().get::<Agent>(&Id::from("ana")).map(|a| a.name),
            Some("Ana".to_string()),
            "{name}"
        );
        assert_eq!(
            r.ledger()
                .get::<Agent>(&Id::from("bo"))
                .and_then(|a| a.note),
            Some("at the market on Saturdays".to_string()),
            "{name}"
        );
        assert_eq!(
            r.ledger().get::<Unit>(&Id::from("lb")).map(|u| u.label),
            Some("pound".to_string()),
            "{name}"
        );
        assert_eq!(
            r.ledger()
                .get::<Unit>(&Id::from("kg"))
                .map(|u| (u.label, u.symbol)),
            Some(("kilogram".to_string(), "kg".to_string())),
            "{name}"
        );
    }
}

/// A local write whose first change admission accepts and whose second it refuses leaves
/// nothing of either: not in the document, not signed for peers, not in the indexes that
/// judge the next change.
#[test]
fn a_write_refused_part_way_leaves_nothing_of_its_first_changes() {
    let mut s = setup();
    let heads = s.bo.ledger().heads();
    let offered = s.bo.signed_changes_since(&[]).len();
    let r = s.bo.write(|l| {
        l.create(Commitment {
            id: Id::from("bo-second"),
            ..Commitment::new(Action::Transfer, "bo", "ana")
        })?;
        l.update::<Agent>(&Id::from("ana"), |a| a.name = "X".into())
    });
    let reason = refusal(r);
    assert!(
        matches!(reason, Rejection::NotYourAgent { .. }),
        "{reason:?}"
    );
    assert_eq!(s.bo.ledger().heads(), heads, "the document moved");
    assert!(s
        .bo
        .ledger()
        .get::<Commitment>(&Id::from("bo-second"))
        .is_none());
    assert_eq!(
        s.bo.signed_changes_since(&[]).len(),
        offered,
        "a change of the refused write is signed for peers"
    );
    // The next write is judged as if the refused one never happened, and peers take it.
    let (_, c) =
        s.bo.write(|l| l.record_event(produce("pears", "bo")))
            .expect("own event");
    assert_eq!(c.len(), 1);
    let receipt = s.admin.receive(c).expect("admin receives");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(s.admin.ledger().heads(), s.bo.ledger().heads());
}
