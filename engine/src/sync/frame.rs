//! Frames of the Reflow sync protocol, version 3. Byte layout: docs/protocol.md.
//!
//! A frame on the wire is a 4-byte big-endian length prefix followed by the frame body. The
//! body starts with the protocol version and the frame type. Every length inside a frame is
//! checked against the bytes that are actually there before anything is allocated, so
//! [`Frame::decode`] is total: any byte string gives a frame or a [`FrameError`], never a panic.

use automerge::Change;

use crate::identity::{Attestation, ChangeSignature, SignedChange};
use crate::membership::{BearerSecret, Invite, InviteError};
use crate::vf::{Agent, Id};

/// Protocol version carried in every frame and in the ALPN. Version 2 added the
/// compressed frame (type `0x05`); version 3 carries ledgers of schema version 2 (judged by
/// admission), which version-2 software cannot read. Frames are the same as in version 2;
/// nodes of different versions do not connect (no common ALPN: the handshake fails).
/// Version 4 added the Document frame (type `0x06`, a bootstrap by document); version 5
/// sends it to far-behind peers too (a catch-up by document), which a version-4 node with a
/// replica refuses, so the layout is version 4's and only the version differs.
pub const PROTOCOL_VERSION: u8 = 5;

/// Largest frame body accepted or sent (bytes after the length prefix, version and type
/// included).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Length of the length prefix that precedes every frame body.
pub const LEN_PREFIX: usize = 4;

/// Longest reason text of a [`Frame::Refuse`] (bytes of UTF-8).
pub const MAX_REASON_LEN: usize = 1024;

/// Frame type byte of [`Frame::Sync`].
const TYPE_SYNC: u8 = 0x01;
/// Frame type byte of [`Frame::Push`].
const TYPE_PUSH: u8 = 0x02;
/// Frame type byte of [`Frame::Refuse`].
const TYPE_REFUSE: u8 = 0x03;
/// Frame type byte of [`Frame::Redeem`].
const TYPE_REDEEM: u8 = 0x04;
/// Frame type byte of a compressed Sync or Push frame: the whole inner body, DEFLATE
/// (RFC 1951) compressed, after its inflated length. Not a [`Frame`] variant: encoding picks it
/// when it saves space, decoding returns the inner frame.
const TYPE_COMPRESSED: u8 = 0x05;
/// Frame type: a part of a saved document and, in its last part, the attestations that cover
/// its changes (a bootstrap, version 4).
const TYPE_DOCUMENT: u8 = 0x06;

/// Earlier protocol versions whose frames still decode (golden files), though no peer of
/// them can connect (their ALPN differs): version 4's frames have this version's layout;
/// version 3's are types 1–5 of it (it had no Document frame).
const VERSION_4: u8 = 4;
/// See [`VERSION_4`].
const VERSION_3: u8 = 3;

/// Largest whole document a bootstrap may announce (the sum of its parts): 1 GiB.
pub const MAX_DOCUMENT_LEN: u64 = 1 << 30;

/// Bytes of one attestation in a Document frame: actor (40), seq (8), hash (32),
/// signature (64).
const ATTESTATION_LEN: usize = 40 + 8 + 32 + 64;
/// Sync and Push bodies at least this long are compressed when that saves a tenth or more.
const COMPRESS_MIN: usize = 2048;

/// Largest [`Frame::Redeem`] body accepted. The first frame of a device that is not a member
/// is read with this limit instead of [`MAX_FRAME_LEN`]: a stranger cannot make a node
/// allocate more.
pub const MAX_REDEEM_LEN: usize = 64 * 1024;

/// Bytes of one change entry besides the change itself: signature and length.
const ENTRY_OVERHEAD: usize = 64 + 4;
/// Smallest Automerge chunk: magic (4), checksum (4), type (1), length (1 or more).
const MIN_CHUNK: usize = 10;
/// The Automerge chunk type byte of an uncompressed change.
const CHUNK_TYPE_CHANGE: u8 = 1;
/// Offset of the chunk type byte in an Automerge chunk.
const CHUNK_TYPE_OFFSET: usize = 8;

