//! Durable storage on redb: a node's ledgers survive crashes and open fast.
//!
//! One redb file per node holds, per network: every Automerge change not yet folded into a
//! snapshot (keyed by change hash), the latest compacted snapshot, a slot for each change's
//! signature (filled by the identity layer), sync state per peer, and node metadata. The
//! byte-level layout, versioning and durability contract are in docs/storage.md.
//!
//! The ledger core stays pure: [`DurableLedger`] wraps a [`Ledger`] and writes to redb the
//! changes each mutation produced before it returns.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use automerge::{ActorId, Change, ChangeHash};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageBackend,
    StorageError, TableDefinition, TableError,
};
use tracing::{debug, info, info_span, warn};

use crate::error::{Error, Result};
use crate::Ledger;

/// The marker stored under `meta/format`: this redb file is a Reflow store.
pub const STORE_FORMAT: &[u8] = b"reflow-store";

/// The store layout version this build writes (see docs/storage.md).
pub const STORE_VERSION: u64 = 5;

/// The version tag of an encoded snapshot value.
const SNAPSHOT_ENCODING: u8 = 1;

const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("reflow_meta");
const NETWORKS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("reflow_networks");
const CHANGES: TableDefinition<'static, (&'static str, &'static [u8; 32]), &'static [u8]> =
    TableDefinition::new("reflow_changes");
const SIGNATURES: TableDefinition<'static, (&'static str, &'static [u8; 32]), &'static [u8]> =
    TableDefinition::new("reflow_signatures");
const SNAPSHOTS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("reflow_snapshots");
const QUARANTINE: TableDefinition<'static, (&'static str, &'static [u8; 32]), &'static [u8]> =
    TableDefinition::new("reflow_quarantine");
const SYNC_STATES: TableDefinition<'static, (&'static str, &'static [u8]), &'static [u8]> =
    TableDefinition::new("reflow_sync_states");

const META_FORMAT: &str = "format";
const META_VERSION: &str = "version";

/// Create the tables of a new store and write its format marker and version.
fn init_tables(path: &Path, db: &Database) -> Result<()> {
    let tx = db.begin_write().ctx(path, "begin write")?;
    {
        let mut meta = tx.open_table(META).ctx(path, "create tables")?;
        meta.insert(META_FORMAT, STORE_FORMAT)
            .ctx(path, "write meta")?;
        meta.insert(META_VERSION, STORE_VERSION.to_le_bytes().as_slice())
            .ctx(path, "write meta")?;
        for table in [NETWORKS, SNAPSHOTS] {
            tx.open_table(table).ctx(path, "create tables")?;
        }
        for table in [CHANGES, SIGNATURES, QUARANTINE] {
            tx.open_table(table).ctx(path, "create tables")?;
        }
        tx.open_table(SYNC_STATES).ctx(path, "create tables")?;
        tx.open_table(views::VIEWS).ctx(path, "create tables")?;
        tx.open_table(cut_off::CUT_OFF).ctx(path, "create tables")?;
    }
    tx.commit().ctx(path, "commit")
}

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// A named step that upgrades a store from `from` to `from + 1` inside one write
/// transaction. [`Store::open`] applies every step a file needs, in order.
#[derive(Clone, Copy)]
pub(crate) struct Migration {
    /// The version the step upgrades from.
    pub from: u64,
    /// A name for logs and docs.
    pub name: &'static str,
    /// The step.
    pub run: fn(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
}

/// The migrations of this build.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 1,
        name: "v1-to-v2-quarantine-table",
        run: add_quarantine_table,
    },
    Migration {
        from: 2,
        name: "v2-to-v3-views-table",
        run: views::add_views_table,
    },
    Migration {
        from: 3,
        name: "v3-to-v4-cut-off-table",
        run: cut_off::add_cut_off_table,
    },
    Migration {
        from: 4,
        name: "v4-to-v5-attested-rows",
        run: allow_attested_rows,
    },
];

/// Version 5 lets a signature row hold 32 bytes (the change is covered by the attestation of
/// the change those bytes name, docs/storage.md) beside the 64-byte signatures of version 4,
/// which keep their meaning: nothing to rewrite, only the version, so that an older build
/// refuses a store it would misread.
fn allow_attested_rows(_tx: &redb::WriteTransaction) -> std::result::Result<(), redb::Error> {
    Ok(())
}

/// Version 2 adds the table of refused changes (the identity layer's quarantine).
fn add_quarantine_table(tx: &redb::WriteTransaction) -> std::result::Result<(), redb::Error> {
    tx.open_table(QUARANTINE)?;
    Ok(())
}

/// A node's store: one redb file. Cheap to clone; all clones share the open database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Slot>,
    path: Arc<PathBuf>,
}

/// How a store's database is opened again after an I/O error (redb refuses every operation
/// of a handle that saw one, `PreviousIo`, until it is closed and reopened).
type Opener = dyn Fn() -> std::result::Result<Database, DatabaseError> + Send + Sync;

/// The open database, replaceable by [`Store::reopen`].
struct Slot {
    db: RwLock<Option<Database>>,
    opener: Box<Opener>,
}

impl Slot {
    fn new(db: Database, opener: Box<Opener>) -> Arc<Slot> {
        Arc::new(Slot {
            db: RwLock::new(Some(db)),
            opener,
        })
    }

    fn file(db: Database, path: &Path) -> Arc<Slot> {
        let path = path.to_owned();
        Slot::new(db, Box::new(move || builder().open(&path)))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Database) -> std::result::Result<T, redb::Error>,
    ) -> std::result::Result<T, redb::Error> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(redb::Error::DatabaseClosed),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Turn any redb error into Reflow's, with the file and what was being done.
