//! Fault injection for the store: a redb [`StorageBackend`] over an in-memory disk that fails
//! chosen or random writes and fsyncs, fills up, and loses power.
//!
//! The disk keeps two images: what the operating system would show (every write that
//! succeeded) and what survives a power loss (the image as of the last successful
//! `sync_data`). [`FaultyDisk::power_loss`] throws the unsynced writes away — all of them, or,
//! in the torn mode, a seeded random subset of them, as a disk that reorders its write-back
//! cache would. Every backend handle made before a power loss is dead afterwards (the process
//! that held it is gone): all its operations fail.
//!
//! This is a test tool, public so that the integration tests and fuzz harnesses can open a
//! [`super::Store`] over it ([`super::Store::open_backend`]); a node never uses it.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::StorageBackend;

/// What a [`FaultyDisk`] has seen and done, for test reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Writes that reached the disk.
    pub writes: u64,
    /// Successful fsyncs.
    pub syncs: u64,
    /// Writes failed on purpose (chosen, random or disk full).
    pub failed_writes: u64,
    /// Fsyncs failed on purpose.
    pub failed_syncs: u64,
    /// Writes or resizes refused because the disk was full.
    pub full: u64,
    /// Power losses simulated.
    pub power_losses: u64,
}

/// An unsynced operation, replayed (or not) on a torn power loss.
#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug)]
struct Disk {
    /// What reads see: every write that succeeded.
    cache: Vec<u8>,
    /// What survives a power loss: the image at the last successful fsync.
    durable: Vec<u8>,
    /// Operations since the last successful fsync, in order.
    pending: Vec<Pending>,
    /// Handles of an older generation are dead (their process lost power).
    generation: u64,
    fail_write_in: Option<u64>,
    fail_sync_in: Option<u64>,
    write_fail_per_mille: u32,
    sync_fail_per_mille: u32,
    capacity: Option<u64>,
    rng: u64,
    stats: FaultStats,
}