/// Why a peer refuses a connection (carried by [`Frame::Refuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseCode {
    /// The connecting device is not a member of the network (or was removed).
    NotAMember,
    /// The peer does not replicate the network asked for.
    WrongNetwork,
    /// The peer does not speak this protocol version.
    UnsupportedVersion,
    /// The connecting device broke the protocol.
    ProtocolViolation,
    /// The peer has too many connections; try later.
    Busy,
    /// The invite is not valid: its signature does not verify (altered or forged) or it is
    /// malformed.
    InviteInvalid,
    /// The invite expired (by the redeeming admin's clock).
    InviteExpired,
    /// The invite was already redeemed (invites work once).
    InviteAlreadyRedeemed,
    /// The bearer secret is missing or wrong.
    InviteWrongSecret,
    /// The invite is for another device.
    InviteWrongDevice,
    /// The invite is for another network.
    InviteWrongNetwork,
    /// The invite's issuer is no longer an admin.
    InviteIssuerNotAdmin,
    /// The node cannot redeem the invite (it is not an admin, the agent is not valid, its
    /// store failed); the reason says which.
    InviteNotRedeemed,
    /// A code this version does not know.
    Other(u16),
}

impl RefuseCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            RefuseCode::NotAMember => 1,
            RefuseCode::WrongNetwork => 2,
            RefuseCode::UnsupportedVersion => 3,
            RefuseCode::ProtocolViolation => 4,
            RefuseCode::Busy => 5,
            RefuseCode::InviteInvalid => 6,
            RefuseCode::InviteExpired => 7,
            RefuseCode::InviteAlreadyRedeemed => 8,
            RefuseCode::InviteWrongSecret => 9,
            RefuseCode::InviteWrongDevice => 10,
            RefuseCode::InviteWrongNetwork => 11,
            RefuseCode::InviteIssuerNotAdmin => 12,
            RefuseCode::InviteNotRedeemed => 13,
            RefuseCode::Other(n) => n,
        }
    }

    /// The code of a number read from the wire.
    pub fn from_u16(n: u16) -> RefuseCode {
        match n {
            1 => RefuseCode::NotAMember,
            2 => RefuseCode::WrongNetwork,
            3 => RefuseCode::UnsupportedVersion,
            4 => RefuseCode::ProtocolViolation,
            5 => RefuseCode::Busy,
            6 => RefuseCode::InviteInvalid,
            7 => RefuseCode::InviteExpired,
            8 => RefuseCode::InviteAlreadyRedeemed,
            9 => RefuseCode::InviteWrongSecret,
            10 => RefuseCode::InviteWrongDevice,
            11 => RefuseCode::InviteWrongNetwork,
            12 => RefuseCode::InviteIssuerNotAdmin,
            13 => RefuseCode::InviteNotRedeemed,
            n => RefuseCode::Other(n),
        }
    }

    /// Whether this is the refusal of an invite (codes 6 to 13).
    pub fn is_invite_refusal(self) -> bool {
        (6..=13).contains(&self.to_u16())
    }

    /// The code that refuses an invite for this reason.
    pub fn of_invite_error(e: &InviteError) -> RefuseCode {
        match e {
            InviteError::Malformed(_) | InviteError::BadSignature => RefuseCode::InviteInvalid,
            InviteError::Expired { .. } => RefuseCode::InviteExpired,
            InviteError::AlreadyRedeemed { .. } => RefuseCode::InviteAlreadyRedeemed,
            InviteError::WrongSecret => RefuseCode::InviteWrongSecret,
            InviteError::WrongDevice => RefuseCode::InviteWrongDevice,
            InviteError::WrongNetwork(_) => RefuseCode::InviteWrongNetwork,
            InviteError::IssuerNotAdmin => RefuseCode::InviteIssuerNotAdmin,
        }
    }
}