trait Ctx<T> {
    fn ctx(self, path: &Path, op: &'static str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, path: &Path, op: &'static str) -> Result<T> {
        self.map_err(|e| storage(path, op, e.into()))
    }
}

fn storage(path: &Path, op: &'static str, e: redb::Error) -> Error {
    match e {
        redb::Error::Corrupted(detail) => Error::CorruptStore {
            path: path.to_owned(),
            detail,
        },
        redb::Error::DatabaseAlreadyOpen => Error::StoreLocked {
            path: path.to_owned(),
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Error::StoreFull {
            path: path.to_owned(),
            op,
        },
        other => Error::Storage {
            path: path.to_owned(),
            op,
            source: Box::new(other),
        },
    }
}

/// Run a read of on-disk data whose integrity is unknown. redb returns `Corrupted` for most
/// damage, but some damaged pages reach an `unreachable!()` inside it (redb 4.6, btree.rs):
/// such a panic is turned into [`Error::CorruptStore`] instead of taking the node down.
fn guarded<T>(path: &Path, op: &'static str, read: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "redb stopped on a damaged page".to_owned());
            warn!(op, %detail, "redb panicked reading the store; treating it as damaged");
            Err(Error::CorruptStore {
                path: path.to_owned(),
                detail: format!("{op}: {detail}"),
            })
        }
    }
}

fn open_error(path: &Path, e: DatabaseError) -> Error {
    match e {
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::CorruptStore {
                path: path.to_owned(),
                detail: format!("the file is truncated ({io})"),
            }
        }
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Error::StoreLocked {
                path: path.to_owned(),
            }
        }
        DatabaseError::Storage(StorageError::Corrupted(detail)) => Error::CorruptStore {
            path: path.to_owned(),
            detail,
        },
        DatabaseError::UpgradeRequired(v) => Error::NotAStore {
            path: path.to_owned(),
            detail: format!("a redb file of an older format ({v}) that Reflow never wrote"),
        },
        other => storage(path, "open", other.into()),
    }
}

/// What the `meta` table says about a file.
enum MetaCheck {
    Current,
    Older(u64),
}

fn check_meta<T: ReadableTable<&'static str, &'static [u8]>>(
    path: &Path,
    meta: &T,
) -> Result<MetaCheck> {
    let not_a_store = |detail: &str| Error::NotAStore {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let format = meta
        .get(META_FORMAT)
        .ctx(path, "read meta")?
        .ok_or_else(|| not_a_store("a redb file without Reflow's format marker"))?;
    if format.value() != STORE_FORMAT {
        return Err(not_a_store("a redb file with another format marker"));
    }
    let version = meta
        .get(META_VERSION)
        .ctx(path, "read meta")?
        .ok_or_else(|| not_a_store("no version in the meta table"))?;
    let bytes: [u8; 8] = version
        .value()
        .try_into()
        .map_err(|_| not_a_store("the version is not 8 bytes"))?;
    let version = u64::from_le_bytes(bytes);
    if version > STORE_VERSION {
        return Err(Error::UnsupportedStoreVersion {
            path: path.to_owned(),
            found: version,
            supported: STORE_VERSION,
        });
    }
    if version < STORE_VERSION {
        return Ok(MetaCheck::Older(version));
    }
    Ok(MetaCheck::Current)
}

/// Check a file read-only: is it a Reflow store this build can open? Never writes.
fn inspect_read_only(path: &Path) -> Result<MetaCheck> {
    let db = builder()
        .open_read_only(path)
        .map_err(|e| open_error(path, e))?;
    let tx = db.begin_read().ctx(path, "begin read")?;
    let meta = match tx.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => {
            return Err(Error::NotAStore {
                path: path.to_owned(),
                detail: "a redb file without Reflow's meta table".into(),
            })
        }
        Err(e) => return Err(storage(path, "open meta", e.into())),
    };
    let check = check_meta(path, &meta)?;
    // Touch every page the store will serve, read-only, so that damage is found before the
    // file is ever opened for writing (a writer would rewrite allocator state on close).
    scan_table(path, &tx, NETWORKS)?;
    scan_table(path, &tx, SNAPSHOTS)?;
    scan_table(path, &tx, CHANGES)?;
    scan_table(path, &tx, SIGNATURES)?;
    scan_table(path, &tx, QUARANTINE)?;
    scan_table(path, &tx, SYNC_STATES)?;
    scan_table(path, &tx, views::VIEWS)?;
    scan_table(path, &tx, cut_off::CUT_OFF)?;
    Ok(check)
}

/// The most memory redb's page cache of one store may hold, in bytes (redb's own default is
/// 1 GiB). A store reads its large values once (the snapshot and the views on open, a
/// compaction's rows) and then touches a few pages per commit, so a cache that keeps every page
/// it ever read only holds memory: at 100,000 events it kept 45 MB after an open (the pages
/// read by the space statistics of the open and by the snapshot, views and signatures), which
/// the operating system's page cache holds anyway. See docs/storage.md, "Memory".
const CACHE_BYTES: usize = 16 << 20;

/// A redb builder with this store's settings ([`CACHE_BYTES`]).
fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// Below this many fragmented bytes, a file is not compacted when opened.
const RECLAIM_MIN_BYTES: u64 = 256 << 10;

