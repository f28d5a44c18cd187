//! Device identity and signed changes.
//!
//! Every device has one ed25519 key ([`DeviceKey`]). Its public half ([`DeviceId`]) is three
//! things at once: the device's iroh endpoint id (the peer at the other end of a connection is
//! the key that signs its changes), the prefix of every Automerge actor id the device writes
//! with, and the key that verifies each of its changes. See docs/security.md for the why.
//!
//! This module is pure: no I/O except asking the operating system for randomness when a key
//! or a session suffix is generated.

use std::fmt;
use std::str::FromStr;

use automerge::{ActorId, Change, ChangeHash};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A key, device id or network id that cannot be read, or no randomness to make one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The operating system could not provide randomness for a key or session id.
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(String),
    /// Not a valid ed25519 public key (64 hex digits of a curve point).
    #[error("`{0}` is not a device id: expected 64 hex digits of an ed25519 public key")]
    InvalidKey(String),
    /// Not a valid network id (64 hex digits).
    #[error("`{0}` is not a network id: expected 64 hex digits")]
    InvalidNetworkId(String),
}

/// Length of an actor id written by a Reflow device: 32 bytes of public key, 8 of session.
pub const ACTOR_LEN: usize = 40;

/// Domain separation for change signatures (see docs/protocol.md, "Change signatures").
const CHANGE_CONTEXT: &[u8] = b"reflow/change/v1\0";

/// A device's secret signing key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("id", &self.id())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl DeviceKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<DeviceKey, IdentityError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|e| IdentityError::Randomness(e.to_string()))?;
        Ok(DeviceKey(SigningKey::from_bytes(&seed)))
    }

    /// The key of a 32-byte secret (as stored by the node, or an iroh `SecretKey`'s bytes).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> DeviceKey {
        DeviceKey(SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes, for storing the key. Zeroed when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public identity of this device.
    pub fn id(&self) -> DeviceId {
        DeviceId(self.0.verifying_key().to_bytes())
    }

    /// Sign arbitrary bytes (invites, handshakes). Changes use [`DeviceKey::sign_change`].
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Sign a change of `network`: the signature covers the change hash, which covers the
    /// change's actor, sequence number, dependencies, operations and message.
    pub fn sign_change(&self, network: &NetworkId, change: &ChangeHash) -> ChangeSignature {
        ChangeSignature(self.sign(&change_message(network, change)))
    }

    /// A fresh actor id for one session of this device: the public key followed by 8 random
    /// bytes. A new session never reuses a sequence number of an earlier one, even if the
    /// earlier one crashed before its last change was stored.
    pub fn session_actor(&self) -> Result<ActorId, IdentityError> {
        #[cfg(test)]
        if let Some(suffix) = test_actors::next() {
            return Ok(self.id().actor(suffix));
        }
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| IdentityError::Randomness(e.to_string()))?;
        Ok(self.id().actor(suffix))
    }
}

/// Test seam: session actor ids drawn from a seed instead of the operating system, so that a
/// deterministic simulation (the node simulator) makes the same changes, hashes and heads on
/// every run of a seed. Per thread; off unless a test turns it on.
#[cfg(test)]
pub(crate) mod test_actors {
    use std::cell::Cell;

    thread_local! {
        static NEXT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Draw session actor suffixes from `seed` on this thread (`None`: from the OS again).
    /// Only the node simulator (feature `net`) seeds them.
    #[cfg_attr(not(feature = "net"), allow(dead_code))]
    pub(crate) fn seed(seed: Option<u64>) {
        NEXT.with(|c| c.set(seed));
    }

    /// The next suffix, if seeded (splitmix64).
    pub(super) fn next() -> Option<[u8; 8]> {
        NEXT.with(|c| {
            let state = c.get()?.wrapping_add(0x9e37_79b9_7f4a_7c15);
            c.set(Some(state));
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            Some((z ^ (z >> 31)).to_le_bytes())
        })
    }
}

/// A device's public key: its identity in every network, and its iroh endpoint id.
/// Holds the 32 bytes of a key already checked to be a valid ed25519 point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

impl DeviceId {
    /// The device id of 32 public-key bytes; an error if they are not a valid ed25519 point.
    ///
    /// Checking a point means decompressing it (a field square root, ~10 µs); a network has a
    /// handful of devices whose ids are checked for every change they signed, so keys found
    /// valid are remembered per thread (a bounded set, cleared when full).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<DeviceId, IdentityError> {
        thread_local! {
            static VALID: std::cell::RefCell<std::collections::HashSet<[u8; 32]>> =
                std::cell::RefCell::new(std::collections::HashSet::new());
        }
        /// Most keys remembered per thread; a stranger spraying keys only costs re-checks.
        const MAX_REMEMBERED: usize = 1024;
        if VALID.with(|v| v.borrow().contains(bytes)) {
            return Ok(DeviceId(*bytes));
        }
        let id = VerifyingKey::from_bytes(bytes)
            .map(|k| DeviceId(k.to_bytes()))
            .map_err(|_| IdentityError::InvalidKey(hex::encode(bytes)))?;
        VALID.with(|v| {
            let mut v = v.borrow_mut();
            if v.len() >= MAX_REMEMBERED {
                v.clear();
            }
            v.insert(*bytes);
        });
        Ok(id)
    }

