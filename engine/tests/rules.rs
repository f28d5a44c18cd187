//! Network rules (docs/rules.md): a network's admins publish rules as ledger data; every
//! replica judges every event by the rule set in force in that event's causal past, so that
//! all replicas agree on what is refused and what is flagged, whatever the delivery order.
//!
//! The four pilot templates each get a scenario; then: four replicas in several delivery
//! orders, a rule change concurrent with events, a non-admin's rule change and a malformed
//! one (refused at write and at admission), a rule that fails to evaluate (flagged, named),
//! a stale version, reopening from storage, and a property test of convergence; the
//! `recordForOthers` grant (admitted with it, refused without, revoked concurrently and
//! judged causally in several delivery orders, not grantable by a member to itself).

mod support;

use std::collections::BTreeMap;

use support::{golden, read_network};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ReadDoc, ROOT};
use proptest::prelude::*;
use reflow::rules::{template, Outcome, RecordForOthers, Rule, RuleSet, RULE_SET_ID};
use reflow::*;

fn key() -> DeviceKey {
    DeviceKey::generate().expect("OS randomness")
}

/// A network with an admin (`admin` acting for `market`) and members acting for each of
/// `agents`. Returns the admin, the members (by agent) and the history.
struct Net {
    admin: Replica,
    members: BTreeMap<String, Replica>,
    history: Vec<SignedChange>,
}

fn network(agents: &[&str]) -> Net {
    let (mut admin, mut history) =
        Replica::create_network("net", key(), Agent::organization("market", "Market"))
            .expect("create");
    let (_, c) = admin
        .write(|l| {
            l.create(Unit::new("kg", "kilogram", "kg"))?;
            l.create(Unit::new("hour", "hour", "h"))?;
            l.create(Unit::new("one", "one", "1"))?;
            for a in agents {
                l.create(Agent::person(*a, *a))?;
            }
            Ok(())
        })
        .expect("agents");
    history.extend(c);
    let mut keys = Vec::new();
    for a in agents {
        let k = key();
        history.extend(
            admin
                .add_member(k.id(), Role::Member, Id::from(*a))
                .expect("add"),
        );
        keys.push((a.to_string(), k));
    }
    let mut members = BTreeMap::new();
    for (a, k) in keys {
        let (r, receipt) = Replica::join(admin.network(), k, history.clone()).expect("join");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        members.insert(a, r);
    }
    Net {
        admin,
        members,
        history,
    }
}

impl Net {
    /// Send `changes` to every replica (admin and members).
    fn spread(&mut self, changes: &[SignedChange]) {
        self.history.extend(changes.iter().cloned());
        let receipt = self
            .admin
            .receive(changes.to_vec())
            .expect("admin receives");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        for r in self.members.values_mut() {
            let receipt = r.receive(changes.to_vec()).expect("receive");
            assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        }
    }

    /// The admin creates the process "garden" (work goes into it) and every member gets it.
    fn garden(&mut self) {
        let (_, c) = self
            .admin
            .write(|l| l.create(Process::new("garden", "Garden", None)))
            .expect("process");
        self.spread(&c);
    }

    fn publish(&mut self, rules: RuleSet) {
        let c = self.admin.set_rules(rules).expect("publish");
        self.spread(&c);
    }

    fn write(&mut self, who: &str, event: impl Into<NewEvent>) -> Result<Id> {
        let r = self.members.get_mut(who).expect("member");
        let (id, c) = r.write(|l| l.record_event(event))?;
        self.spread(&c);
        Ok(id)
    }
}

fn refused_by(result: Result<Id>, rule: &str) {
    match result {
        Err(Error::Refused {
            reason: Rejection::RuleRefused { rule: r, .. },
        }) => assert_eq!(r, rule),
        other => panic!("expected a refusal by {rule}, got {other:?}"),
    }
}

fn violations(r: &Replica) -> Vec<(Id, String, Option<String>)> {
    r.ledger()
        .conflicts()
        .into_iter()
        .filter_map(|c| match c {
            Conflict::RuleViolation {
                event, rule, error, ..
            } => Some((event, rule, error)),
            _ => None,
        })
        .collect()
}

#[test]
fn food_market() {
    let mut net = network(&["farm", "bo"]);
    net.publish(template("food-market").expect("template"));
    assert_eq!(net.admin.rules().map(|r| r.version), Some(1));
    net.write(
        "farm",
        EconomicEvent::new(Action::Produce, "farm", "farm")
            .quantity(10, "kg")
            .creating(ResourceDescription::new("apples", "Apples")),
    )
    .expect("produce");
    // The buyer may not record the stall's sale (admission alone would let it: bo receives).
    refused_by(
        net.write(
            "bo",
            EconomicEvent::new(Action::Transfer, "farm", "bo")
                .resource("apples")
                .quantity(2, "kg")
                .creating(ResourceDescription::new("bo-apples", "Apples")),
        ),
        "stall-sells-own-produce",
    );
    net.write(
        "farm",
        EconomicEvent::new(Action::Transfer, "farm", "bo")
            .resource("apples")
            .quantity(4, "kg")
            .creating(ResourceDescription::new("bo-apples", "Apples")),
    )
    .expect("a sale within stock");
    assert!(violations(&net.admin).is_empty());
    // 6 kg left: a sale of 7 kg stands, flagged.
    let big = net
        .write(
            "farm",
            EconomicEvent::new(Action::Transfer, "farm", "bo")
                .resource("apples")
                .quantity(7, "kg")
                .creating(ResourceDescription::new("bo-apples-2", "Apples")),
        )
        .expect("flagged, not refused");
    for r in std::iter::once(&net.admin).chain(net.members.values()) {
        assert_eq!(
            violations(r),
            vec![(big.clone(), "sale-within-onhand".to_string(), None)]
        );
    }
}