/// Give the file's free pages back to the file system when more than half of it is free
/// space (after ledger compactions, which free the folded changes' pages): redb's
/// `Database::compact` needs the database to itself, which it has only right after opening.
/// It runs as redb transactions, so a crash in the middle loses nothing; a failure is logged
/// and the store opens anyway (the space is only reclaimed later).
fn reclaim_free_pages(path: &Path, db: &mut Database) {
    let stats = (|| -> std::result::Result<redb::DatabaseStats, redb::Error> {
        let tx = db.begin_write()?;
        let stats = tx.stats();
        tx.abort()?;
        Ok(stats?)
    })();
    let stats = match stats {
        Ok(stats) => stats,
        Err(e) => {
            warn!(error = %e, "could not read the store's space statistics");
            return;
        }
    };
    let (free, used) = (
        stats.fragmented_bytes(),
        stats.stored_bytes() + stats.metadata_bytes(),
    );
    if free < RECLAIM_MIN_BYTES || free < used {
        return;
    }
    let span = info_span!("store_reclaim", path = %path.display(), free, used);
    let _enter = span.enter();
    match db.compact() {
        Ok(_) => info!("free pages returned to the file system"),
        Err(e) => warn!(error = %e, "could not compact the store file; it opens as it is"),
    }
}

fn scan_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    path: &Path,
    tx: &redb::ReadTransaction,
    table: TableDefinition<'static, K, V>,
) -> Result<()> {
    let t = match tx.open_table(table) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(storage(path, "open table", e.into())),
    };
    for row in t.iter().ctx(path, "scan")? {
        let (k, v) = row.ctx(path, "scan")?;
        std::hint::black_box((k.value(), v.value()));
    }
    Ok(())
}