impl Disk {
    /// splitmix64: a seeded, dependency-free generator for fault decisions.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && (self.next() % 1000) < u64::from(per_mille)
    }

    /// Whether a countdown fault fires now (and disarm it if so).
    fn countdown(slot: &mut Option<u64>) -> bool {
        match slot {
            Some(0) => {
                *slot = None;
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write(offset, data) => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => image.resize(*len as usize, 0),
    }
}

/// An in-memory disk with fault injection. Cheap to clone; clones share the disk.
#[derive(Debug, Clone)]
pub struct FaultyDisk {
    disk: Arc<Mutex<Disk>>,
}

impl FaultyDisk {
    /// An empty disk whose random decisions come from `seed`.
    pub fn new(seed: u64) -> FaultyDisk {
        FaultyDisk {
            disk: Arc::new(Mutex::new(Disk {
                cache: Vec::new(),
                durable: Vec::new(),
                pending: Vec::new(),
                generation: 0,
                fail_write_in: None,
                fail_sync_in: None,
                write_fail_per_mille: 0,
                sync_fail_per_mille: 0,
                capacity: None,
                rng: seed,
                stats: FaultStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A backend handle for redb, of the current generation.
    pub fn backend(&self) -> FaultyBackend {
        FaultyBackend {
            disk: self.clone(),
            generation: self.lock().generation,
        }
    }

    /// Fail the write that comes after `n` more successful ones (0: the next write).
    pub fn fail_write_after(&self, n: u64) {
        self.lock().fail_write_in = Some(n);
    }

    /// Fail the fsync that comes after `n` more successful ones (0: the next fsync).
    pub fn fail_sync_after(&self, n: u64) {
        self.lock().fail_sync_in = Some(n);
    }

    /// Fail each write and each fsync with these probabilities (per mille), seeded.
    pub fn set_random_faults(&self, write_per_mille: u32, sync_per_mille: u32) {
        let mut d = self.lock();
        d.write_fail_per_mille = write_per_mille;
        d.sync_fail_per_mille = sync_per_mille;
    }

    /// Make the disk full beyond `bytes` (writes and resizes past it fail with
    /// [`io::ErrorKind::StorageFull`]); `None` for no limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Disarm every fault (chosen, random and the capacity limit).
    pub fn clear_faults(&self) {
        let mut d = self.lock();
        d.fail_write_in = None;
        d.fail_sync_in = None;
        d.write_fail_per_mille = 0;
        d.sync_fail_per_mille = 0;
        d.capacity = None;
    }

    /// The size of the disk image as reads see it.
    pub fn len(&self) -> u64 {
        self.lock().cache.len() as u64
    }

    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.lock().cache.is_empty()
    }

    /// What has happened so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    /// Writes not yet made durable by an fsync.
    pub fn unsynced(&self) -> usize {
        self.lock().pending.len()
    }

    /// Lose power: every unsynced write vanishes (with `torn`, a random subset of them
    /// survives, in order), and every handle made so far dies.
    pub fn power_loss(&self, torn: bool) {
        let mut d = self.lock();
        let mut image = d.durable.clone();
        if torn {
            let pending = std::mem::take(&mut d.pending);
            for op in &pending {
                if d.next() & 1 == 1 {
                    apply(&mut image, op);
                }
            }
        }
        d.pending.clear();
        d.cache = image.clone();
        d.durable = image;
        d.generation += 1;
        d.stats.power_losses += 1;
    }

    /// A separate disk holding a copy of this one's current image (as reads see it), synced,
    /// without faults: to look at the store as it is without disturbing it.
    pub fn copy(&self) -> FaultyDisk {
        let d = self.lock();
        let copy = FaultyDisk::new(d.rng ^ 0x5EED);
        {
            let mut c = copy.lock();
            c.cache = d.cache.clone();
            c.durable = d.cache.clone();
        }
        copy
    }
}

/// A handle on a [`FaultyDisk`] that redb uses as its file.
#[derive(Debug)]
pub struct FaultyBackend {
    disk: FaultyDisk,
    generation: u64,
}

fn dead() -> io::Error {
    io::Error::other("the device lost power (fault injected)")
}

fn full() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "no space left on the device (fault injected)",
    )
}

impl FaultyBackend {
    fn live(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let d = self.disk.lock();
        if d.generation != self.generation {
            return Err(dead());
        }
        Ok(d)
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.live()?.cache.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let d = self.live()?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(out.len())
            .filter(|&e| e <= d.cache.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(&d.cache[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.live()?;
        if d.capacity.is_some_and(|c| len > c) && len > d.cache.len() as u64 {
            d.stats.full += 1;
            d.stats.failed_writes += 1;
            return Err(full());
        }
        let op = Pending::SetLen(len);
        apply(&mut d.cache, &op);
        d.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.live()?;
        let chosen = Disk::countdown(&mut d.fail_sync_in);
        let per_mille = d.sync_fail_per_mille;
        if chosen || d.chance(per_mille) {
            d.stats.failed_syncs += 1;
            return Err(io::Error::other("fsync failed (fault injected)"));
        }
        d.durable = d.cache.clone();
        d.pending.clear();
        d.stats.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.live()?;
        let end = offset.saturating_add(data.len() as u64);
        if d.capacity.is_some_and(|c| end > c) && end > d.cache.len() as u64 {
            d.stats.full += 1;
            d.stats.failed_writes += 1;
            return Err(full());
        }
        let chosen = Disk::countdown(&mut d.fail_write_in);
        let per_mille = d.write_fail_per_mille;
        if chosen || d.chance(per_mille) {
            d.stats.failed_writes += 1;
            return Err(io::Error::other("write failed (fault injected)"));
        }
        let op = Pending::Write(offset, data.to_vec());
        apply(&mut d.cache, &op);
        d.pending.push(op);
        d.stats.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_vanish_on_power_loss_and_old_handles_die() {
        let disk = FaultyDisk::new(1);
        let b = disk.backend();
        b.write(0, b"durable").expect("write");
        b.sync_data().expect("sync");
        b.write(0, b"DURABLE-and-more").expect("write");
        disk.power_loss(false);
        assert!(
            b.len().is_err(),
            "a handle from before the power loss is dead"
        );
        let b = disk.backend();
        let mut out = vec![0; b.len().expect("len") as usize];
        b.read(0, &mut out).expect("read");
        assert_eq!(out, b"durable");
    }

    #[test]
    fn chosen_faults_fire_once_and_capacity_is_storage_full() {
        let disk = FaultyDisk::new(2);
        let b = disk.backend();
        disk.fail_write_after(1);
        b.write(0, b"a").expect("first write passes");
        assert!(b.write(1, b"b").is_err(), "second write fails");
        b.write(1, b"b").expect("third write passes");
        disk.fail_sync_after(0);
        assert!(b.sync_data().is_err());
        b.sync_data().expect("next sync passes");
        disk.set_capacity(Some(4));
        b.write(0, b"zz").expect("within capacity");
        let e = b.write(2, b"xyz").expect_err("past capacity");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(disk.stats().full, 1);
    }
}
