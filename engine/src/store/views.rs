//! The `reflow_views` table (store version 3): the folded views of each network's latest
//! snapshot, so that opening a ledger does not fold every event again. A cache: a row that
//! is missing, stale (folded at other heads) or damaged only costs a fold (docs/storage.md).

use redb::TableDefinition;

use super::{guarded, Ctx, Store};
use crate::error::Result;

/// Network key → a views value (`crate::views::stored`, docs/storage.md "A views value").
pub(super) const VIEWS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("reflow_views");

/// Version 3 adds the table of stored views.
pub(super) fn add_views_table(tx: &redb::WriteTransaction) -> std::result::Result<(), redb::Error> {
    tx.open_table(VIEWS)?;
    Ok(())
}

/// Write `views` as `network`'s stored views inside `tx`.
pub(super) fn write_views(
    store: &Store,
    tx: &redb::WriteTransaction,
    network: &str,
    views: &[u8],
) -> Result<()> {
    let mut t = tx.open_table(VIEWS).ctx(store.path(), "open views")?;
    t.insert(network, views).ctx(store.path(), "write views")?;
    Ok(())
}

impl Store {
    /// The views stored with `network`'s snapshot, if any.
    pub(super) fn stored_views(&self, network: &str) -> Result<Option<Vec<u8>>> {
        guarded(self.path(), "read views", || {
            let tx = self.read_tx()?;
            let t = match tx.open_table(VIEWS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e).ctx(self.path(), "open views"),
            };
            Ok(t.get(network)
                .ctx(self.path(), "read views")?
                .map(|v| v.value().to_vec()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use redb::{Database, Durability};
    use sha2::Digest as _;

    use super::*;
    use crate::views::StoredViewsError;
    use crate::{
        Action, ActorId, Agent, EconomicEvent, Ledger, Quantity, ResourceDescription, Unit,
        ViewsOrigin,
    };

    fn actor(n: u8) -> ActorId {
        ActorId::from([n; 16])
    }

    fn transfer(q: &str) -> EconomicEvent {
        EconomicEvent::new(Action::Transfer, "ana", "bo")
            .resource("flour")
            .to_resource("bread")
            .quantity(q.parse::<Quantity>().expect("decimal"), "kg")
    }

    /// A store holding `net`: flour and bread, transfers (one overdraws flour), a correction,
    /// compacted (so its views are stored), then `tail` more transfers after the snapshot.
    fn store_with_views(dir: &Path, tail: usize) -> Store {
        let store = Store::open(dir.join("node.redb")).expect("create");
        let mut l = Ledger::new_network("views test", actor(1)).expect("genesis");
        l.create(Unit::new("kg", "kilogram", "kg")).expect("unit");
        l.create(Agent::person("ana", "Ana")).expect("agent");
        l.create(Agent::person("bo", "Bo")).expect("agent");
        for (rid, who) in [("flour", "ana"), ("bread", "bo")] {
            l.record_event(
                EconomicEvent::new(Action::Produce, who, who)
                    .quantity(10, "kg")
                    .creating(ResourceDescription::new(rid, rid)),
            )
            .expect("produce");
        }
        let mut durable = store.create_ledger("net", l).expect("create ledger");
        let first = durable.record_event(transfer("4")).expect("transfer");
        durable.record_event(transfer("9")).expect("overdraw");
        durable
            .record_event(transfer("3").correcting(first))
            .expect("correction");
        durable.compact().expect("compact");
        for _ in 0..tail {
            durable.record_event(transfer("0.5")).expect("tail");
        }
        store
    }

    /// Open `net` the way `open_ledger` does; its views must equal a fold from scratch.
    fn open(store: &Store) -> ViewsOrigin {
        let (bytes, _) = store.read_ledger_bytes("net").expect("bytes");
        let views = store.stored_views("net").expect("views");
        let (ledger, origin) =
            Ledger::load_with_views(&bytes, actor(9), views.as_deref()).expect("load");
        assert_eq!(
            ledger.snapshot(),
            ledger.snapshot_from_scratch(),
            "{origin:?}"
        );
        assert!(ledger.views_match_a_fold(), "{origin:?}");
        assert!(!ledger.conflicts().is_empty(), "the overdraw is listed");
        assert_eq!(
            ledger.event_count(),
            Ledger::load(&bytes, actor(8)).expect("load").event_count()
        );
        origin
    }

    fn put_views(store: &Store, value: &[u8]) {
        put_views_of(store, "net", value);
    }

    fn put_views_of(store: &Store, network: &str, value: &[u8]) {
        let tx = store.write_tx(Durability::Immediate).expect("tx");
        write_views(store, &tx, network, value).expect("write");
        tx.commit().expect("commit");
    }

    #[test]
    fn views_stored_with_the_snapshot_are_used_on_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = store_with_views(tmp.path(), 0);
        assert_eq!(open(&store), ViewsOrigin::Stored);
        let durable = store.open_ledger("net", actor(7)).expect("open");
        assert_eq!(
            durable.ledger().snapshot(),
            durable.ledger().snapshot_from_scratch()
        );
    }

    #[test]
    fn changes_stored_after_the_views_are_folded_into_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = store_with_views(tmp.path(), 5);
        assert_eq!(open(&store), ViewsOrigin::StoredAndTail);
    }

    #[test]
    fn a_store_without_views_folds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = store_with_views(tmp.path(), 0);
        let tx = store.write_tx(Durability::Immediate).expect("tx");
        tx.open_table(VIEWS)
            .expect("views")
            .remove("net")
            .expect("remove");
        tx.commit().expect("commit");
        assert_eq!(open(&store), ViewsOrigin::Folded);
    }

    #[test]
    fn corrupt_stored_views_are_refused_and_folded_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = store_with_views(tmp.path(), 0);
        let good = store.stored_views("net").expect("read").expect("stored");
        assert!(good.len() > 300, "{} bytes", good.len());

        // A flipped byte in the body: the checksum catches it.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        put_views(&store, &bad);
        assert_eq!(
            open(&store),
            ViewsOrigin::Refused(StoredViewsError::Checksum)
        );

        // Another fold version (a build with other fold rules wrote it).
        let mut bad = good.clone();
        bad[1] = bad[1].wrapping_add(1);
        put_views(&store, &bad);
        assert!(matches!(
            open(&store),
            ViewsOrigin::Refused(StoredViewsError::Version { .. })
        ));

        // Truncated, down to nothing.
        for len in [good.len() - 3, 40, 10, 0] {
            put_views(&store, &good[..len]);
            assert!(
                matches!(open(&store), ViewsOrigin::Refused(_)),
                "truncated to {len}"
            );
        }

        // Garbage that passes the checksum (rewritten after the damage): refused on decode.
        let mut bad = good.clone();
        for b in bad.iter_mut().skip(200).take(20) {
            *b = 0xff;
        }
        let digest = sha2::Sha256::digest(&bad[37..]);
        bad[5..37].copy_from_slice(&digest);
        put_views(&store, &bad);
        assert!(matches!(
            open(&store),
            ViewsOrigin::Refused(
                StoredViewsError::Malformed(_) | StoredViewsError::Inconsistent(_)
            )
        ));

        // Put back, used again.
        put_views(&store, &good);
        assert_eq!(open(&store), ViewsOrigin::Stored);
    }