impl Store {
    /// Open the store at `path`, creating it if it does not exist.
    ///
    /// A file that is not a redb file, not a Reflow store, of a newer layout, damaged, or
    /// open in another process gives a typed error and is left exactly as it was. A file that
    /// was not closed cleanly (the process was killed) is repaired by redb; a copy of the file
    /// is kept beside it until the repair has succeeded and the store is verified.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path.as_ref(), MIGRATIONS)
    }

    pub(crate) fn open_with(path: &Path, migrations: &[Migration]) -> Result<Store> {
        let span = info_span!("store_open", path = %path.display());
        let _enter = span.enter();
        if !path.exists() {
            return Store::create(path);
        }
        check_magic(path)?;
        let check = match guarded(path, "inspect", || inspect_read_only(path)) {
            Ok(check) => check,
            Err(Error::Storage { source, .. }) if matches!(*source, redb::Error::RepairAborted) => {
                return Store::open_repairing(path, migrations);
            }
            Err(e) => return Err(e),
        };
        if let MetaCheck::Older(v) = check {
            migration_path(path, v, migrations)?;
        }
        let mut db = builder().open(path).map_err(|e| open_error(path, e))?;
        reclaim_free_pages(path, &mut db);
        let store = Store {
            db: Slot::file(db, path),
            path: Arc::new(path.to_owned()),
        };
        if let MetaCheck::Older(v) = check {
            store.migrate(v, migrations)?;
        }
        Ok(store)
    }

    fn create(path: &Path) -> Result<Store> {
        info!("creating a new store");
        let db = builder().create(path).map_err(|e| open_error(path, e))?;
        init_tables(path, &db)?;
        Ok(Store {
            db: Slot::file(db, path),
            path: Arc::new(path.to_owned()),
        })
    }

    /// Open (or create, if it is empty) a store kept by a custom redb backend instead of a
    /// file, e.g. the fault-injecting [`fault::FaultyDisk`]. `open` makes a fresh backend
    /// handle over the same storage; it is called again whenever the store is reopened after
    /// an I/O error ([`Store::reopen`]). `label` names the store in errors and logs. The
    /// checks of [`Store::open`] apply, except those on the file itself (redb's magic bytes,
    /// the copy kept while repairing): a damaged backend gives [`Error::CorruptStore`].
    #[doc(hidden)]
    pub fn open_backend<B: StorageBackend>(
        label: impl Into<PathBuf>,
        open: impl Fn() -> B + Send + Sync + 'static,
    ) -> Result<Store> {
        let path: PathBuf = label.into();
        let _span = info_span!("store_open_backend", path = %path.display()).entered();
        let opener: Box<Opener> = Box::new(move || builder().create_with_backend(open()));
        let db = guarded(&path, "open", || opener().map_err(|e| open_error(&path, e)))?;
        let fresh = guarded(&path, "inspect", || {
            let tx = db.begin_read().ctx(&path, "begin read")?;
            match tx.open_table(META) {
                Ok(meta) => match check_meta(&path, &meta)? {
                    MetaCheck::Current => Ok(false),
                    MetaCheck::Older(v) => Err(Error::NotAStore {
                        path: path.clone(),
                        detail: format!(
                            "a store of version {v} over a custom backend (migrate it as a file)"
                        ),
                    }),
                },
                Err(TableError::TableDoesNotExist(_)) => Ok(true),
                Err(e) => Err(storage(&path, "open meta", e.into())),
            }
        })?;
        if fresh {
            init_tables(&path, &db)?;
        }
        Ok(Store {
            db: Slot::new(db, opener),
            path: Arc::new(path),
        })
    }

    /// Close the database and open it again: after an I/O error (a failed write or fsync,
    /// a full disk) redb refuses every operation of the handle that saw it. Opening repairs
    /// the file if the failed commit left it half-written. Every clone of this store uses the
    /// new handle.
    pub fn reopen(&self) -> Result<()> {
        let path = self.path.as_path();
        let _span = info_span!("store_reopen", path = %path.display()).entered();
        let mut slot = self.db.db.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle must be closed first: it holds the file's lock.
        drop(slot.take());
        let db = guarded(path, "reopen", || {
            (self.db.opener)().map_err(|e| open_error(path, e))
        })?;
        {
            let tx = db.begin_read().ctx(path, "begin read")?;
            let meta = tx.open_table(META).ctx(path, "open meta")?;
            check_meta(path, &meta)?;
        }
        // Settle: an empty durable commit fsyncs whatever a failed commit left in the page
        // cache, so that what the store now shows is also what survives a power loss.
        let tx = db.begin_write().ctx(path, "begin write")?;
        tx.commit().ctx(path, "commit")?;
        *slot = Some(db);
        info!("store reopened");
        Ok(())
    }

    /// The file was not closed cleanly: let redb repair it, keeping a copy until it is known
    /// good, so that a damaged file is never made worse.
    fn open_repairing(path: &Path, migrations: &[Migration]) -> Result<Store> {
        warn!("store was not closed cleanly; repairing");
        let backup = path.with_extension("before-repair");
        fs::copy(path, &backup).map_err(|e| Error::Storage {
            path: path.to_owned(),
            op: "copy before repair",
            source: Box::new(redb::Error::Io(e)),
        })?;
        let restore = |err: Error| -> Error {
            if let Err(e) = fs::rename(&backup, path) {
                warn!(error = %e, "could not put the original file back after a failed repair");
            }
            err
        };
        let db = match guarded(path, "repair", || {
            builder().open(path).map_err(|e| open_error(path, e))
        }) {
            Ok(db) => db,
            Err(e) => return Err(restore(e)),
        };
        let check = (|| {
            let tx = db.begin_read().ctx(path, "begin read")?;
            let meta = tx.open_table(META).map_err(|_| Error::NotAStore {
                path: path.to_owned(),
                detail: "a redb file without Reflow's meta table".into(),
            })?;
            check_meta(path, &meta)
        })();
        let check = check.and_then(|c| {
            if let MetaCheck::Older(v) = c {
                migration_path(path, v, migrations)?;
            }
            Ok(c)
        });
        let check = match check {
            Ok(c) => c,
            Err(e) => {
                drop(db);
                return Err(restore(e));
            }
        };
        let store = Store {
            db: Slot::file(db, path),
            path: Arc::new(path.to_owned()),
        };
        if let MetaCheck::Older(v) = check {
            store.migrate(v, migrations)?;
        }
        let _ = fs::remove_file(&backup);
        Ok(store)
    }

    fn migrate(&self, mut version: u64, migrations: &[Migration]) -> Result<()> {
        let path = self.path.as_path();
        migration_path(path, version, migrations)?;
        let tx = self
            .db
            .with(|db| Ok(db.begin_write()?))
            .ctx(path, "begin write")?;
        while version < STORE_VERSION {
            let Some(step) = migrations.iter().find(|m| m.from == version) else {
                return Err(Error::NotAStore {
                    path: path.to_owned(),
                    detail: format!("no migration from store version {version}"),
                });
            };
            info!(migration = step.name, from = version, "migrating store");
            (step.run)(&tx).ctx(path, "migrate")?;
            version += 1;
        }
        {
            let mut meta = tx.open_table(META).ctx(path, "open meta")?;
            meta.insert(META_VERSION, version.to_le_bytes().as_slice())
                .ctx(path, "write meta")?;
        }
        tx.commit().ctx(path, "commit")
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_tx(&self, durability: Durability) -> Result<redb::WriteTransaction> {
        let mut tx = self
            .db
            .with(|db| Ok(db.begin_write()?))
            .ctx(&self.path, "begin write")?;
        tx.set_durability(durability).map_err(|e| Error::Storage {
            path: self.path.to_path_buf(),
            op: "set durability",
            source: Box::new(redb::Error::Io(std::io::Error::other(e.to_string()))),
        })?;
        Ok(tx)
    }

    fn read_tx(&self) -> Result<redb::ReadTransaction> {
        self.db
            .with(|db| Ok(db.begin_read()?))
            .ctx(&self.path, "begin read")
    }

    /// The networks this store holds a ledger for, sorted.
    pub fn networks(&self) -> Result<Vec<String>> {
        let tx = self.read_tx()?;
        let t = tx.open_table(NETWORKS).ctx(&self.path, "open networks")?;
        let mut out = Vec::new();
        for row in t.iter().ctx(&self.path, "read networks")? {
            let (k, _) = row.ctx(&self.path, "read networks")?;
            out.push(k.value().to_owned());
        }
        Ok(out)
    }

    /// Store a new network's ledger (its whole history, durably) under `network`, and return
    /// it wrapped for durable writes.
    pub fn create_ledger(&self, network: &str, ledger: Ledger) -> Result<DurableLedger> {
        let _span = info_span!("store_create_ledger", network).entered();
        if self.networks()?.iter().any(|n| n == network) {
            return Err(Error::NetworkExists {
                network: network.to_owned(),
            });
        }
        let changes = ledger.changes_since(&[]);
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let mut nets = tx.open_table(NETWORKS).ctx(&self.path, "open networks")?;
            nets.insert(network, ledger.network_name().as_bytes())
                .ctx(&self.path, "write network")?;
            let mut t = tx.open_table(CHANGES).ctx(&self.path, "open changes")?;
            for c in &changes {
                t.insert((network, &c.hash().0), c.raw_bytes())
                    .ctx(&self.path, "write change")?;
            }
        }
        tx.commit().ctx(&self.path, "commit")?;
        Ok(DurableLedger {
            store: self.clone(),
            network: network.to_owned(),
            ledger,
            unpersisted: Vec::new(),
            unflushed: false,
            tail: changes.len(),
        })
    }

    /// Open a network's ledger: the latest snapshot plus the changes stored after it.
    /// `actor` must be unique to this session of this device.
    pub fn open_ledger(&self, network: &str, actor: ActorId) -> Result<DurableLedger> {
        let _span = info_span!("store_open_ledger", network).entered();
        let (bytes, tail) = guarded(&self.path, "read ledger", || {
            self.read_ledger_bytes(network)
        })?;
        let stored = self.stored_views(network)?;
        let (ledger, views) =
            Ledger::load_with_views(&bytes, actor, stored.as_deref()).map_err(|e| match e {
                Error::NotALedger(detail) => Error::CorruptStore {
                    path: self.path.to_path_buf(),
                    detail: format!("the ledger of `{network}` cannot be loaded: {detail}"),
                },
                other => other,
            })?;
        debug!(tail, events = ledger.event_count(), ?views, "ledger opened");
        Ok(DurableLedger {
            store: self.clone(),
            network: network.to_owned(),
            ledger,
            unpersisted: Vec::new(),
            unflushed: false,
            tail,
        })
    }

    /// The snapshot and the changes after it, concatenated (Automerge loads the sequence).
    fn read_ledger_bytes(&self, network: &str) -> Result<(Vec<u8>, usize)> {
        self.read_ledger_parts(network)
            .map(|(bytes, tail, _)| (bytes, tail))
    }

    /// [`Store::read_ledger_bytes`], with the size of the snapshot's document (the bytes
    /// after it are the tail's changes).
    fn read_ledger_parts(&self, network: &str) -> Result<(Vec<u8>, usize, usize)> {
        let tx = self.read_tx()?;
        let mut bytes = Vec::new();
        {
            let snaps = tx.open_table(SNAPSHOTS).ctx(&self.path, "open snapshots")?;
            if let Some(v) = snaps.get(network).ctx(&self.path, "read snapshot")? {
                let (_, doc) = decode_snapshot(v.value()).ok_or_else(|| Error::CorruptStore {
                    path: self.path.to_path_buf(),
                    detail: format!("the snapshot of `{network}` cannot be decoded"),
                })?;
                bytes.extend_from_slice(doc);
            }
        }
        let snapshot_len = bytes.len();
        let mut tail = 0;
        {
            let t = tx.open_table(CHANGES).ctx(&self.path, "open changes")?;
            let range = t
                .range((network, &[0u8; 32])..=(network, &[0xffu8; 32]))
                .ctx(&self.path, "read changes")?;
            for row in range {
                let (_, v) = row.ctx(&self.path, "read changes")?;
                bytes.extend_from_slice(v.value());
                tail += 1;
            }
        }
        if bytes.is_empty() {
            return Err(Error::UnknownNetwork {
                network: network.to_owned(),
            });
        }
        Ok((bytes, tail, snapshot_len))
    }

    /// Store the signature of a change (the identity layer's slot).
    pub fn put_signature(
        &self,
        network: &str,
        change: &ChangeHash,
        signature: &[u8],
    ) -> Result<()> {
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let mut t = tx
                .open_table(SIGNATURES)
                .ctx(&self.path, "open signatures")?;
            t.insert((network, &change.0), signature)
                .ctx(&self.path, "write signature")?;
        }
        tx.commit().ctx(&self.path, "commit")
    }

    /// The signature stored for a change, if any.
    pub fn signature(&self, network: &str, change: &ChangeHash) -> Result<Option<Vec<u8>>> {
        let tx = self.read_tx()?;
        let t = tx
            .open_table(SIGNATURES)
            .ctx(&self.path, "open signatures")?;
        let v = t
            .get((network, &change.0))
            .ctx(&self.path, "read signature")?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Store the sync state kept for a peer (opaque bytes, e.g. an encoded
    /// `automerge::sync::State`).
    pub fn put_sync_state(&self, network: &str, peer: &[u8], state: &[u8]) -> Result<()> {
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let mut t = tx
                .open_table(SYNC_STATES)
                .ctx(&self.path, "open sync states")?;
            t.insert((network, peer), state)
                .ctx(&self.path, "write sync state")?;
        }
        tx.commit().ctx(&self.path, "commit")
    }

    /// The sync state kept for a peer, if any.
    pub fn sync_state(&self, network: &str, peer: &[u8]) -> Result<Option<Vec<u8>>> {
        let tx = self.read_tx()?;
        let t = tx
            .open_table(SYNC_STATES)
            .ctx(&self.path, "open sync states")?;
        let v = t.get((network, peer)).ctx(&self.path, "read sync state")?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Store a node metadata value (node name, settings).
    pub fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let mut t = tx.open_table(META).ctx(&self.path, "open meta")?;
            t.insert(format!("node.{key}").as_str(), value)
                .ctx(&self.path, "write meta")?;
        }
        tx.commit().ctx(&self.path, "commit")
    }

    /// A node metadata value.
    pub fn node_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.read_tx()?;
        let t = tx.open_table(META).ctx(&self.path, "open meta")?;
        let v = t
            .get(format!("node.{key}").as_str())
            .ctx(&self.path, "read meta")?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// How much a network occupies: changes after the snapshot, their bytes, snapshot bytes.
    pub fn stats(&self, network: &str) -> Result<StoreStats> {
        let tx = self.read_tx()?;
        let mut stats = StoreStats::default();
        {
            let t = tx.open_table(CHANGES).ctx(&self.path, "open changes")?;
            for row in t
                .range((network, &[0u8; 32])..=(network, &[0xffu8; 32]))
                .ctx(&self.path, "read changes")?
            {
                let (_, v) = row.ctx(&self.path, "read changes")?;
                stats.tail_changes += 1;
                stats.tail_bytes += v.value().len() as u64;
            }
        }
        let snaps = tx.open_table(SNAPSHOTS).ctx(&self.path, "open snapshots")?;
        if let Some(v) = snaps.get(network).ctx(&self.path, "read snapshot")? {
            stats.snapshot_bytes = v.value().len() as u64;
        }
        Ok(stats)
    }
}