/// Two sales of the same stock made offline, each within the stock its recorder saw: the rule
/// (stock as seen) flags neither, the overdraw names the pair; a sale after both is flagged.
#[test]
fn food_market_judges_stock_as_the_recorder_saw_it() {
    let mut net = network(&["farm", "bo"]);
    net.publish(template("food-market").expect("template"));
    net.write(
        "farm",
        EconomicEvent::new(Action::Produce, "farm", "farm")
            .quantity(10, "kg")
            .creating(ResourceDescription::new("apples", "Apples")),
    )
    .expect("produce");
    let sale = |n: i64, to: &str| {
        EconomicEvent::new(Action::Transfer, "farm", "bo")
            .resource("apples")
            .quantity(n, "kg")
            .creating(ResourceDescription::new(to, "Apples"))
    };
    let farm = net.members.get_mut("farm").expect("farm");
    let (a, ca) = farm
        .write(|l| l.record_event(sale(6, "bo-1")))
        .expect("farm sells");
    // The market's admin sells for the stall at the same time (admins may), offline.
    let (b, cb) = net
        .admin
        .write(|l| l.record_event(sale(6, "bo-2")))
        .expect("admin sells");
    let mut both = ca;
    both.extend(cb);
    net.history.extend(both.clone());
    for r in net.members.values_mut() {
        r.receive(both.clone()).expect("receive");
    }
    net.admin.receive(both).expect("receive");
    assert!(
        violations(&net.admin).is_empty(),
        "{:?}",
        violations(&net.admin)
    );
    let overdraws: Vec<Id> = net
        .admin
        .ledger()
        .conflicts()
        .into_iter()
        .filter_map(|c| match c {
            Conflict::Overdraw { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    // Accounting and onhand, both on the later sale of the two.
    assert_eq!(overdraws.len(), 2);
    assert!(overdraws
        .iter()
        .all(|e| *e == overdraws[0] && (*e == a || *e == b)));
    // After both, 10 - 12 = -2 kg: a sale of 1 kg is flagged.
    let c = net.write("farm", sale(1, "bo-3")).expect("flagged, stands");
    for r in std::iter::once(&net.admin).chain(net.members.values()) {
        assert_eq!(
            violations(r),
            vec![(c.clone(), "sale-within-onhand".to_string(), None)]
        );
    }
}

#[test]
fn repair_cafe() {
    let mut net = network(&["cafe", "volunteer", "visitor"]);
    net.publish(template("repair-cafe").expect("template"));
    let (_, c) = net
        .admin
        .write(|l| l.create(Process::new("fix-1", "Fix a toaster", None)))
        .expect("process");
    net.spread(&c);
    net.write(
        "volunteer",
        EconomicEvent::new(Action::Work, "volunteer", "cafe")
            .effort(2, "hour")
            .input_of("fix-1"),
    )
    .expect("a volunteer's work");
    refused_by(
        net.write(
            "visitor",
            EconomicEvent::new(Action::Work, "visitor", "cafe")
                .effort(1, "hour")
                .input_of("fix-1"),
        ),
        "volunteers-record-repairs",
    );
    net.write(
        "cafe",
        EconomicEvent::new(Action::Produce, "cafe", "cafe")
            .quantity(5, "one")
            .creating(ResourceDescription::new("fuses", "Fuses")),
    )
    .expect("parts");
    net.write(
        "cafe",
        EconomicEvent::new(Action::Consume, "cafe", "cafe")
            .resource("fuses")
            .quantity(1, "one")
            .input_of("fix-1"),
    )
    .expect("the café consumes a part");
    // A volunteer recording parts consumed by someone else than the café.
    refused_by(
        net.write(
            "volunteer",
            EconomicEvent::new(Action::Consume, "volunteer", "volunteer")
                .resource("fuses")
                .quantity(1, "one")
                .input_of("fix-1"),
        ),
        "parts-consumed-by-cafe",
    );
}

#[test]
fn collection_flags_heavy_deliveries() {
    let mut net = network(&["collector", "hub"]);
    net.publish(template("collection").expect("template"));
    net.write(
        "collector",
        EconomicEvent::new(Action::Produce, "collector", "collector")
            .quantity(100, "kg")
            .creating(ResourceDescription::new("bags", "Textile bags")),
    )
    .expect("collected");
    net.write(
        "collector",
        EconomicEvent::new(Action::TransferCustody, "collector", "hub")
            .resource("bags")
            .quantity(20, "kg")
            .creating(ResourceDescription::new("hub-1", "At the hub")),
    )
    .expect("20 kg");
    let heavy = net
        .write(
            "collector",
            EconomicEvent::new(Action::TransferCustody, "collector", "hub")
                .resource("bags")
                .quantity("25.5".parse::<Quantity>().expect("decimal"), "kg")
                .creating(ResourceDescription::new("hub-2", "At the hub")),
        )
        .expect("25.5 kg stands");
    assert_eq!(
        violations(&net.members["hub"]),
        vec![(heavy, "delivery-weight-review".to_string(), None)]
    );
}

#[test]
fn time_bank() {
    let mut net = network(&["ana", "bo"]);
    net.publish(template("time-bank").expect("template"));
    net.garden();
    let work = |who: &str, hours: i64| {
        EconomicEvent::new(Action::Work, who, if who == "ana" { "bo" } else { "ana" })
            .effort(hours, "hour")
            .input_of("garden")
    };
    net.write("ana", work("ana", 3)).expect("3 hours");
    refused_by(net.write("ana", work("ana", 9)), "hours-per-event");
    // bo records work for ana (bo receives it, so admission alone would let it).
    refused_by(net.write("bo", work("ana", 2)), "work-by-the-worker");
    // The quarantine holds nothing here: a device's own refused write is never made.
    assert!(net.admin.rule_refusals().is_empty());
}

/// A rule-set change made with Automerge directly, signed by `key` (bypassing
/// `Replica::set_rules`, as an attacker or a buggy client would).
fn raw_rules_change(
    r: &Replica,
    key: &DeviceKey,
    suffix: u8,
    fields: &[(&str, &str)],
) -> SignedChange {
    let mut doc = Automerge::load(&r.ledger().save())
        .expect("load")
        .with_actor(key.id().actor([suffix; 8]));
    let (_, buckets) = doc
        .get(ROOT, "objectBuckets")
        .expect("get")
        .expect("buckets");
    let mut bucket_key = String::new();
    // The bucket of ruleSets/network: FNV-1a as docs/data-model.md says.
    let mut h: u32 = 0x811c_9dc5;
    for b in "ruleSets/network".bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    bucket_key.push_str(&format!("{:02x}", h & 0xff));
    let (_, bucket) = doc
        .get(&buckets, bucket_key.as_str())
        .expect("get")
        .expect("bucket");
    let mut tx = doc.transaction();
    tx.put(
        &bucket,
        format!("[\"ruleSets\",\"{RULE_SET_ID}\"]"),
        "ruleSets",
    )
    .expect("marker");
    for (f, v) in fields {
        tx.put(
            &bucket,
            format!("[\"ruleSets\",\"{RULE_SET_ID}\",\"{f}\"]"),
            *v,
        )
        .expect("field");
    }
    let (hash, _) = tx.commit_with(CommitOptions::default());
    let hash = hash.expect("a change");
    let change = doc.get_change_by_hash(&hash).expect("the change").clone();
    let signature = key.sign_change(&r.network(), &change.hash());
    SignedChange { change, signature }
}

#[test]
fn only_admins_change_rules_and_malformed_rules_are_refused() {
    let member_key = key();
    let (mut admin, mut history) =
        Replica::create_network("net", key(), Agent::organization("market", "Market"))
            .expect("create");
    let (_, c) = admin
        .write(|l| l.create(Agent::person("bo", "Bo")))
        .expect("bo");
    history.extend(c);
    history.extend(
        admin
            .add_member(member_key.id(), Role::Member, Id::from("bo"))
            .expect("add"),
    );
    let (mut bo, _) =
        Replica::join(admin.network(), member_key.clone(), history.clone()).expect("join");
    let rules = template("time-bank").expect("template");
    // At write: the member's replica refuses to make it.
    assert!(matches!(
        bo.set_rules(rules.clone()),
        Err(Error::NotAllowed { .. })
    ));
    // At admission: a member's hand-made rule-set change is refused with a typed reason.
    let rules_json = serde_json::to_string(&rules.rules).expect("json");
    let forged = raw_rules_change(
        &bo,
        &member_key,
        7,
        &[
            ("name", "\"Mine\""),
            ("version", "5"),
            ("rules", &rules_json),
        ],
    );
    let receipt = admin.receive(vec![forged]).expect("receive");
    assert!(
        matches!(
            receipt.refused.as_slice(),
            [(_, Rejection::RulesNotByAdmin { .. })]
        ),
        "{:?}",
        receipt.refused
    );
    assert_eq!(admin.rules(), None);

    // A malformed rule set: refused at write, nothing written...
    let before = admin.ledger().heads();
    let mut bad = rules.clone();
    bad.rules[0].check = "event.effort.milli > 1.5".into();
    assert!(matches!(admin.set_rules(bad), Err(Error::InvalidRules(_))));
    let mut bad = rules.clone();
    bad.rules[0].check = "event.provider ==".into();
    assert!(matches!(admin.set_rules(bad), Err(Error::InvalidRules(_))));
    assert_eq!(admin.ledger().heads(), before);
    // ... and at admission, when an admin's client writes one anyway.
    let admin_key_id = admin.device();
    let _ = admin_key_id;
    let looping =
        r#"[{"name":"loop","outcome":"refuse","check":"[1,2].all(x, x > 0)","message":"m"}]"#;
    // Signed by an admin: the admin's replica would not make it, so make it on a copy with a
    // fresh admin device.
    let admin2 = key();
    let c = admin
        .add_member(admin2.id(), Role::Admin, Id::from("market"))
        .expect("admin 2");
    history.extend(c.clone());
    bo.receive(c).expect("bo learns of admin 2");
    let malformed = raw_rules_change(
        &admin,
        &admin2,
        9,
        &[("name", "\"Loops\""), ("version", "1"), ("rules", looping)],
    );
    let receipt = bo.receive(vec![malformed]).expect("receive");
    assert!(
        matches!(
            receipt.refused.as_slice(),
            [(_, Rejection::InvalidRules { .. })]
        ),
        "{:?}",
        receipt.refused
    );
    // A well-formed one by admin 2 stands; the same version again (stale) is refused.
    let fine = raw_rules_change(
        &admin,
        &admin2,
        10,
        &[
            ("name", "\"Bank\""),
            ("version", "1"),
            ("rules", &rules_json),
        ],
    );
    let receipt = bo.receive(vec![fine.clone()]).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    assert_eq!(bo.rules().map(|r| r.version), Some(1));
    admin.receive(vec![fine]).expect("admin too");
    let stale = raw_rules_change(&admin, &admin2, 11, &[("version", "0")]);
    let receipt = bo.receive(vec![stale]).expect("receive");
    assert!(
        matches!(receipt.refused.as_slice(), [(_, Rejection::InvalidRules { detail })] if detail.contains("not above")),
        "{:?}",
        receipt.refused
    );
}

#[test]
fn a_rule_that_fails_to_evaluate_is_a_named_flag() {
    let mut net = network(&["ana"]);
    net.publish(RuleSet::new(
        "Broken",
        1,
        vec![
            Rule {
                name: "needs-quantity".into(),
                outcome: Outcome::Refuse,
                actions: vec![],
                // Fails on an event without a quantity (null has no field milli).
                check: "event.quantity.milli >= 0".into(),
                message: "m".into(),
            },
            Rule {
                name: "divides".into(),
                outcome: Outcome::Flag,
                actions: vec![],
                check: "event.quantity == null || 10 / (event.quantity.milli - 1000) > 0".into(),
                message: "m".into(),
            },
        ],
    ));
    let (_, c) = net
        .admin
        .write(|l| l.create(Process::new("p", "P", None)))
        .expect("process");
    net.spread(&c);
    let work = net
        .write(
            "ana",
            EconomicEvent::new(Action::Work, "ana", "ana")
                .effort(1, "hour")
                .input_of("p"),
        )
        .expect("a failing refuse rule refuses nothing");
    let produce = net
        .write(
            "ana",
            EconomicEvent::new(Action::Produce, "ana", "ana")
                .quantity(1, "kg")
                .creating(ResourceDescription::new("x", "X")),
        )
        .expect("division by zero in a flag rule: the event stands");
    let v = violations(&net.admin);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((&v[0].0, v[0].1.as_str()), (&work, "needs-quantity"));
    assert!(v[0].2.is_some(), "named as an evaluation error");
    assert_eq!((&v[1].0, v[1].1.as_str()), (&produce, "divides"));
    assert!(
        v[1].2
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("division")),
        "{v:?}"
    );
}

/// The scenario of the convergence tests: rules v1 (the time bank's), then an offline member
/// recording work concurrently with v2 (which caps at 2 hours), then work after v2.
fn concurrent_history() -> (Vec<SignedChange>, NetworkId, Vec<SignedChange>) {
    let mut net = network(&["ana", "bo"]);
    net.publish(template("time-bank").expect("template"));
    net.garden();
    // bo goes offline and records 5 hours (allowed by v1).
    let bo = net.members.get_mut("bo").expect("bo");
    let (_, offline) = bo
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Work, "bo", "ana")
                    .effort(5, "hour")
                    .input_of("garden"),
            )
        })
        .expect("offline work");
    // Meanwhile the admin publishes v2: at most 2 hours per event, and a flag on long notes.
    let mut v2 = template("time-bank").expect("template");
    v2.rules[1].check =
        "event.effort != null && event.effort.unit == 'hour' && event.effort.milli <= 2000".into();
    v2.rules.push(Rule {
        name: "small-ids".into(),
        outcome: Outcome::Flag,
        actions: vec![Action::Produce],
        check: "size(event.createdResource) <= 3".into(),
        message: "Short resource ids please".into(),
    });
    let v2c = net.admin.set_rules(v2).expect("v2");
    // ana, who saw v2, records 5 hours: refused on her own replica...
    let ana = net.members.get_mut("ana").expect("ana");
    ana.receive(v2c.clone()).expect("ana gets v2");
    assert!(ana
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Work, "ana", "bo")
                    .effort(5, "hour")
                    .input_of("garden"),
            )
        })
        .is_err());
    // ... and 2 hours, and a flagged production, stand.
    let (_, after) = ana
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Work, "ana", "bo")
                    .effort(2, "hour")
                    .input_of("garden"),
            )?;
            l.record_event(
                EconomicEvent::new(Action::Produce, "ana", "ana")
                    .quantity(1, "kg")
                    .creating(ResourceDescription::new("long-id", "Jam")),
            )
        })
        .expect("after v2");
    // ana's client, bypassing her replica's own check, makes 5 hours after v2 anyway.
    let forged = forge_event(
        ana,
        0xf0,
        &EconomicEvent::new(Action::Work, "ana", "bo")
            .effort(5, "hour")
            .input_of("garden"),
    );
    let network = net.admin.network();
    let mut all = net.history.clone();
    all.extend(offline.clone());
    all.extend(v2c);
    all.extend(after);
    all.push(forged);
    (all, network, offline)
}

