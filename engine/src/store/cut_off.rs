//! The `reflow_cut_off` table (store version 4): the devices of each network cut off for
//! equivocation or a fork, with their proof. Kept apart from the quarantine (whose rows a
//! bound may keep out, and a later judgment may delete or rewrite), written in the same
//! transaction as the refusals that revealed them, never deleted: a reopened replica cuts
//! off every device it cut off before (docs/storage.md, "A cut-off value").

use automerge::{Change, ChangeHash};
use redb::{ReadableTable, TableDefinition};

use super::{Ctx, Store};
use crate::error::{Error, Result};
use crate::identity::{ChangeSignature, DeviceId, SignedChange};
use crate::membership::Rejection;
use crate::replica::CutOff;

/// (network key, device id) → a cut-off value (docs/storage.md).
pub(super) const CUT_OFF: TableDefinition<
    'static,
    (&'static str, &'static [u8; 32]),
    &'static [u8],
> = TableDefinition::new("reflow_cut_off");

/// The encoding version of a cut-off value.
const CUT_OFF_ENCODING: u8 = 1;

/// Version 4 adds the table of cut-off devices (a migrated store's cut-offs are rebuilt from
/// its quarantine rows when it opens, as version 3 did, and written at its next write).
pub(super) fn add_cut_off_table(
    tx: &redb::WriteTransaction,
) -> std::result::Result<(), redb::Error> {
    tx.open_table(CUT_OFF)?;
    Ok(())
}

/// A cut-off value: encoding version, the reason (JSON, length-prefixed), the two twins'
/// hashes, then the twins held (count, each signature, length-prefixed change).
pub(crate) fn encode(c: &CutOff) -> Vec<u8> {
    let reason = serde_json::to_vec(&c.reason).unwrap_or_default();
    let mut v = Vec::with_capacity(70 + reason.len() + 64);
    v.push(CUT_OFF_ENCODING);
    v.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    v.extend_from_slice(&reason);
    v.extend_from_slice(&c.twins[0].0);
    v.extend_from_slice(&c.twins[1].0);
    v.push(c.changes.len() as u8);
    for s in &c.changes {
        let bytes = s.change.raw_bytes();
        v.extend_from_slice(&s.signature.0);
        v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        v.extend_from_slice(bytes);
    }
    v
}

/// Why a cut-off value does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CutOffError {
    /// Shorter than its lengths say, or bytes left over.
    #[error("cut short or with bytes left over")]
    Length,
    /// Another encoding version.
    #[error("encoding version {0}, this build reads 1")]
    Version(u8),
    /// The reason is not an equivocation or a fork of the row's device.
    #[error("the reason is not an equivocation or fork of this device")]
    Reason,
    /// A twin does not decode, is not one of the two named, or is not the device's.
    #[error("a twin is not a change of this device named by the row")]
    Twin,
}

fn take<'a>(v: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], CutOffError> {
    if v.len() < n {
        return Err(CutOffError::Length);
    }
    let (head, rest) = v.split_at(n);
    *v = rest;
    Ok(head)
}

fn u32_le(v: &mut &[u8]) -> std::result::Result<usize, CutOffError> {
    let b: [u8; 4] = take(v, 4)?.try_into().map_err(|_| CutOffError::Length)?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Decode the cut-off value of `device`. Checked: the reason names `device`, each twin held
/// is one of the two hashes and a change of `device`.
pub(crate) fn decode(device: DeviceId, value: &[u8]) -> std::result::Result<CutOff, CutOffError> {
    let mut v = value;
    let version = take(&mut v, 1)?[0];
    if version != CUT_OFF_ENCODING {
        return Err(CutOffError::Version(version));
    }
    let len = u32_le(&mut v)?;
    let reason: Rejection =
        serde_json::from_slice(take(&mut v, len)?).map_err(|_| CutOffError::Reason)?;
    match &reason {
        Rejection::Equivocation { device: d, .. } | Rejection::Forked { device: d, .. }
            if *d == device => {}
        _ => return Err(CutOffError::Reason),
    }
    let mut twins = [ChangeHash([0; 32]); 2];
    for t in &mut twins {
        t.0 = take(&mut v, 32)?
            .try_into()
            .map_err(|_| CutOffError::Length)?;
    }
    let n = take(&mut v, 1)?[0];
    if n > 2 {
        return Err(CutOffError::Twin);
    }
    let mut changes = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let signature: [u8; 64] = take(&mut v, 64)?
            .try_into()
            .map_err(|_| CutOffError::Length)?;
        let len = u32_le(&mut v)?;
        let change =
            Change::from_bytes(take(&mut v, len)?.to_vec()).map_err(|_| CutOffError::Twin)?;
        if !twins.contains(&change.hash()) || DeviceId::of_actor(change.actor_id()) != Some(device)
        {
            return Err(CutOffError::Twin);
        }
        changes.push(SignedChange {
            change,
            signature: ChangeSignature(signature),
        });
    }
    if !v.is_empty() {
        return Err(CutOffError::Length);
    }
    Ok(CutOff {
        device,
        reason,
        twins,
        changes,
    })
}