/// A row of the store, for [`Store::put_raw_row`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum RawRow {
    /// The network's snapshot.
    Snapshot,
    /// A change after the snapshot, under the given hash.
    Change,
    /// A change's signature, under the given hash.
    Signature,
    /// A quarantine row, under the given hash.
    Quarantine,
    /// The node's device key.
    DeviceKey,
}

impl Store {
    /// Write `value` as a raw row, bypassing every encoder: for the fuzz harnesses of the
    /// decoders ([`crate::fuzzing::store_rows`]) and tests of damaged rows. Not for use.
    #[doc(hidden)]
    pub fn put_raw_row(
        &self,
        row: RawRow,
        network: &str,
        hash: &[u8; 32],
        value: &[u8],
    ) -> Result<()> {
        let tx = self.write_tx(Durability::Immediate)?;
        {
            let p = &self.path;
            match row {
                RawRow::Snapshot => {
                    let mut t = tx.open_table(SNAPSHOTS).ctx(p, "open snapshots")?;
                    t.insert(network, value).ctx(p, "write")?;
                }
                RawRow::Change | RawRow::Signature | RawRow::Quarantine => {
                    let table = match row {
                        RawRow::Change => CHANGES,
                        RawRow::Signature => SIGNATURES,
                        _ => QUARANTINE,
                    };
                    let mut t = tx.open_table(table).ctx(p, "open table")?;
                    t.insert((network, hash), value).ctx(p, "write")?;
                }
                RawRow::DeviceKey => {
                    let mut t = tx.open_table(META).ctx(p, "open meta")?;
                    t.insert("node.device_key", value).ctx(p, "write")?;
                }
            }
        }
        tx.commit().ctx(&self.path, "commit")
    }
}