/// An event put with Automerge directly on a copy of `r`'s document, as session `suffix` of
/// `r`'s device, signed with its key: a client that skips its replica's own checks.
fn forge_event(r: &Replica, suffix: u8, event: &EconomicEvent) -> SignedChange {
    forge_event_on(&r.ledger().save(), r.key(), r.network(), suffix, event)
}

/// [`forge_event`] on a saved document `saved` (an earlier state of a device's ledger).
fn forge_event_on(
    saved: &[u8],
    key: &DeviceKey,
    network: NetworkId,
    suffix: u8,
    event: &EconomicEvent,
) -> SignedChange {
    let mut doc = Automerge::load(saved)
        .expect("load")
        .with_actor(key.id().actor([suffix; 8]));
    let start = doc
        .get_heads()
        .iter()
        .filter_map(|h| doc.get_change_meta_by_hash(h))
        .map(|m| m.max_op)
        .max()
        .unwrap_or(0)
        + 1;
    let (_, buckets) = doc
        .get(ROOT, "eventBuckets")
        .expect("get")
        .expect("buckets");
    let (_, b) = doc
        .get(&buckets, format!("{:02x}", start & 0xff))
        .expect("get")
        .expect("bucket");
    let id = format!("{start}@{}", doc.get_actor());
    let mut tx = doc.transaction();
    tx.put(&b, id, serde_json::to_string(event).expect("json"))
        .expect("put");
    let (hash, _) = tx.commit_with(CommitOptions::default());
    let change = doc
        .get_change_by_hash(&hash.expect("a change"))
        .expect("change")
        .clone();
    let signature = key.sign_change(&network, &change.hash());
    SignedChange { change, signature }
}