    #[test]
    fn views_folded_at_heads_the_document_lacks_are_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = store_with_views(tmp.path(), 0);
        // The views of a replica that went on alone: its heads are not in the stored document.
        let (bytes, _) = store.read_ledger_bytes("net").expect("bytes");
        let mut other = Ledger::load(&bytes, actor(5)).expect("load");
        other.record_event(transfer("1")).expect("record");
        put_views(&store, &other.encode_views());
        assert_eq!(open(&store), ViewsOrigin::Stale);
        // The views of another network's ledger.
        let mut stranger = Ledger::new_network("another", actor(6)).expect("genesis");
        stranger
            .create(Unit::new("kg", "kilogram", "kg"))
            .expect("unit");
        put_views(&store, &stranger.encode_views());
        assert_eq!(open(&store), ViewsOrigin::Stale);
    }

    /// A new network "net" created by a new device, stored in `store`.
    fn new_market(store: &Store) -> (crate::DeviceKey, crate::NetworkId, crate::DurableReplica) {
        let key = crate::DeviceKey::generate().expect("key");
        let (replica, history) =
            crate::Replica::create_network("net", key.clone(), Agent::organization("m", "Market"))
                .expect("network");
        let network = replica.network();
        let durable = store.create_replica(replica, &history).expect("store");
        (key, network, durable)
    }

    /// A replica under a rule set of refuse rules only: its events pass them, so a live
    /// replica keeps no rule input for them, and the store, reopened, cannot tell; the
    /// stored views must still be used on open (they were refused, and every open folded
    /// from scratch, before the digest counted only inputs that can find something).
    #[test]
    fn a_replica_under_refuse_rules_only_opens_with_its_stored_views() {
        use crate::rules::{Outcome, Rule, RuleSet};

        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path().join("node.redb")).expect("create");
        let (key, network, mut durable) = new_market(&store);
        durable
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                l.create(Agent::person("ana", "Ana"))?;
                Ok(())
            })
            .expect("setup");
        durable
            .set_rules(RuleSet::new(
                "market",
                1,
                vec![Rule {
                    name: "small".into(),
                    outcome: Outcome::Refuse,
                    actions: vec![],
                    check: "event.quantity == null || event.quantity.milli <= 50000".into(),
                    message: "too much".into(),
                }],
            ))
            .expect("rules");
        for i in 0..5 {
            durable
                .record_event(
                    EconomicEvent::new(Action::Produce, "ana", "ana")
                        .quantity(10, "kg")
                        .creating(ResourceDescription::new(format!("lot{i}"), "lot")),
                )
                .expect("record");
        }
        durable.compact().expect("compact");
        let snapshot = durable.ledger().snapshot();
        drop(durable);
        let d = store.open_replica(&network, key.clone()).expect("open");
        assert_eq!(d.ledger().views_origin(), &ViewsOrigin::Stored);
        assert!(d.ledger().views_match_a_fold());
        assert_eq!(d.ledger().snapshot(), snapshot);
    }

    /// A replica under a rule set with flag rules (one reads the resource's state), events
    /// that break them on resources and off (work), a correction and a commitment fulfilled:
    /// compacted, then opened with its stored views, equal to a fold with the same rules;
    /// changes after the snapshot are judged as they fold in; views judged by other rules
    /// (or, opened as a bare ledger, by none) are refused and folded again.
    #[test]
    fn a_replica_under_rules_opens_with_its_stored_views() {
        use crate::rules::{Outcome, Rule, RuleSet};
        use crate::Commitment;

        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path().join("node.redb")).expect("create");
        let (key, network, mut durable) = new_market(&store);
        durable
            .write(|l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                l.create(Unit::new("hour", "hour", "h"))?;
                l.create(Agent::person("ana", "Ana"))?;
                l.create(Agent::person("bo", "Bo"))?;
                let mut c = Commitment::new(Action::Work, "bo", "ana");
                c.id = crate::Id::from("shift");
                c.effort_quantity = Some(crate::Measure::new(Quantity::from_i64(4), "hour"));
                l.create(c)?;
                Ok(())
            })
            .expect("setup");
        let rule = |name: &str, check: &str| Rule {
            name: name.into(),
            outcome: Outcome::Flag,
            actions: vec![],
            check: check.into(),
            message: format!("{name} broken"),
        };
        durable
            .set_rules(RuleSet::new(
                "market",
                1,
                vec![
                    rule(
                        "small",
                        "event.quantity == null || event.quantity.milli <= 5000",
                    ),
                    rule(
                        "covered",
                        "resource == null || event.quantity == null || resource.onhand.milli >= event.quantity.milli",
                    ),
                    rule("short", "event.effort == null || event.effort.milli <= 3000"),
                ],
            ))
            .expect("rules");
        let record =
            |d: &mut crate::DurableReplica, e: crate::NewEvent| d.record_event(e).expect("record");
        for (rid, who) in [("flour", "ana"), ("bread", "bo")] {
            record(
                &mut durable,
                EconomicEvent::new(Action::Produce, who, who)
                    .quantity(10, "kg")
                    .creating(ResourceDescription::new(rid, rid)),
            );
        }
        let first = record(&mut durable, transfer("4").into());
        record(&mut durable, transfer("9").into());
        record(&mut durable, transfer("3").correcting(first).into());
        let work = |h: i64| {
            EconomicEvent::new(Action::Work, "bo", "ana")
                .effort(Quantity::from_i64(h), "hour")
                .fulfilling("shift")
        };
        record(&mut durable, work(2).into());
        record(&mut durable, work(5).into());
        durable.compact().expect("compact");
        let rules_found = |l: &Ledger| {
            l.conflicts()
                .iter()
                .filter(|c| matches!(c, crate::Conflict::RuleViolation { .. }))
                .count()
        };
        let before = rules_found(durable.ledger());
        assert!(before >= 3, "{:?}", durable.ledger().conflicts());
        let snapshot = durable.ledger().snapshot();
        drop(durable);

        let reopen = |store: &Store| {
            let d = store.open_replica(&network, key.clone()).expect("open");
            assert!(d.ledger().views_match_a_fold());
            d
        };
        let d = reopen(&store);
        assert_eq!(d.ledger().views_origin(), &ViewsOrigin::Stored);
        assert_eq!(d.ledger().snapshot(), snapshot);
        assert_eq!(rules_found(d.ledger()), before);

        // Opened as a bare ledger: no rules, so the stored findings cannot stand.
        let (bytes, _) = store
            .read_ledger_bytes(&network.to_string())
            .expect("bytes");
        let stored = store.stored_views(&network.to_string()).expect("read");
        let (bare, origin) =
            Ledger::load_with_views(&bytes, actor(9), stored.as_deref()).expect("load");
        assert_eq!(origin, ViewsOrigin::Refused(StoredViewsError::Rules));
        assert!(bare.views_match_a_fold());
        assert_eq!(rules_found(&bare), 0);

        // Views that claim other rules: refused, folded with the replica's.
        let good = stored.expect("stored views");
        let s = crate::views::stored::decode(&good).expect("decode");
        let mut heads = s.heads.clone();
        heads.sort();
        put_views_of(
            &store,
            &network.to_string(),
            &crate::views::stored::encode(&s.views, s.events_len, &heads, [7; 32]),
        );
        let d = reopen(&store);
        assert_eq!(
            d.ledger().views_origin(),
            &ViewsOrigin::Refused(StoredViewsError::Rules)
        );
        assert_eq!(d.ledger().snapshot(), snapshot);
        put_views_of(&store, &network.to_string(), &good);

        // Changes after the snapshot: folded on top, judged by the rules.
        let mut d = reopen(&store);
        record(&mut d, transfer("6").into());
        record(&mut d, work(4).into());
        let after = d.ledger().snapshot();
        let found = rules_found(d.ledger());
        // 6 kg: not small, more than flour holds; 4 hours: not short.
        assert_eq!(found, before + 3);
        drop(d);
        let d = reopen(&store);
        assert_eq!(d.ledger().views_origin(), &ViewsOrigin::StoredAndTail);
        assert_eq!(d.ledger().snapshot(), after);
        assert_eq!(rules_found(d.ledger()), found);
    }

    #[test]
    fn a_version_2_store_gains_the_views_table() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("node.redb");
        drop(store_with_views(tmp.path(), 2));
        {
            let db = Database::open(&path).expect("open");
            let tx = db.begin_write().expect("tx");
            assert!(tx.delete_table(VIEWS).expect("delete"));
            {
                let mut meta = tx.open_table(super::super::META).expect("meta");
                meta.insert(super::super::META_VERSION, 2u64.to_le_bytes().as_slice())
                    .expect("version");
            }
            tx.commit().expect("commit");
        }
        let store = Store::open(&path).expect("migrated");
        assert_eq!(store.stored_views("net").expect("read"), None);
        assert_eq!(open(&store), ViewsOrigin::Folded);
        let tx = store.read_tx().expect("tx");
        let meta = tx.open_table(super::super::META).expect("meta");
        let version = meta
            .get(super::super::META_VERSION)
            .expect("read")
            .expect("version")
            .value()
            .to_vec();
        assert_eq!(version, super::super::STORE_VERSION.to_le_bytes());
    }
}