/// Sizes of one network's data in a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Changes stored after the snapshot.
    pub tail_changes: u64,
    /// Their total size in bytes.
    pub tail_bytes: u64,
    /// Size of the snapshot value in bytes (0 if none).
    pub snapshot_bytes: u64,
}

/// Check that the migrations lead from `version` to [`STORE_VERSION`], before anything is
/// written.
fn migration_path(path: &Path, mut version: u64, migrations: &[Migration]) -> Result<()> {
    while version < STORE_VERSION {
        if !migrations.iter().any(|m| m.from == version) {
            return Err(Error::NotAStore {
                path: path.to_owned(),
                detail: format!(
                    "a store of version {version}, which this Reflow has no migration for"
                ),
            });
        }
        version += 1;
    }
    Ok(())
}

fn check_magic(path: &Path) -> Result<()> {
    let mut head = [0u8; 9];
    let mut f = fs::File::open(path).map_err(|e| Error::Storage {
        path: path.to_owned(),
        op: "open",
        source: Box::new(redb::Error::Io(e)),
    })?;
    let n = f.read(&mut head).unwrap_or(0);
    if n < head.len() || head != REDB_MAGIC {
        return Err(Error::NotAStore {
            path: path.to_owned(),
            detail: if n == 0 {
                "an empty file".into()
            } else {
                "not a redb file".into()
            },
        });
    }
    Ok(())
}

/// Encode a snapshot value: version tag, head count, heads, Automerge document bytes.
fn encode_snapshot(heads: &[ChangeHash], doc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + heads.len() * 32 + doc.len());
    out.push(SNAPSHOT_ENCODING);
    out.extend_from_slice(&(heads.len() as u32).to_le_bytes());
    for h in heads {
        out.extend_from_slice(&h.0);
    }
    out.extend_from_slice(doc);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<(Vec<ChangeHash>, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    if tag != SNAPSHOT_ENCODING {
        return None;
    }
    let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let rest = rest.get(4..)?;
    let heads_len = n.checked_mul(32)?;
    let heads = rest
        .get(..heads_len)?
        .chunks_exact(32)
        .map(|c| ChangeHash(c.try_into().unwrap_or([0; 32])))
        .collect();
    Some((heads, rest.get(heads_len..)?))
}

/// A ledger whose every mutation is written to the store before the call returns.
///
/// Durability contract (docs/storage.md): [`DurableLedger::write`] and the calls built on it
/// (`record_event`, `record_events`, `create`, `apply_changes`, `merge`) return only after
/// redb has committed the new changes with an fsync. [`DurableLedger::write_buffered`]
/// commits without an fsync: its changes are durable once [`DurableLedger::flush`] (or any
/// later durable write) returns, which fsyncs them all at once (group commit).
pub struct DurableLedger {
    store: Store,
    network: String,
    ledger: Ledger,
    /// Changes applied in memory whose write failed; written first by the next write.
    unpersisted: Vec<Change>,
    /// Whether buffered writes are waiting for a flush.
    unflushed: bool,
    /// Changes stored after the snapshot (an estimate kept for compaction decisions).
    tail: usize,
}