    /// The 32 public-key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The actor id of this device for one session (`suffix`).
    pub fn actor(&self, suffix: [u8; 8]) -> ActorId {
        let mut bytes = Vec::with_capacity(ACTOR_LEN);
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(&suffix);
        ActorId::from(bytes)
    }

    /// The device an actor id belongs to, if it is a Reflow device actor (40 bytes whose first
    /// 32 are a valid public key).
    pub fn of_actor(actor: &ActorId) -> Option<DeviceId> {
        let bytes = actor.to_bytes();
        if bytes.len() != ACTOR_LEN {
            return None;
        }
        let key: &[u8; 32] = bytes[..32].try_into().ok()?;
        DeviceId::from_bytes(key).ok()
    }

    /// Verify a signature of this device over `message`, by the ZIP-215 rules (the same
    /// rules batch verification applies, so that every replica decides alike).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        ed25519_zebra::VerificationKey::try_from(self.0)
            .and_then(|vk| vk.verify(&ed25519_zebra::Signature::from_bytes(signature), message))
            .is_ok()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", &hex::encode(self.0)[..12])
    }
}

impl FromStr for DeviceId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<DeviceId, IdentityError> {
        let bytes: [u8; 32] = hex::decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| IdentityError::InvalidKey(s.to_string()))?;
        DeviceId::from_bytes(&bytes)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A network's id: the hash of its genesis change. The genesis change is signed by its
/// creator and names the creator as first admin, so nobody else can make a network with this
/// id: they would have to produce another change with the same hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(pub [u8; 32]);

impl NetworkId {
    /// The genesis change hash this id is.
    pub fn genesis(&self) -> ChangeHash {
        ChangeHash(self.0)
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({})", &hex::encode(self.0)[..12])
    }
}

impl FromStr for NetworkId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<NetworkId, IdentityError> {
        hex::decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(NetworkId)
            .ok_or_else(|| IdentityError::InvalidNetworkId(s.to_string()))
    }
}

impl Serialize for NetworkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for NetworkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature over a change (see [`DeviceKey::sign_change`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChangeSignature(pub [u8; 64]);

impl fmt::Debug for ChangeSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeSignature({}…)", &hex::encode(self.0)[..12])
    }
}

/// A change and its author's signature: the unit that is stored and travels between peers.
#[derive(Debug, Clone)]
pub struct SignedChange {
    /// The Automerge change.
    pub change: Change,
    /// Its author's signature over its hash.
    pub signature: ChangeSignature,
}

impl SignedChange {
    /// The change's hash.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }
}

/// Why a change's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignatureProblem {
    /// The change's actor id is not a Reflow device actor (32-byte key + 8-byte session).
    ActorNotADevice,
    /// The signature does not verify with the key of the change's actor: forged, made for
    /// another network, or made by another key.
    BadSignature,
    /// The change came in a document (a bootstrap, docs/protocol.md §2.7) and no valid
    /// attestation of its author's device covers it: none of the attested changes of that
    /// device has it in its causal past.
    NotCovered,
}

/// A device's statement of one of its own changes, by which it vouches for every earlier
/// change of its in that change's causal past (docs/security.md, "Authorship by
/// attestation"). The signed statement is the change's own signature (`reflow/change/v1`,
/// network id, change hash): the hash commits to the change's actor, sequence number and
/// dependencies, hence to its whole causal past, so any signature a device ever made is an
/// attestation of its past. `actor` and `seq` travel beside it so that a receiver can check
/// the statement against the change it names before walking its past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The attested change's actor (device key ‖ session suffix, 40 bytes).
    pub actor: ActorId,
    /// The attested change's sequence number.
    pub seq: u64,
    /// The attested change's hash.
    pub hash: ChangeHash,
    /// The device's signature of the change ([`DeviceKey::sign_change`]).
    pub signature: ChangeSignature,
}

