//! The document schema, version 2: where every value of a ledger lives in its Automerge
//! document, and how keys and buckets are spelt. Byte-level description: docs/data-model.md.
//!
//! Every object that holds history is a **bucket map created in the genesis change** (or in
//! the v1 → v2 migration change): 256 buckets for events, 256 for the descriptions of
//! mutable objects. After that change no Automerge object is ever created again: a change
//! only puts (or deletes) string values in those buckets. Two reasons:
//!
//! - Automerge applies a remote change by walking every op of each object the change touches;
//!   one object that every event grows makes each change cost O(history) (about 20 ms at
//!   100,000 events on the reference machine, automerge issue #1042). With 256 buckets an
//!   object holds 1/256th of the history.
//! - Admission (`crate::admission`) can judge every op of a change by its target object alone:
//!   the set of objects is fixed and known from the genesis, so no op needs the document's
//!   present state to be judged.
//!
//! Pure: no I/O.

use crate::vf::ObjectKind;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u64 = 2;

/// Root key: the schema version (uint).
pub const KEY_SCHEMA: &str = "schemaVersion";
/// Root key: the network map (`name`).
pub const KEY_NETWORK: &str = "network";
/// Root key (v2): the map of the 256 event buckets, keys `00`..`ff`.
pub const KEY_EVENT_BUCKETS: &str = "eventBuckets";
/// Root key (v2): the map of the 256 object buckets, keys `00`..`ff`.
pub const KEY_OBJECT_BUCKETS: &str = "objectBuckets";
/// Root key (v1 only): the list of events.
pub const KEY_V1_EVENTS: &str = "events";
/// Root key (v1 only): where a membership change wrote a readable copy of its record.
pub const KEY_V1_RECORD: &str = "lastMembershipRecord";

/// Number of buckets of each kind.
pub const BUCKETS: usize = 256;

/// The key of bucket `i` in its bucket map: two lowercase hex digits.
pub fn bucket_key(i: usize) -> String {
    format!("{:02x}", i & 0xff)
}

/// The bucket index of a bucket key (`00`..`ff`), if it is one.
pub fn bucket_index(key: &str) -> Option<usize> {
    if key.len() != 2
        || !key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    usize::from_str_radix(key, 16).ok()
}

/// The event bucket of an event whose op counter is `counter`: its low byte.
pub fn event_bucket(counter: u64) -> usize {
    (counter & 0xff) as usize
}

/// The object bucket of the object `(kind, id)`: the low byte of the 32-bit FNV-1a hash of
/// `<kind root key>/<id>` (UTF-8). All fields of one object live in one bucket.
pub fn object_bucket(kind: ObjectKind, id: &str) -> usize {
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

/// The key of an object's marker: the JSON array `["<kind>","<id>"]` (serde_json's compact
/// spelling). Its value is the kind's root key; it says the object exists.
pub fn marker_key(kind: ObjectKind, id: &str) -> String {
    // Serializing two strings cannot fail.
    serde_json::to_string(&(kind.root_key(), id)).unwrap_or_default()
}

/// The key of one field of an object: `["<kind>","<id>","<field>"]`. Its value is the
/// field's value as JSON text.
pub fn field_key(kind: ObjectKind, id: &str, field: &str) -> String {
    serde_json::to_string(&(kind.root_key(), id, field)).unwrap_or_default()
}

/// The prefix shared by the marker and every field key of one object, and nothing else.
pub fn object_prefix(kind: ObjectKind, id: &str) -> String {
    let mut m = marker_key(kind, id);
    m.pop(); // the closing bracket
    m
}

/// The prefix shared by every key of every object of `kind`.
pub fn kind_prefix(kind: ObjectKind) -> String {
    format!("[\"{}\",", kind.root_key())
}

/// What an object-bucket key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey {
    /// The marker of `(kind, id)`.
    Marker(ObjectKind, String),
    /// A field of `(kind, id)`.
    Field(ObjectKind, String, String),
}

impl ObjectKey {
    /// Parse an object-bucket key; `None` if it is not one this schema writes (including
    /// any spelling other than serde_json's compact one).
    pub fn parse(key: &str) -> Option<ObjectKey> {
        let parts: Vec<String> = serde_json::from_str(key).ok()?;
        let kind = kind_of_root_key(parts.first()?)?;
        let parsed = match parts.as_slice() {
            [_, id] => ObjectKey::Marker(kind, id.clone()),
            [_, id, field] => ObjectKey::Field(kind, id.clone(), field.clone()),
            _ => return None,
        };
        // Only the canonical spelling, so that one object has exactly one set of keys.
        let canonical = match &parsed {
            ObjectKey::Marker(k, id) => marker_key(*k, id),
            ObjectKey::Field(k, id, f) => field_key(*k, id, f),
        };
        (canonical == key).then_some(parsed)
    }
}

/// The mutable kind stored under `root_key`, if any.
pub fn kind_of_root_key(root_key: &str) -> Option<ObjectKind> {
    ObjectKind::MAPS
        .into_iter()
        .find(|k| k.root_key() == root_key)
}

/// Longest object id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Whether `id` may name an object: 1 to [`MAX_ID_BYTES`] bytes, no control characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_canonical_spellings_parse() {
        let k = field_key(ObjectKind::Agent, "ana/\"x\"", "name");
        assert_eq!(
            ObjectKey::parse(&k),
            Some(ObjectKey::Field(
                ObjectKind::Agent,
                "ana/\"x\"".into(),
                "name".into()
            ))
        );
        let m = marker_key(ObjectKind::Unit, "kg");
        assert_eq!(m, "[\"units\",\"kg\"]");
        assert!(k.starts_with(&object_prefix(ObjectKind::Agent, "ana/\"x\"")));
        assert!(!field_key(ObjectKind::Agent, "ana2", "name")
            .starts_with(&object_prefix(ObjectKind::Agent, "ana")));
        assert_eq!(ObjectKey::parse("[ \"units\",\"kg\"]"), None);
        assert_eq!(ObjectKey::parse("[\"events\",\"kg\"]"), None);
        assert_eq!(ObjectKey::parse("[\"units\"]"), None);
        assert_eq!(bucket_index("0f"), Some(15));
        assert_eq!(bucket_index("0F"), None);
        assert_eq!(bucket_key(255), "ff");
    }

    #[test]
    fn object_buckets_are_fixed_values() {
        // The hash is part of the format: these values must never change.
        assert_eq!(
            object_bucket(ObjectKind::Agent, "ana"),
            object_bucket(ObjectKind::Agent, "ana")
        );
        let spread: std::collections::HashSet<usize> = (0..2000)
            .map(|i| object_bucket(ObjectKind::EconomicResource, &format!("r{i}")))
            .collect();
        assert!(spread.len() > 240, "{}", spread.len());
    }
}