impl std::fmt::Debug for DurableLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableLedger")
            .field("network", &self.network)
            .field("ledger", &self.ledger)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl DurableLedger {
    /// The ledger (read API).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The network key this ledger is stored under.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Changes stored after the latest snapshot.
    pub fn tail_len(&self) -> usize {
        self.tail
    }

    /// Run a mutation on the ledger and make its changes durable before returning.
    ///
    /// If the mutation fails, whatever it had already changed is still written (a ledger
    /// validation error changes nothing). If the write fails, the error is returned, nothing is
    /// acknowledged, and the changes are written first by the next successful write.
    pub fn write<R>(&mut self, mutation: impl FnOnce(&mut Ledger) -> Result<R>) -> Result<R> {
        self.mutate(mutation, Durability::Immediate)
    }

    /// Like [`DurableLedger::write`], but without waiting for the disk: the changes are durable
    /// once [`DurableLedger::flush`] returns. Use it for bursts (a batch import, a busy stall)
    /// where one fsync for many writes is worth a short window of loss on power failure.
    pub fn write_buffered<R>(
        &mut self,
        mutation: impl FnOnce(&mut Ledger) -> Result<R>,
    ) -> Result<R> {
        self.mutate(mutation, Durability::None)
    }

    /// Make every buffered write durable (one fsync).
    pub fn flush(&mut self) -> Result<()> {
        if !self.unflushed && self.unpersisted.is_empty() {
            return Ok(());
        }
        self.persist(Vec::new(), Durability::Immediate)
    }

    /// Whether every write so far is durable.
    pub fn is_flushed(&self) -> bool {
        !self.unflushed && self.unpersisted.is_empty()
    }

    fn mutate<R>(
        &mut self,
        mutation: impl FnOnce(&mut Ledger) -> Result<R>,
        durability: Durability,
    ) -> Result<R> {
        let before = self.ledger.heads();
        let result = mutation(&mut self.ledger);
        let after = self.ledger.heads();
        if after != before {
            let changes = self.new_changes(&before, &after);
            self.persist(changes, durability)?;
        } else if matches!(durability, Durability::Immediate) && self.unflushed {
            self.persist(Vec::new(), durability)?;
        }
        result
    }

    /// The changes between two states of the ledger, cheaply for the common case of one
    /// local change on top of the previous heads.
    fn new_changes(&self, before: &[ChangeHash], after: &[ChangeHash]) -> Vec<Change> {
        if after.len() == 1 {
            if let Some(last) = self.ledger.last_local_change() {
                if last.hash() == after[0] && last.deps() == before {
                    return vec![last];
                }
            }
        }
        self.ledger.changes_since(before)
    }

    fn persist(&mut self, changes: Vec<Change>, durability: Durability) -> Result<()> {
        let _span =
            info_span!("store_persist", network = %self.network, changes = changes.len()).entered();
        let mut all = std::mem::take(&mut self.unpersisted);
        all.extend(changes);
        let result = (|| {
            let tx = self.store.write_tx(durability)?;
            {
                let mut t = tx
                    .open_table(CHANGES)
                    .ctx(&self.store.path, "open changes")?;
                for c in &all {
                    t.insert((self.network.as_str(), &c.hash().0), c.raw_bytes())
                        .ctx(&self.store.path, "write change")?;
                }
            }
            tx.commit().ctx(&self.store.path, "commit")
        })();
        match result {
            Ok(()) => {
                self.tail += all.len();
                self.unflushed = matches!(durability, Durability::None);
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "write failed; will retry with the next write");
                self.unpersisted = all;
                Err(e)
            }
        }
    }

    /// Record one economic event durably. See [`Ledger::record_event`].
    pub fn record_event(&mut self, event: impl Into<crate::NewEvent>) -> Result<crate::Id> {
        let event = event.into();
        self.write(|l| l.record_event(event))
    }

    /// Record several events in one change, durably. See [`Ledger::record_events`].
    pub fn record_events(&mut self, events: Vec<crate::NewEvent>) -> Result<Vec<crate::Id>> {
        self.write(|l| l.record_events(events))
    }

    /// Create an object durably. See [`Ledger::create`].
    pub fn create<T: crate::VfObject>(&mut self, object: T) -> Result<crate::Id> {
        self.write(|l| l.create(object))
    }

    /// Apply changes from a peer and store them durably.
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<()> {
        self.write(|l| l.apply_changes(changes))
    }

    /// Fold everything stored so far into a new snapshot, atomically, on this thread.
    pub fn compact(&mut self) -> Result<()> {
        self.flush()?;
        let job = self.compaction_job();
        let removed = job.run(&self.store)?;
        self.tail = self.tail.saturating_sub(removed);
        Ok(())
    }

    /// Prepare a compaction that another thread can run ([`CompactionJob::run`]) while this
    /// ledger goes on writing: it only removes the changes that its snapshot contains.
    pub fn compaction_job(&self) -> CompactionJob {
        CompactionJob {
            network: self.network.clone(),
            heads: self.ledger.heads(),
            document: self.ledger.save(),
            views: self.ledger.encode_views(),
            covered: self.ledger.change_hashes().into_iter().collect(),
            replaces_history: false,
        }
    }
}

/// A compaction prepared from a ledger's state at one moment: the saved document and the
/// hashes of the changes it contains. `Send`, so it can run on a background thread.
#[derive(Debug)]
pub struct CompactionJob {
    network: String,
    heads: Vec<ChangeHash>,
    document: Vec<u8>,
    /// The views folded at `heads` (`Ledger::encode_views`), stored with the snapshot.
    views: Vec<u8>,
    covered: HashSet<ChangeHash>,
    /// A revocation's snapshot: it drops changes on purpose, so it replaces any snapshot.
    replaces_history: bool,
}

impl CompactionJob {
    /// Write the snapshot and delete the changes it contains, in one transaction (all or
    /// nothing, durable on return). Changes written after the job was prepared are kept.
    /// Returns how many stored changes were folded into the snapshot.
    ///
    /// A job older than the stored snapshot (another compaction ran after it was prepared)
    /// is refused with [`Error::StaleCompaction`] and changes nothing.
    pub fn run(self, store: &Store) -> Result<usize> {
        let _span =
            info_span!("store_compact", network = %self.network, bytes = self.document.len())
                .entered();
        let tx = store.write_tx(Durability::Immediate)?;
        let removed = self.write_in(store, &tx)?;
        tx.commit().ctx(store.path(), "commit")?;
        debug!(removed, "compacted");
        Ok(removed)
    }