impl std::fmt::Display for RefuseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseCode::NotAMember => f.write_str("not a member"),
            RefuseCode::WrongNetwork => f.write_str("wrong network"),
            RefuseCode::UnsupportedVersion => f.write_str("unsupported protocol version"),
            RefuseCode::ProtocolViolation => f.write_str("protocol violation"),
            RefuseCode::Busy => f.write_str("busy"),
            RefuseCode::InviteInvalid => f.write_str("invalid invite"),
            RefuseCode::InviteExpired => f.write_str("invite expired"),
            RefuseCode::InviteAlreadyRedeemed => f.write_str("invite already redeemed"),
            RefuseCode::InviteWrongSecret => f.write_str("wrong invite secret"),
            RefuseCode::InviteWrongDevice => f.write_str("invite for another device"),
            RefuseCode::InviteWrongNetwork => f.write_str("invite for another network"),
            RefuseCode::InviteIssuerNotAdmin => f.write_str("invite issuer not an admin"),
            RefuseCode::InviteNotRedeemed => f.write_str("invite not redeemed"),
            RefuseCode::Other(n) => write!(f, "code {n}"),
        }
    }
}

/// A decoded frame.
// `Redeem` is larger than the others but is sent at most once per connection, first; boxing
// it would cost every Sync/Push frame nothing and every reader a deref for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Frame {
    /// An Automerge sync message with its changes taken out, and those changes with their
    /// signatures.
    Sync {
        /// The sender's sequence number of this sync message in this session (1, 2, …). A
        /// receiver ignores the bookkeeping of a message whose number is not above the last
        /// one it handled (a duplicate or a late one), but still takes its changes.
        seq: u64,
        /// The encoded `automerge::sync::Message`, its `changes` emptied.
        message: Vec<u8>,
        /// The changes it carried, signed.
        changes: Vec<SignedChange>,
    },
    /// Changes pushed outside a sync round (also the overflow of a sync reply too big for one
    /// frame).
    Push {
        /// The changes, signed.
        changes: Vec<SignedChange>,
    },
    /// The sender refuses the connection and closes it after this frame.
    Refuse {
        /// Why, as a code.
        code: RefuseCode,
        /// Why, for people (at most [`MAX_REASON_LEN`] bytes).
        reason: String,
    },
    /// A device that is not a member yet asks the node to redeem an invite for it (the
    /// device is the one the connection authenticated). Only valid as the first frame of a
    /// connection, from a device that is not a member; the answer is a `Refuse` frame with an
    /// invite code (6–13) or, once redeemed, the sync session (the device joins). At most
    /// [`MAX_REDEEM_LEN`] bytes.
    Redeem {
        /// The invite.
        invite: Invite,
        /// The bearer secret, for a bearer invite.
        secret: Option<BearerSecret>,
        /// The Agent the device will act for, created by the admin if the invite names none.
        agent: Option<Agent>,
    },
    /// A part of the sender's saved document (Automerge's compressed `save`), sent instead of
    /// its changes to a peer that has none (a bootstrap, docs/protocol.md §2.7). Parts travel
    /// in order; the last one (`offset + bytes.len() == total`) carries the attestations.
    Document {
        /// Length of the whole saved document, the same in every part.
        total: u64,
        /// Where this part starts in the document.
        offset: u64,
        /// The part's bytes.
        bytes: Vec<u8>,
        /// The attestations covering the document's changes (empty except in the last part).
        attestations: Vec<Attestation>,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A protocol version this build does not speak.
    #[error("frame version {0} is not supported (this Reflow speaks version 5)")]
    UnknownVersion(u8),
    /// A frame type this version does not define.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The frame ends early or has bytes left over.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> FrameError {
    FrameError::Malformed(what.into())
}