/// A fresh replica that gets the genesis, then `history` in `order`, `batch` at a time.
fn deliver(network: NetworkId, history: &[SignedChange], order: &[usize], batch: usize) -> Replica {
    let genesis: Vec<SignedChange> = history[..1].to_vec();
    let (mut r, _) = Replica::join(network, key(), genesis).expect("join");
    let rest: Vec<SignedChange> = order.iter().map(|i| history[*i].clone()).collect();
    for chunk in rest.chunks(batch) {
        r.receive(chunk.to_vec()).expect("receive");
    }
    r
}

/// Heads, quarantine and conflicts, to compare replicas. A change refused because its device
/// equivocated or forked is compared by that verdict and device; the proof it names (`other`)
/// must be another refused change of the same device, but which one depends on the fork a
/// replica saw first (docs/security.md, "A fork is an equivocation too"): a device that forked
/// several times has several valid proofs.
fn verdicts(r: &Replica) -> (Vec<ChangeHash>, BTreeMap<String, String>, Vec<Conflict>) {
    let refused: BTreeMap<ChangeHash, Option<DeviceId>> = r
        .quarantine()
        .map(|q| {
            (
                q.change.hash(),
                DeviceId::of_actor(q.change.change.actor_id()),
            )
        })
        .collect();
    let quarantine = r
        .quarantine()
        .map(|q| {
            let verdict = match &q.reason {
                Rejection::Forked { device, other } | Rejection::Equivocation { device, other } => {
                    let other: ChangeHash = other.parse().expect("the proof is a change hash");
                    assert_eq!(
                        refused.get(&other),
                        Some(&Some(*device)),
                        "{} names {other} as its proof: not a refused change of {device}",
                        q.change.hash()
                    );
                    let kind = if matches!(q.reason, Rejection::Forked { .. }) {
                        "forked"
                    } else {
                        "equivocation"
                    };
                    format!("{kind} by {device}")
                }
                other => format!("{other:?}"),
            };
            (q.change.hash().to_string(), verdict)
        })
        .collect();
    (r.ledger().heads(), quarantine, r.ledger().conflicts())
}

/// A seeded shuffle (xorshift), the seed printed.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed | 1;
    let mut v: Vec<usize> = (1..n).collect();
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