    /// [`CompactionJob::run`]'s writes inside a transaction the caller commits (so that a
    /// snapshot can be written atomically with other rows).
    pub(crate) fn write_in(&self, store: &Store, tx: &redb::WriteTransaction) -> Result<usize> {
        let path = store.path();
        if !self.replaces_history {
            // Never back in time: the stored snapshot's heads must all be in this document
            // (the covered set is closed under dependencies, so then all of it is).
            let snaps = tx.open_table(SNAPSHOTS).ctx(path, "open snapshots")?;
            let stored = snaps
                .get(self.network.as_str())
                .ctx(path, "read snapshot")?
                .map(|v| decode_snapshot(v.value()).map(|(heads, _)| heads));
            if let Some(heads) = stored {
                let heads = heads.ok_or_else(|| Error::CorruptStore {
                    path: path.to_owned(),
                    detail: format!("the snapshot of `{}` cannot be decoded", self.network),
                })?;
                if let Some(missing) = heads.iter().find(|h| !self.covered.contains(h)) {
                    warn!(network = %self.network, head = %missing, "stale compaction refused");
                    return Err(Error::StaleCompaction {
                        network: self.network.clone(),
                    });
                }
            }
        }
        let removed;
        {
            let mut t = tx.open_table(CHANGES).ctx(path, "open changes")?;
            let mut doomed: Vec<[u8; 32]> = Vec::new();
            for row in t
                .range((self.network.as_str(), &[0u8; 32])..=(self.network.as_str(), &[0xffu8; 32]))
                .ctx(path, "read changes")?
            {
                let (k, _) = row.ctx(path, "read changes")?;
                let hash = *k.value().1;
                if self.covered.contains(&ChangeHash(hash)) {
                    doomed.push(hash);
                }
            }
            for h in &doomed {
                t.remove((self.network.as_str(), h))
                    .ctx(path, "delete change")?;
            }
            removed = doomed.len();
            let mut snaps = tx.open_table(SNAPSHOTS).ctx(path, "open snapshots")?;
            snaps
                .insert(
                    self.network.as_str(),
                    encode_snapshot(&self.heads, &self.document).as_slice(),
                )
                .ctx(path, "write snapshot")?;
        }
        views::write_views(store, tx, &self.network, &self.views)?;
        Ok(removed)
    }
}

mod cut_off;
mod durable_replica;
pub mod fault;
mod views;
pub use durable_replica::{CompactionPolicy, DurableReplica};

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: TableDefinition<'static, &'static str, u64> = TableDefinition::new("marker");

    fn v0_to_v1(tx: &redb::WriteTransaction) -> std::result::Result<(), redb::Error> {
        let mut t = tx.open_table(MARKER)?;
        t.insert("migrated", &1)?;
        Ok(())
    }

    fn set_version(path: &Path, v: u64) {
        let db = Database::open(path).expect("open");
        let tx = db.begin_write().expect("tx");
        {
            let mut meta = tx.open_table(META).expect("meta");
            meta.insert(META_VERSION, v.to_le_bytes().as_slice())
                .expect("write");
        }
        tx.commit().expect("commit");
    }

    #[test]
    fn an_older_store_is_migrated_by_a_named_migration() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("old.redb");
        drop(Store::open(&path).expect("create"));
        set_version(&path, 0);

        // Without a migration from 0 the store is refused, untouched.
        let before = fs::read(&path).expect("read");
        assert!(matches!(
            Store::open_with(&path, &[]),
            Err(Error::NotAStore { .. })
        ));
        assert!(fs::read(&path).expect("read") == before, "file modified");

        let steps: Vec<Migration> = [Migration {
            from: 0,
            name: "v0-to-v1-test",
            run: v0_to_v1,
        }]
        .into_iter()
        .chain(MIGRATIONS.iter().copied())
        .collect();
        let store = Store::open_with(&path, &steps).expect("migrated");
        let tx = store.read_tx().expect("read");
        let marker = tx.open_table(MARKER).expect("marker table");
        assert_eq!(
            marker.get("migrated").expect("get").map(|v| v.value()),
            Some(1)
        );
        let meta = tx.open_table(META).expect("meta");
        assert!(matches!(check_meta(&path, &meta), Ok(MetaCheck::Current)));
    }

    #[test]
    fn a_version_1_store_gets_the_quarantine_table() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("v1.redb");
        drop(Store::open(&path).expect("create"));
        {
            // Make the file exactly what version 1 wrote: no quarantine table.
            let db = Database::open(&path).expect("open");
            let tx = db.begin_write().expect("tx");
            assert!(tx.delete_table(QUARANTINE).expect("delete"));
            tx.commit().expect("commit");
        }
        set_version(&path, 1);
        let store = Store::open(&path).expect("migrated");
        let tx = store.read_tx().expect("read");
        assert!(
            tx.open_table(QUARANTINE).is_ok(),
            "quarantine table created"
        );
        let meta = tx.open_table(META).expect("meta");
        assert!(matches!(check_meta(&path, &meta), Ok(MetaCheck::Current)));
    }

    #[test]
    fn snapshot_encoding_round_trips_and_rejects_garbage() {
        let heads = vec![ChangeHash([1; 32]), ChangeHash([2; 32])];
        let bytes = encode_snapshot(&heads, b"doc");
        let (h, doc) = decode_snapshot(&bytes).expect("decode");
        assert_eq!(h, heads);
        assert_eq!(doc, b"doc");
        assert!(decode_snapshot(&[]).is_none());
        assert!(
            decode_snapshot(&[2, 0, 0, 0, 0]).is_none(),
            "unknown encoding version"
        );
        assert!(
            decode_snapshot(&[1, 9, 0, 0, 0, 1, 2]).is_none(),
            "heads cut short"
        );
    }
}