impl Attestation {
    /// Whether this attestation is a valid statement, in `network`, of the change `change`:
    /// same hash, actor and sequence number, a device actor, and a signature that verifies
    /// with that device's key. Returns the device.
    pub fn check(
        &self,
        network: &NetworkId,
        change: &Change,
    ) -> std::result::Result<DeviceId, SignatureProblem> {
        if change.hash() != self.hash
            || change.actor_id() != &self.actor
            || change.seq() != self.seq
        {
            return Err(SignatureProblem::BadSignature);
        }
        let device = DeviceId::of_actor(&self.actor).ok_or(SignatureProblem::ActorNotADevice)?;
        if device.verify(&change_message(network, &self.hash), &self.signature.0) {
            Ok(device)
        } else {
            Err(SignatureProblem::BadSignature)
        }
    }
}

/// The bytes a change signature covers.
fn change_message(network: &NetworkId, change: &ChangeHash) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHANGE_CONTEXT.len() + 64);
    m.extend_from_slice(CHANGE_CONTEXT);
    m.extend_from_slice(&network.0);
    m.extend_from_slice(&change.0);
    m
}

/// Chunks smaller than this are verified on the calling thread.
const PARALLEL_MIN: usize = 256;

/// Verify the signatures and authorship of many changes at once: each change's actor must be
/// a device actor, and its signature must verify with that device's key. Uses ed25519 batch
/// verification, split over the machine's cores; a batch that fails is verified one by one to
/// find the bad changes. Returns, per change, its author or the problem.
pub fn verify_changes(
    network: &NetworkId,
    changes: &[SignedChange],
) -> Vec<std::result::Result<DeviceId, SignatureProblem>> {
    let _span = tracing::debug_span!("verify_changes", n = changes.len()).entered();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    if changes.len() < PARALLEL_MIN * 2 || threads == 1 {
        return verify_chunk(network, changes);
    }
    let chunk = changes.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = changes
            .chunks(chunk)
            .map(|c| s.spawn(move || verify_chunk(network, c)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(r) => r,
                // A panic in the verifier is a bug; treat its chunk as unverified.
                Err(_) => vec![Err(SignatureProblem::BadSignature); chunk],
            })
            .take(changes.len())
            .collect()
    })
}

/// Batch sub-size: small enough that one bad signature costs little re-verification.
const BATCH: usize = 64;

fn zebra_signature(sig: &ChangeSignature) -> ed25519_zebra::Signature {
    ed25519_zebra::Signature::from_bytes(&sig.0)
}

fn verify_chunk(
    network: &NetworkId,
    changes: &[SignedChange],
) -> Vec<std::result::Result<DeviceId, SignatureProblem>> {
    let mut out = Vec::with_capacity(changes.len());
    // The random coefficients of batch verification; if the OS cannot give randomness,
    // every signature is verified on its own (same result, slower).
    let batching = getrandom::fill(&mut [0u8; 1]).is_ok();
    for group in changes.chunks(BATCH) {
        let authors: Vec<Option<DeviceId>> = group
            .iter()
            .map(|c| DeviceId::of_actor(c.change.actor_id()))
            .collect();
        let messages: Vec<Vec<u8>> = group
            .iter()
            .map(|c| change_message(network, &c.hash()))
            .collect();
        let batch_ok = batching && authors.iter().all(Option::is_some) && {
            let mut batch = ed25519_zebra::batch::Verifier::new();
            for (i, c) in group.iter().enumerate() {
                if let Some(a) = authors[i] {
                    let vk = ed25519_zebra::VerificationKeyBytes::from(*a.as_bytes());
                    batch.queue((vk, zebra_signature(&c.signature), messages[i].as_slice()));
                }
            }
            batch
                .verify(getrandom::rand_core::UnwrapErr(getrandom::SysRng))
                .is_ok()
        };
        for (i, c) in group.iter().enumerate() {
            out.push(match authors[i] {
                None => Err(SignatureProblem::ActorNotADevice),
                // ZIP-215 batch verification agrees with single verification, so every
                // replica decides the same whatever batches it happened to form.
                Some(a) if batch_ok || a.verify(&messages[i], &c.signature.0) => Ok(a),
                Some(_) => Err(SignatureProblem::BadSignature),
            });
        }
    }
    out
}