/// Write the cut-offs of `network` inside `tx` (an existing row is kept: the first proof
/// stands).
pub(super) fn write_cut_offs<'c>(
    store: &Store,
    tx: &redb::WriteTransaction,
    network: &str,
    cut_offs: impl IntoIterator<Item = &'c CutOff>,
) -> Result<()> {
    let mut t = tx.open_table(CUT_OFF).ctx(store.path(), "open cut-offs")?;
    for c in cut_offs {
        let key = (network, c.device.as_bytes());
        if t.get(key).ctx(store.path(), "read cut-off")?.is_none() {
            t.insert(key, encode(c).as_slice())
                .ctx(store.path(), "write cut-off")?;
        }
    }
    Ok(())
}

impl Store {
    /// The cut-offs stored for `network`. A row that does not decode is a damaged store
    /// (`CorruptStore`): dropping it would forget a cut-off.
    pub(super) fn stored_cut_offs(&self, network: &str) -> Result<Vec<CutOff>> {
        let tx = self.read_tx()?;
        let t = match tx.open_table(CUT_OFF) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx(self.path(), "open cut-offs"),
        };
        let mut out = Vec::new();
        for row in t
            .range((network, &[0u8; 32])..=(network, &[0xffu8; 32]))
            .ctx(self.path(), "read cut-offs")?
        {
            let (k, v) = row.ctx(self.path(), "read cut-offs")?;
            let corrupt = |detail: String| Error::CorruptStore {
                path: self.path().to_owned(),
                detail: format!("a cut-off row of `{network}`: {detail}"),
            };
            let device = DeviceId::from_bytes(k.value().1)
                .map_err(|_| corrupt("its key is not a device id".into()))?;
            out.push(decode(device, v.value()).map_err(|e| corrupt(e.to_string()))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;

    use super::*;
    use crate::identity::DeviceKey;

    fn change(key: &DeviceKey, suffix: u8) -> SignedChange {
        let mut doc = automerge::Automerge::new().with_actor(key.id().actor([suffix; 8]));
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "x", i64::from(suffix))
            .expect("put");
        tx.commit();
        let change = doc.get_last_local_change().expect("change");
        SignedChange {
            change,
            signature: ChangeSignature([suffix; 64]),
        }
    }

    fn cut_off(key: &DeviceKey) -> CutOff {
        let (a, b) = (change(key, 1), change(key, 2));
        let mut twins = [a.hash(), b.hash()];
        twins.sort();
        CutOff {
            device: key.id(),
            reason: Rejection::Forked {
                device: key.id(),
                other: twins[0].to_string(),
            },
            twins,
            changes: vec![a, b],
        }
    }

    #[test]
    fn a_cut_off_value_round_trips_and_damage_is_refused() {
        let key = DeviceKey::generate().expect("key");
        let c = cut_off(&key);
        let bytes = encode(&c);
        let back = decode(key.id(), &bytes).expect("decode");
        assert_eq!(back.reason, c.reason);
        assert_eq!(back.twins, c.twins);
        let hashes = |c: &CutOff| c.changes.iter().map(SignedChange::hash).collect::<Vec<_>>();
        assert_eq!(hashes(&back), hashes(&c));
        assert_eq!(back.changes[1].signature, c.changes[1].signature);
        // Without the twins' bytes (a proof rebuilt from hashes only).
        let bare = CutOff {
            changes: Vec::new(),
            ..c.clone()
        };
        assert!(decode(key.id(), &encode(&bare))
            .expect("bare")
            .changes
            .is_empty());

        // Every truncation, a byte too many, another version.
        for n in 0..bytes.len() {
            assert!(decode(key.id(), &bytes[..n]).is_err(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(key.id(), &longer).err(), Some(CutOffError::Length));
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(
            decode(key.id(), &other_version).err(),
            Some(CutOffError::Version(2))
        );
        // Another device's row, and another device's twin.
        let other = DeviceKey::generate().expect("key");
        assert_eq!(decode(other.id(), &bytes).err(), Some(CutOffError::Reason));
        let mut foreign = c.clone();
        foreign.changes[1] = change(&other, 2);
        assert_eq!(
            decode(key.id(), &encode(&foreign)).err(),
            Some(CutOffError::Twin)
        );
        // A twin that is not one of the two named.
        let mut unnamed = c.clone();
        unnamed.changes[1] = change(&key, 3);
        assert_eq!(
            decode(key.id(), &encode(&unnamed)).err(),
            Some(CutOffError::Twin)
        );
        // A reason that is no cut-off.
        let mut not_a_proof = c;
        not_a_proof.reason = Rejection::DependsOnRefused {
            dependency: "00".into(),
        };
        assert_eq!(
            decode(key.id(), &encode(&not_a_proof)).err(),
            Some(CutOffError::Reason)
        );
    }
}
