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
        assert!(!ledger.conflicts().is_empty(), "the overdraw is listed");
        assert_eq!(
            ledger.event_count(),
            Ledger::load(&bytes, actor(8)).expect("load").event_count()
        );
        origin
    }

    fn put_views(store: &Store, value: &[u8]) {
        let tx = store.write_tx(Durability::Immediate).expect("tx");
        write_views(store, &tx, "net", value).expect("write");
        tx.commit().expect("commit");
    }

    #[test]
    #[ignore = "stored views are not used on open until their encoding covers planning and rules (views::stored::IN_USE)"]
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
    #[ignore = "stored views are not used on open until their encoding covers planning and rules (views::stored::IN_USE)"]
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
    #[ignore = "stored views are not used on open until their encoding covers planning and rules (views::stored::IN_USE)"]
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
    #[ignore = "stored views are not used on open until their encoding covers planning and rules (views::stored::IN_USE)"]
    fn views_folded_at_heads_the_document_lacks_are_stale() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = store_with_views(tmp.path(), 0);
        // The views of a replica that went on alone: its heads are not in the stored document.
        let (bytes, _) = store.read_ledger_bytes("net").expect("bytes");
        let mut other = Ledger::load(&bytes, actor(5)).expect("load");
        other.record_event(transfer("1")).expect("record");
        put_views(&store, &other.encode_views());
        assert_eq!(open(&store), ViewsOrigin::Stale);
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