#[test]
fn four_replicas_in_any_order_judge_causally() {
    let (history, network, offline) = concurrent_history();
    let n = history.len();
    let orders: Vec<(Vec<usize>, usize)> = vec![
        ((1..n).collect(), n),
        ((1..n).rev().collect(), 1),
        (shuffled(n, 0x5eed_0001), 3),
        (shuffled(n, 0x5eed_0002), 1),
    ];
    eprintln!("seeds 0x5eed0001, 0x5eed0002");
    let replicas: Vec<Replica> = orders
        .iter()
        .map(|(o, b)| deliver(network, &history, o, *b))
        .collect();
    let first = verdicts(&replicas[0]);
    for r in &replicas[1..] {
        assert_eq!(verdicts(r), first);
    }
    // The offline 5 hours stand (judged by v1, in its causal past), though every replica
    // holds v2 now; the flag names the production under v2.
    let offline_change = offline[0].hash();
    assert!(replicas[0].ledger().has_change(&offline_change));
    // The 5 hours made after v2 (by a client that skipped its own check) are refused by v2's
    // cap, everywhere, with the rule's name.
    let refused: Vec<String> = replicas[0]
        .rule_refusals()
        .iter()
        .map(|q| match &q.reason {
            Rejection::RuleRefused { rule, version, .. } => format!("{rule}@{version}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(refused, vec!["hours-per-event@2".to_string()]);
    assert_eq!(replicas[0].quarantine().count(), 1);
    let flagged: Vec<String> = first
        .2
        .iter()
        .filter_map(|c| match c {
            Conflict::RuleViolation { rule, version, .. } => Some(format!("{rule}@{version}")),
            _ => None,
        })
        .collect();
    assert_eq!(flagged, vec!["small-ids@2".to_string()]);
    assert_eq!(replicas[0].rules().map(|r| r.version), Some(2));
}

/// A fresh replica that gets the genesis, then the rest of `history` in one receive, checked
/// in runs of `chunk` changes (`Limits::pipeline_chunk`).
fn deliver_pipelined(network: NetworkId, history: &[SignedChange], chunk: usize) -> Replica {
    let (mut r, _) = Replica::join(network, key(), history[..1].to_vec()).expect("join");
    r.set_limits(Limits {
        pipeline_chunk: chunk,
        ..Limits::default()
    });
    r.receive(history[1..].to_vec()).expect("receive");
    r
}

/// A large receive checks the signatures of its next run of changes while it judges the
/// current one in order, the rule set changing between runs (v2 lands in one run and judges
/// the next): the verdicts are those of one plain batch, whatever the run length.
#[test]
fn pipelined_receive_judges_rules_like_one_batch() {
    let (history, network, _) = concurrent_history();
    let plain = verdicts(&deliver(
        network,
        &history,
        &(1..history.len()).collect::<Vec<_>>(),
        history.len(),
    ));
    for chunk in 1..=4 {
        let r = deliver_pipelined(network, &history, chunk);
        assert_eq!(verdicts(&r), plain, "runs of {chunk}");
        assert_eq!(r.rule_refusals().len(), 1, "runs of {chunk}");
    }
}

#[test]
fn reopened_replica_judges_the_same() {
    let (history, network, _) = concurrent_history();
    let (r, _) = Replica::join(network, key(), history.clone()).expect("join");
    let signatures = history.iter().map(|c| (c.hash(), c.signature)).collect();
    let k = key();
    let ledger = Ledger::load(&r.ledger().save(), k.session_actor().expect("actor")).expect("load");
    let reopened = Replica::open(ledger, k, network, signatures, Vec::new()).expect("open");
    assert_eq!(reopened.ledger().conflicts(), r.ledger().conflicts());
    assert_eq!(reopened.rules(), r.rules());
    assert_eq!(reopened.rule_versions().len(), 2);
    // Opened from the saved bytes, its views folded once with the rules known: the same.
    let signatures = history.iter().map(|c| (c.hash(), c.signature)).collect();
    let saved = Replica::open_saved(&r.ledger().save(), key(), network, signatures, Vec::new())
        .expect("open saved");
    assert!(
        saved
            .ledger()
            .conflicts()
            .iter()
            .any(|c| matches!(c, Conflict::RuleViolation { .. })),
        "the history has flagged events"
    );
    assert_eq!(saved.ledger().conflicts(), r.ledger().conflicts());
    assert_eq!(saved.ledger().snapshot(), r.ledger().snapshot());
    assert_eq!(saved.rule_versions().len(), 2);
}

fn random_rules(version: u64, limit: i64, flag_limit: i64) -> RuleSet {
    RuleSet::new(
        format!("random {version}"),
        version,
        vec![
            Rule {
                name: "cap".into(),
                outcome: Outcome::Refuse,
                actions: vec![Action::Produce],
                check: format!("event.quantity.milli <= {}", limit * 1000),
                message: "cap".into(),
            },
            Rule {
                name: "watch".into(),
                outcome: Outcome::Flag,
                actions: vec![Action::Consume],
                check: format!(
                    "resource == null || resource.onhand.milli - event.quantity.milli >= {}",
                    flag_limit * 1000
                ),
                message: "watch".into(),
            },
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Random events by two members and random rule changes by the admin, made on three
    /// replicas that sync in random steps, then delivered to fresh replicas in random orders:
    /// every replica ends with the same heads, quarantine and conflicts.
    #[test]
    fn random_events_and_rules_converge(
        steps in proptest::collection::vec((0u8..4, 1i64..12, 0i64..6), 4..14),
        seed in any::<u64>(),
    ) {
        let mut net = network(&["ana", "bo"]);
        let mut version = 0;
        let mut all = net.history.clone();
        for (i, (who, q, lim)) in steps.iter().enumerate() {
            let made = match who {
                0 => {
                    version += 1;
                    net.admin.set_rules(random_rules(version, *lim + 3, *lim)).ok()
                }
                w => {
                    let name = if *w == 1 { "ana" } else { "bo" };
                    let r = net.members.get_mut(name).expect("member");
                    if *q > 9 {
                        // A client that skips its own checks: a batch the cap may refuse.
                        let big = EconomicEvent::new(Action::Produce, name, name)
                            .quantity(*q, "kg")
                            .resource(format!("{name}-r"));
                        all.push(forge_event(r, 0x80 + i as u8, &big));
                        continue;
                    }
                    let event: NewEvent = if *w == 3 && i > 0 {
                        EconomicEvent::new(Action::Consume, name, name)
                            .resource(format!("{name}-r"))
                            .quantity(*q, "kg")
                            .into()
                    } else {
                        EconomicEvent::new(Action::Produce, name, name)
                            .quantity(*q, "kg")
                            .creating(ResourceDescription::new(format!("{name}-r{i}"), "R"))
                    };
                    r.write(|l| l.record_event(event)).ok().map(|(_, c)| c)
                }
            };
            all.extend(made.into_iter().flatten());
            // Sync part of the time only, so that writes are concurrent.
            if (seed >> (i % 60)) & 1 == 1 {
                let everything = all.clone();
                net.admin.receive(everything.clone()).expect("r");
                for r in net.members.values_mut() {
                    r.receive(everything.clone()).expect("r");
                }
            }
        }
        let network = net.admin.network();
        let n = all.len();
        let a = deliver(network, &all, &(1..n).collect::<Vec<_>>(), n);
        let b = deliver(network, &all, &shuffled(n, seed), 2);
        let c = deliver(network, &all, &(1..n).rev().collect::<Vec<_>>(), 1);
        let va = verdicts(&a);
        prop_assert_eq!(&verdicts(&b), &va, "seed {}", seed);
        prop_assert_eq!(&verdicts(&c), &va, "seed {}", seed);
        for (name, r) in std::iter::once(("admin", &mut net.admin)).chain(net.members.iter_mut().map(|(n, r)| (n.as_str(), r))) {
            r.receive(all.clone()).expect("r");
            prop_assert_eq!(r.ledger().heads(), va.0.clone(), "{} seed {}", name, seed);
            prop_assert_eq!(r.ledger().conflicts(), va.2.clone(), "{} seed {}", name, seed);
        }
    }
}

/// A removal concurrent with a flagged event makes a replica judge everything again from
/// scratch (strong removal): the rules and the flags come out of that judgment the same.
#[test]
fn a_rejudgment_keeps_rules_and_flags() {
    let mut net = network(&["ana"]);
    net.publish(RuleSet::new(
        "Small batches",
        1,
        vec![Rule {
            name: "small".into(),
            outcome: Outcome::Flag,
            actions: vec![Action::Produce],
            check: "event.quantity.milli <= 5000".into(),
            message: "a large batch".into(),
        }],
    ));
    let produce = |id: &str| {
        EconomicEvent::new(Action::Produce, "ana", "ana")
            .quantity(10, "kg")
            .creating(ResourceDescription::new(id, "Jam"))
    };
    let a = net.write("ana", produce("a")).expect("flagged");
    // ana, offline, records another large batch while the admin removes her.
    let ana = net.members.get_mut("ana").expect("ana");
    let (b, cb) = ana
        .write(|l| l.record_event(produce("b")))
        .expect("offline");
    let ana_device = ana.device();
    let removal = net.admin.remove_member(ana_device).expect("remove");
    // A fresh replica gets b first (accepted, flagged), then the removal: b is revoked.
    let network = net.admin.network();
    let (mut r, _) = Replica::join(network, key(), net.history.clone()).expect("join");
    r.receive(cb).expect("b");
    assert_eq!(violations(&r).len(), 2);
    let receipt = r.receive(removal).expect("removal");
    assert_eq!(receipt.revoked.len(), 1, "{receipt:?}");
    assert!(!r.ledger().has_change(&receipt.revoked[0]));
    assert_eq!(violations(&r), vec![(a, "small".to_string(), None)]);
    assert!(r.ledger().event(&b).is_none());
    assert_eq!(r.rules().map(|s| s.version), Some(1));
}

fn speaks_for_others<T: std::fmt::Debug>(result: Result<T>) {
    assert!(
        matches!(
            result,
            Err(Error::Refused {
                reason: Rejection::SpeaksForOthers { .. }
            })
        ),
        "expected SpeaksForOthers, got {result:?}"
    );
}

/// Work between `ana` and `bo` on the process `garden`: an event naming neither the clerk
/// nor (for `bo`'s device) anyone but `bo`'s counterpart.
fn work(hours: i64) -> EconomicEvent {
    EconomicEvent::new(Action::Work, "ana", "bo")
        .effort(hours, "hour")
        .input_of("garden")
}

/// A rule set of one refuse rule (at most 8 hours of work per event) and `grant`.
fn granting(version_name: &str, grant: RecordForOthers) -> RuleSet {
    let mut set = RuleSet::new(
        version_name,
        1,
        vec![Rule {
            name: "hours-per-event".into(),
            outcome: Outcome::Refuse,
            actions: vec![Action::Work],
            check: "event.effort == null || event.effort.milli <= 8000".into(),
            message: "At most 8 hours per event.".into(),
        }],
    );
    set.record_for_others = grant;
    set
}

fn agents(names: &[&str]) -> RecordForOthers {
    RecordForOthers {
        agents: names.iter().map(|a| Id::from(*a)).collect(),
        ..RecordForOthers::default()
    }
}

#[test]
fn a_granted_member_records_for_others_and_one_without_is_refused() {
    let mut net = network(&["ana", "bo", "clerk"]);
    net.garden();
    // No rule set: the clerk, a member, records only its own agent's events.
    let clerk = net.members.get_mut("clerk").expect("clerk");
    assert!(!clerk.records_for_others());
    speaks_for_others(clerk.may_record(&work(1)));
    speaks_for_others(clerk.write(|l| l.record_event(work(1))));
    // A rule set without a grant: the same.
    net.publish(granting("Bank", RecordForOthers::default()));
    let clerk = net.members.get_mut("clerk").expect("clerk");
    speaks_for_others(clerk.write(|l| l.record_event(work(1))));
    // Its client, skipping the replica's check: refused at admission on every replica.
    let forged = forge_event(clerk, 0xe1, &work(1));
    let receipt = net.admin.receive(vec![forged]).expect("receive");
    assert!(
        matches!(
            receipt.refused.as_slice(),
            [(_, Rejection::SpeaksForOthers { .. })]
        ),
        "{:?}",
        receipt.refused
    );
    // The grant names the clerk's agent: its event between ana and bo is admitted.
    net.publish(granting("Bank with a clerk", agents(&["clerk"])));
    assert_eq!(
        net.admin.rules().map(|r| (r.format, r.record_for_others)),
        Some((2, agents(&["clerk"])))
    );
    let clerk = net.members.get_mut("clerk").expect("clerk");
    assert!(clerk.records_for_others());
    clerk.may_record(&work(1)).expect("granted");
    net.write("clerk", work(1)).expect("granted: admitted");
    // bo is not named: still only its own events.
    let bo = net.members.get_mut("bo").expect("bo");
    speaks_for_others(
        bo.may_record(
            &EconomicEvent::new(Action::Work, "ana", "clerk")
                .effort(1, "hour")
                .input_of("garden"),
        ),
    );
    // A grant to the role member: every member records for others.
    net.publish(granting(
        "Bank of clerks",
        RecordForOthers {
            roles: vec![Role::Member],
            ..RecordForOthers::default()
        },
    ));
    net.write(
        "bo",
        EconomicEvent::new(Action::Work, "ana", "clerk")
            .effort(1, "hour")
            .input_of("garden"),
    )
    .expect("members are granted");
    // A grant to a device.
    let clerk_device = net.members["clerk"].device().to_string();
    net.publish(granting(
        "Bank with one device",
        RecordForOthers {
            devices: vec![clerk_device],
            ..RecordForOthers::default()
        },
    ));
    net.write("clerk", work(1)).expect("the device is granted");
    speaks_for_others(
        net.write(
            "bo",
            EconomicEvent::new(Action::Work, "ana", "clerk")
                .effort(1, "hour")
                .input_of("garden"),
        ),
    );
    // The refuse rules still judge a granted recording (time-bank: at most 8 hours).
    refused_by(net.write("clerk", work(9)), "hours-per-event");
    // Malformed grants are refused before anything is written.
    let before = net.admin.ledger().heads();
    for bad in [
        RecordForOthers {
            roles: vec![Role::Observer],
            ..RecordForOthers::default()
        },
        RecordForOthers {
            devices: vec!["not-a-device".into()],
            ..RecordForOthers::default()
        },
        agents(&["bad\nid"]),
    ] {
        assert!(
            matches!(
                net.admin.set_rules(granting("bad", bad.clone())),
                Err(Error::InvalidRules(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(net.admin.ledger().heads(), before);
}

#[test]
fn a_member_cannot_grant_itself_recording_for_others() {
    let mut net = network(&["ana", "bo", "clerk"]);
    net.publish(template("time-bank").expect("template"));
    let clerk = net.members.get_mut("clerk").expect("clerk");
    assert!(matches!(
        clerk.set_rules(granting("Mine", agents(&["clerk"]))),
        Err(Error::NotAllowed { .. })
    ));
    // A hand-made rule-set change by the member that adds the grant: refused at admission.
    let clerk_key = clerk.key().clone();
    let forged = raw_rules_change(
        clerk,
        &clerk_key,
        0x33,
        &[
            ("version", "2"),
            ("recordForOthers", r#"{"agents":["clerk"]}"#),
        ],
    );
    let receipt = net.admin.receive(vec![forged]).expect("receive");
    assert!(
        matches!(
            receipt.refused.as_slice(),
            [(_, Rejection::RulesNotByAdmin { .. })]
        ),
        "{:?}",
        receipt.refused
    );
    assert_eq!(
        net.admin.rules().map(|r| r.record_for_others),
        Some(RecordForOthers::default())
    );
    // An admin's hand-made format-1 rule set with a grant (format 1 has no such field), or
    // a format this code does not know: refused at admission.
    let rules_json = serde_json::to_string(&template("time-bank").expect("t").rules).expect("j");
    for (format, detail) in [("1", "format 1"), ("3", "format 3")] {
        let admin_key = net.admin.key().clone();
        let change = raw_rules_change(
            &net.admin,
            &admin_key,
            0x40 + format.as_bytes()[0],
            &[
                ("name", "\"x\""),
                ("version", "9"),
                ("format", format),
                ("rules", &rules_json),
                ("recordForOthers", r#"{"agents":["clerk"]}"#),
            ],
        );
        let clerk = net.members.get_mut("clerk").expect("clerk");
        let receipt = clerk.receive(vec![change]).expect("receive");
        assert!(
            matches!(receipt.refused.as_slice(), [(_, Rejection::InvalidRules { detail: d })] if d.contains(detail)),
            "{:?}",
            receipt.refused
        );
    }
}

/// A grant revoked concurrently with a recording: the clerk, granted by v2, records while
/// offline; the admin meanwhile publishes v3 without the grant. The offline event stands
/// (v2 is in force in its causal past) on every replica in every delivery order; a recording
/// for others after the clerk has seen v3 is refused, and so is one backdated onto a past
/// without v3 (a fork of the clerk's chain).
#[test]
fn a_revoked_grant_is_judged_by_each_change_causal_past() {
    let mut net = network(&["ana", "bo", "clerk"]);
    net.garden();
    net.publish(granting("Bank", RecordForOthers::default()));
    net.publish(granting("Bank with a clerk", agents(&["clerk"])));
    // The clerk goes offline and records work between ana and bo (granted by v2).
    let clerk = net.members.get_mut("clerk").expect("clerk");
    let (_, offline) = clerk
        .write(|l| l.record_event(work(2)))
        .expect("granted offline");
    let before_v3 = clerk.ledger().save();
    // Meanwhile the admin revokes the grant (v3).
    let v3 = net
        .admin
        .set_rules(granting("Bank, admins record", RecordForOthers::default()))
        .expect("v3");
    assert_eq!(net.admin.rules().map(|r| r.version), Some(3));
    // The admin receives the offline event after v3: it stands (v2 in its past).
    let receipt = net.admin.receive(offline.clone()).expect("receive");
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
    // The clerk gets v3: its replica refuses to record for others now...
    let clerk = net.members.get_mut("clerk").expect("clerk");
    clerk.receive(v3.clone()).expect("v3 arrives");
    assert!(!clerk.records_for_others());
    speaks_for_others(clerk.write(|l| l.record_event(work(1))));
    // ... it records its own work (a change with v3 in its past) ...
    let (_, own) = clerk
        .write(|l| {
            l.record_event(
                EconomicEvent::new(Action::Work, "clerk", "ana")
                    .effort(1, "hour")
                    .input_of("garden"),
            )
        })
        .expect("own work");
    // ... and its client forges two recordings for others: one on its current past (v3 in
    // it: refused by the revocation), one backdated onto its past before v3 (a fork).
    let after = forge_event(clerk, 0xe2, &work(3));
    let backdated = forge_event_on(&before_v3, clerk.key(), clerk.network(), 0xe3, &work(4));
    let network = net.admin.network();
    let mut all = net.history.clone();
    all.extend(offline.clone());
    all.extend(v3);
    all.extend(own.clone());
    all.push(after.clone());
    // Without the backdated change: the offline event stands and the recording after v3 is
    // refused, on every replica in every order.
    let replicas = in_several_orders(network, &all, 0x5eed_0101);
    let r = &replicas[0];
    assert!(
        r.ledger().has_change(&offline[0].hash()),
        "the offline event"
    );
    assert!(
        r.ledger().has_change(&own[0].hash()),
        "the clerk's own work"
    );
    assert_eq!(r.rules().map(|r| r.version), Some(3));
    let reason = |r: &Replica, h: ChangeHash| {
        r.quarantine()
            .find(|q| q.change.hash() == h)
            .map(|q| q.reason.clone())
    };
    assert!(
        matches!(
            reason(r, after.hash()),
            Some(Rejection::SpeaksForOthers { .. })
        ),
        "{:?}",
        reason(r, after.hash())
    );
    assert_eq!(r.quarantine().count(), 1);
    // With it: backdating does not help. It forks the clerk's chain (its own work, with v3
    // in its past, is not in the backdated change's past): every replica refuses it, in
    // every order, and cuts the clerk off.
    all.push(backdated.clone());
    let replicas = in_several_orders(network, &all, 0x5eed_0201);
    let r = &replicas[0];
    assert!(!r.ledger().has_change(&backdated.hash()));
    assert!(
        matches!(
            reason(r, backdated.hash()),
            Some(Rejection::Forked { .. } | Rejection::Equivocation { .. })
        ),
        "{:?}",
        reason(r, backdated.hash())
    );
    assert!(r.ledger().has_change(&offline[0].hash()));
}

/// Deliver `all` (after its genesis) to fresh replicas in five orders and batch sizes (two
/// seeded shuffles, the seeds printed); their verdicts must be the same. The replicas.
fn in_several_orders(network: NetworkId, all: &[SignedChange], seed: u64) -> Vec<Replica> {
    let n = all.len();
    let orders: Vec<(Vec<usize>, usize)> = vec![
        ((1..n).collect(), n),
        ((1..n).collect(), 1),
        ((1..n).rev().collect(), 1),
        (shuffled(n, seed), 2),
        (shuffled(n, seed + 1), 1),
    ];
    eprintln!("seeds {seed:#x}, {:#x}", seed + 1);
    let replicas: Vec<Replica> = orders
        .iter()
        .map(|(o, b)| deliver(network, all, o, *b))
        .collect();
    let first = verdicts(&replicas[0]);
    for (i, r) in replicas.iter().enumerate().skip(1) {
        assert_eq!(verdicts(r), first, "order {i} differs from order 0");
    }
    replicas
}

// Golden files of the rule-set formats (docs/rules.md, "Rule-set formats"): a whole small
// network each, as signed changes, committed in tests/golden/:
// - `v1-rule-set.json`: format 1 (fields `name`, `version`, `rules`, no `format`), put field
//   by field as the code before format 2 wrote it (today's `set_rules` writes format 2, so
//   the writer puts the fields with Automerge directly), then bo's own work under it;
// - `v2-rule-set.json`: format 2 by `set_rules`, granting bo's agent recording for others,
//   then bo's work between ana and cy (for others), admitted by the grant.
// Test keys only: admin `ana` = 32 bytes of 0x07, member `bo` = 0x08. Written once by
// `REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --no-default-features --test rules --
// --ignored write_golden_rule_sets` (never rewritten: a new format gets a new file).

fn fixed_key(byte: u8) -> DeviceKey {
    DeviceKey::from_secret_bytes(&[byte; 32])
}

/// The golden networks' work rule (format 1 and 2 alike).
fn golden_rules() -> Vec<Rule> {
    vec![Rule {
        name: "hours-per-event".into(),
        outcome: Outcome::Refuse,
        actions: vec![Action::Work],
        check: "event.effort == null || event.effort.milli <= 8000".into(),
        message: "At most 8 hours per event.".into(),
    }]
}

fn golden_work(provider: &str, receiver: &str) -> EconomicEvent {
    EconomicEvent::new(Action::Work, provider, receiver)
        .effort(2, "hour")
        .input_of("garden")
}

#[test]
fn golden_rule_sets_of_each_format_read() {
    for (file, format, grant) in [
        ("v1-rule-set.json", 1, RecordForOthers::default()),
        ("v2-rule-set.json", 2, agents(&["bo"])),
    ] {
        let (network, changes) = read_network(file);
        let n = changes.len();
        let (r, receipt) = Replica::join(network, fixed_key(0x0a), changes).expect("join");
        assert!(receipt.refused.is_empty(), "{file}: {:?}", receipt.refused);
        assert_eq!((receipt.applied.len(), receipt.waiting), (n, 0), "{file}");
        let rules = r.rules().expect("a rule set");
        assert_eq!(
            (
                rules.format,
                rules.version,
                &rules.rules,
                &rules.record_for_others
            ),
            (format, 1, &golden_rules(), &grant),
            "{file}"
        );
        let work: Vec<(Option<Id>, Option<Id>)> = r
            .ledger()
            .events(&EventFilter::default())
            .into_iter()
            .filter(|e| e.action == Action::Work)
            .map(|e| (e.provider, e.receiver))
            .collect();
        let want = if format == 1 {
            ("bo", "ana")
        } else {
            ("ana", "cy")
        };
        assert_eq!(
            work,
            vec![(Some(Id::from(want.0)), Some(Id::from(want.1)))],
            "{file}"
        );
    }
}

#[test]
#[ignore = "writes tests/golden/v1-rule-set.json and v2-rule-set.json: REFLOW_WRITE_GOLDEN=1 cargo test -p reflow --no-default-features --test rules -- --ignored write_golden_rule_sets"]
fn write_golden_rule_sets() {
    assert_eq!(
        std::env::var("REFLOW_WRITE_GOLDEN").as_deref(),
        Ok("1"),
        "set REFLOW_WRITE_GOLDEN=1 to write the golden files"
    );
    assert_eq!(
        reflow::rules::RULE_SET_FORMAT,
        2,
        "name the files for the new format"
    );
    for format in [1u32, 2] {
        let path = golden(&format!("v{format}-rule-set.json"));
        assert!(
            !path.exists(),
            "{} exists: a golden file is never rewritten",
            path.display()
        );
        let (mut ana, mut history) =
            Replica::create_network("golden rules", fixed_key(7), Agent::person("ana", "Ana"))
                .expect("create");
        let (_, c) = ana
            .write(|l| {
                l.create(Agent::person("bo", "Bo"))?;
                l.create(Agent::person("cy", "Cy"))?;
                l.create(Unit::new("hour", "hour", "h"))?;
                l.create(Process::new("garden", "Garden", None))
            })
            .expect("objects");
        history.extend(c);
        history.extend(
            ana.add_member(fixed_key(8).id(), Role::Member, Id::from("bo"))
                .expect("add bo"),
        );
        let published = if format == 1 {
            let rules = serde_json::to_string(&golden_rules()).expect("json");
            let raw = raw_rules_change(
                &ana,
                &fixed_key(7),
                0x01,
                &[
                    ("name", "\"Golden rules\""),
                    ("version", "1"),
                    ("rules", &rules),
                ],
            );
            vec![raw]
        } else {
            let mut set = RuleSet::new("Golden rules", 1, golden_rules());
            set.record_for_others = agents(&["bo"]);
            ana.set_rules(set).expect("publish")
        };
        if format == 1 {
            let receipt = ana.receive(published.clone()).expect("ana's own");
            assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        }
        history.extend(published);
        let (mut bo, receipt) =
            Replica::join(ana.network(), fixed_key(8), history.clone()).expect("join");
        assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
        let event = if format == 1 {
            golden_work("bo", "ana")
        } else {
            golden_work("ana", "cy")
        };
        let (_, c) = bo.write(|l| l.record_event(event)).expect("bo's work");
        history.extend(c);
        let changes: Vec<serde_json::Value> = history
            .iter()
            .map(|c| {
                serde_json::json!({
                    "change": hex::encode(c.change.raw_bytes()),
                    "signature": hex::encode(c.signature.0),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "network": ana.network().to_string(),
            "changes": changes,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    }
}