/// A cursor over a frame body that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if n > self.remaining() {
            return Err(malformed(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<usize, FrameError> {
        let n = u32::from_be_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| malformed(format!("{what}: {n} does not fit")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn finish(&self) -> Result<(), FrameError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(malformed(format!("{n} bytes left over after the frame"))),
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Frame parts are bounded by MAX_FRAME_LEN, far below u32::MAX; saturate rather than wrap
    // so that an oversized part can never be read back as a small one.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// The encoded size of a list of changes (count and entries).
pub(crate) fn changes_len(changes: &[SignedChange]) -> usize {
    4 + changes
        .iter()
        .map(|c| change_entry_len(&c.change))
        .sum::<usize>()
}

/// The encoded size of one change entry.
pub(crate) fn change_entry_len(change: &Change) -> usize {
    ENTRY_OVERHEAD + change.raw_bytes().len()
}

fn encode_changes(out: &mut Vec<u8>, changes: &[SignedChange]) {
    put_u32(out, changes.len());
    for c in changes {
        out.extend_from_slice(&c.signature.0);
        let raw = c.change.raw_bytes();
        put_u32(out, raw.len());
        out.extend_from_slice(raw);
    }
}

fn decode_changes(r: &mut Reader<'_>) -> Result<Vec<SignedChange>, FrameError> {
    let n = r.u32("change count")?;
    // Every entry takes at least ENTRY_OVERHEAD + MIN_CHUNK bytes: refuse a count the bytes
    // cannot hold before reserving anything for it.
    if n > r.remaining() / (ENTRY_OVERHEAD + MIN_CHUNK) {
        return Err(malformed(format!(
            "{n} changes cannot fit in the {} bytes left",
            r.remaining()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let signature = ChangeSignature(r.array::<64>("change signature")?);
        let len = r.u32("change length")?;
        let raw = r.take(len, "change")?;
        out.push(SignedChange {
            change: decode_change(raw).map_err(|e| malformed(format!("change {i}: {e}")))?,
            signature,
        });
    }
    Ok(out)
}

/// A compressed frame (length prefix included) holding `body`, if that is a tenth smaller.
fn compress_body(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(LEN_PREFIX + body.len() / 2);
    put_u32(&mut out, 0); // the length, set below
    out.push(PROTOCOL_VERSION);
    out.push(TYPE_COMPRESSED);
    put_u32(&mut out, body.len());
    let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    z.write_all(body).ok()?;
    let mut out = z.finish().ok()?;
    let len = out.len() - LEN_PREFIX;
    if len * 10 > body.len() * 9 {
        return None;
    }
    out[..LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Some(out)
}

/// Inflate a compressed frame's body, which must come to exactly `len` bytes, at most
/// [`MAX_FRAME_LEN`]: inflation stops one byte past `len`, so a bomb costs no more memory
/// than an honest frame.
fn inflate_body(compressed: &[u8], len: usize, max: usize) -> Result<Vec<u8>, FrameError> {
    use std::io::Read as _;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    let mut inner = Vec::with_capacity(len);
    flate2::read::DeflateDecoder::new(compressed)
        .take(len as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(|e| malformed(format!("compressed body: {e}")))?;
    if inner.len() != len {
        return Err(malformed(format!(
            "compressed body inflates to {}{} bytes, not the {len} announced",
            if inner.len() > len { "more than " } else { "" },
            inner.len().min(len)
        )));
    }
    Ok(inner)
}

/// Parse one uncompressed Automerge change chunk. Document chunks, compressed chunks (whose
/// inflated size the frame limit does not bound) and chunks whose checksum does not match
/// their hash are refused.
pub(crate) fn decode_change(raw: &[u8]) -> Result<Change, String> {
    if raw.len() < MIN_CHUNK {
        return Err(format!("{} bytes is too short for a change", raw.len()));
    }
    match raw[CHUNK_TYPE_OFFSET] {
        CHUNK_TYPE_CHANGE => {}
        0 => return Err("a whole-document chunk, not a change".into()),
        2 => return Err("a compressed change chunk (only uncompressed changes travel)".into()),
        t => return Err(format!("an Automerge chunk of type {t}, not a change")),
    }
    let change = Change::try_from(raw).map_err(|e| e.to_string())?;
    if change.hash().0[..4] != raw[4..8] {
        return Err("the chunk checksum does not match the change hash".into());
    }
    Ok(change)
}

/// The compact JSON of a Redeem frame's invite or agent (plain structs of strings and
/// numbers: serialization cannot fail).
fn redeem_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A Redeem frame's Agent as sent: its id (which `Agent`'s own JSON leaves out, the id being
/// the key it is stored under) and its fields, in one JSON object.
#[derive(serde::Serialize, serde::Deserialize)]
struct RedeemAgent {
    id: Id,
    #[serde(flatten)]
    agent: Agent,
}

/// The compact JSON of a Redeem frame's Agent, id included.
fn agent_json(agent: &Agent) -> Vec<u8> {
    redeem_json(&RedeemAgent {
        id: agent.id.clone(),
        agent: agent.clone(),
    })
}

/// Read a Redeem frame's Agent (its id included; an empty id is malformed).
fn agent_from_json(bytes: &[u8]) -> Result<Agent, FrameError> {
    let RedeemAgent { id, mut agent } =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("agent: {e}")))?;
    if id.0.is_empty() {
        return Err(malformed("agent: empty id"));
    }
    agent.id = id;
    Ok(agent)
}

/// The bytes of a reason that are sent: at most [`MAX_REASON_LEN`], cut on a character
/// boundary.
fn reason_bytes(reason: &str) -> &[u8] {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

impl Frame {
    /// A refusal, its reason cut to [`MAX_REASON_LEN`] bytes (on a character boundary).
    pub fn refuse(code: RefuseCode, reason: impl Into<String>) -> Frame {
        let mut reason = reason.into();
        let len = reason_bytes(&reason).len();
        reason.truncate(len);
        Frame::Refuse { code, reason }
    }

    /// The changes this frame carries (none for a refusal).
    pub fn changes(&self) -> &[SignedChange] {
        match self {
            Frame::Sync { changes, .. } | Frame::Push { changes } => changes,
            Frame::Refuse { .. } | Frame::Redeem { .. } | Frame::Document { .. } => &[],
        }
    }

    /// The length of the plain frame body (the length prefix excluded): what
    /// [`Frame::encode`] makes, or more when it sends a large Sync or Push frame compressed.
    pub fn body_len(&self) -> usize {
        2 + match self {
            Frame::Sync {
                message, changes, ..
            } => 8 + 4 + message.len() + changes_len(changes),
            Frame::Push { changes } => changes_len(changes),
            Frame::Refuse { reason, .. } => 4 + reason_bytes(reason).len(),
            Frame::Redeem {
                invite,
                secret,
                agent,
            } => {
                4 + redeem_json(invite).len()
                    + 1
                    + secret.as_ref().map_or(0, |s| s.0.len())
                    + 4
                    + agent.as_ref().map_or(0, |a| agent_json(a).len())
            }
            Frame::Document {
                bytes,
                attestations,
                ..
            } => 8 + 8 + 4 + bytes.len() + 4 + attestations.len() * ATTESTATION_LEN,
        }
    }

    /// Encode (length prefix included). Sessions never make a frame whose body is over
    /// [`MAX_FRAME_LEN`]; a hand-made one that is would be refused by [`Frame::decode`].
    pub fn encode(&self) -> Vec<u8> {
        let body_len = self.body_len();
        let mut out = Vec::with_capacity(LEN_PREFIX + body_len);
        put_u32(&mut out, body_len);
        out.push(PROTOCOL_VERSION);
        match self {
            Frame::Sync {
                seq,
                message,
                changes,
            } => {
                out.push(TYPE_SYNC);
                out.extend_from_slice(&seq.to_be_bytes());
                put_u32(&mut out, message.len());
                out.extend_from_slice(message);
                encode_changes(&mut out, changes);
            }
            Frame::Push { changes } => {
                out.push(TYPE_PUSH);
                encode_changes(&mut out, changes);
            }
            Frame::Refuse { code, reason } => {
                out.push(TYPE_REFUSE);
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                let reason = reason_bytes(reason);
                // At most MAX_REASON_LEN < u16::MAX bytes.
                out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
                out.extend_from_slice(reason);
            }
            Frame::Redeem {
                invite,
                secret,
                agent,
            } => {
                out.push(TYPE_REDEEM);
                let invite = redeem_json(invite);
                put_u32(&mut out, invite.len());
                out.extend_from_slice(&invite);
                match secret {
                    Some(s) => {
                        out.push(1);
                        out.extend_from_slice(&s.0);
                    }
                    None => out.push(0),
                }
                let agent = agent.as_ref().map(agent_json).unwrap_or_default();
                put_u32(&mut out, agent.len());
                out.extend_from_slice(&agent);
            }
            Frame::Document {
                total,
                offset,
                bytes,
                attestations,
            } => {
                out.push(TYPE_DOCUMENT);
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                put_u32(&mut out, bytes.len());
                out.extend_from_slice(bytes);
                put_u32(&mut out, attestations.len());
                for a in attestations {
                    // Reflow actors are 40 bytes (checked when decoding); another length
                    // cannot be attested by a device, so it is padded or cut and will not
                    // verify.
                    let mut actor = [0u8; 40];
                    let raw = a.actor.to_bytes();
                    let n = raw.len().min(40);
                    actor[..n].copy_from_slice(&raw[..n]);
                    out.extend_from_slice(&actor);
                    out.extend_from_slice(&a.seq.to_be_bytes());
                    out.extend_from_slice(&a.hash.0);
                    out.extend_from_slice(&a.signature.0);
                }
            }
        }
        debug_assert_eq!(out.len(), LEN_PREFIX + body_len);
        if matches!(self, Frame::Sync { .. } | Frame::Push { .. }) && body_len >= COMPRESS_MIN {
            if let Some(compressed) = compress_body(&out[LEN_PREFIX..]) {
                return compressed;
            }
        }
        out
    }

    /// The body length announced by a length prefix, refused if over [`MAX_FRAME_LEN`]: read
    /// the 4 prefix bytes, call this, and only then read (and allocate for) the body.
    pub fn read_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, FrameError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(len)
    }

    /// Take one whole frame from the front of a byte buffer (length prefix included): `None`
    /// if the buffer does not hold a whole frame yet, else the frame and how many bytes it
    /// took. An oversized length prefix is refused before the body arrives.
    pub fn split(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(prefix) = buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut p = [0u8; LEN_PREFIX];
        p.copy_from_slice(prefix);
        let len = Frame::read_len(p)?;
        match buf.get(LEN_PREFIX..LEN_PREFIX + len) {
            Some(body) => Ok(Some((Frame::decode(body)?, LEN_PREFIX + len))),
            None => Ok(None),
        }
    }

    /// Decode one frame body (after the length prefix has been read and checked).
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        Frame::decode_limited(body, MAX_FRAME_LEN)
    }

    /// [`Frame::decode`] where a compressed body may inflate to at most `max` bytes: the first
    /// frame of a device that is not (yet) a member is read with [`MAX_REDEEM_LEN`], so a
    /// stranger's small frame never inflates into a large allocation.
    pub fn decode_limited(body: &[u8], max: usize) -> Result<Frame, FrameError> {
        let max = max.min(MAX_FRAME_LEN);
        if body.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLong {
                len: body.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let mut r = Reader {
            bytes: body,
            pos: 0,
        };
        let version = r.u8("version")?;
        if version != PROTOCOL_VERSION && version != VERSION_4 && version != VERSION_3 {
            return Err(FrameError::UnknownVersion(version));
        }
        let kind = r.u8("frame type")?;
        if version == VERSION_3 && kind == TYPE_DOCUMENT {
            return Err(FrameError::UnknownType(kind));
        }
        let frame = match kind {
            TYPE_COMPRESSED => {
                let len = r.u32("inflated length")?;
                let inner = inflate_body(r.take(r.remaining(), "compressed body")?, len, max)?;
                return match inner.get(1) {
                    Some(&TYPE_SYNC) | Some(&TYPE_PUSH) => Frame::decode_limited(&inner, max),
                    _ => Err(malformed(
                        "a compressed frame holds only a Sync or Push frame",
                    )),
                };
            }
            TYPE_SYNC => {
                let seq = r.u64("sequence number")?;
                let len = r.u32("message length")?;
                let message = r.take(len, "sync message")?.to_vec();
                let changes = decode_changes(&mut r)?;
                Frame::Sync {
                    seq,
                    message,
                    changes,
                }
            }
            TYPE_PUSH => Frame::Push {
                changes: decode_changes(&mut r)?,
            },
            TYPE_REFUSE => {
                let code = RefuseCode::from_u16(r.u16("refusal code")?);
                let len = usize::from(r.u16("reason length")?);
                if len > MAX_REASON_LEN {
                    return Err(malformed(format!(
                        "a reason of {len} bytes is over the limit of {MAX_REASON_LEN}"
                    )));
                }
                let reason = std::str::from_utf8(r.take(len, "reason")?)
                    .map_err(|e| malformed(format!("reason: {e}")))?
                    .to_string();
                Frame::Refuse { code, reason }
            }
            TYPE_REDEEM => {
                let len = r.u32("invite length")?;
                let invite = serde_json::from_slice(r.take(len, "invite")?)
                    .map_err(|e| malformed(format!("invite: {e}")))?;
                let secret = match r.u8("secret flag")? {
                    0 => None,
                    1 => Some(BearerSecret(r.array::<32>("secret")?)),
                    f => return Err(malformed(format!("secret flag {f} (0 or 1)"))),
                };
                let len = r.u32("agent length")?;
                let agent = match len {
                    0 => None,
                    _ => Some(agent_from_json(r.take(len, "agent")?)?),
                };
                Frame::Redeem {
                    invite,
                    secret,
                    agent,
                }
            }
            TYPE_DOCUMENT => {
                let total = r.u64("document length")?;
                let offset = r.u64("part offset")?;
                let len = r.u32("part length")?;
                if total > MAX_DOCUMENT_LEN {
                    return Err(malformed(format!(
                        "a document of {total} bytes is over the limit of {MAX_DOCUMENT_LEN}"
                    )));
                }
                if offset.checked_add(len as u64).is_none_or(|end| end > total) {
                    return Err(malformed(format!(
                        "a part of {len} bytes at {offset} runs past the document's {total}"
                    )));
                }
                let bytes = r.take(len, "document part")?.to_vec();
                let n = r.u32("attestation count")?;
                if n > r.remaining() / ATTESTATION_LEN {
                    return Err(malformed(format!(
                        "{n} attestations cannot fit in the {} bytes left",
                        r.remaining()
                    )));
                }
                let mut attestations = Vec::with_capacity(n);
                for _ in 0..n {
                    let actor = automerge::ActorId::from(r.array::<40>("attested actor")?);
                    let seq = r.u64("attested seq")?;
                    let hash = automerge::ChangeHash(r.array::<32>("attested hash")?);
                    let signature = ChangeSignature(r.array::<64>("attestation signature")?);
                    attestations.push(Attestation {
                        actor,
                        seq,
                        hash,
                        signature,
                    });
                }
                Frame::Document {
                    total,
                    offset,
                    bytes,
                    attestations,
                }
            }
            t => return Err(FrameError::UnknownType(t)),
        };
        r.finish()?;
        Ok(frame)
    }
}
