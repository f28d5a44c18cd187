//! Tickets: everything a device needs to join a network, in one line of text to copy, paste
//! or put in a QR code.
//!
//! A [`Ticket`] is an admin's signed [`Invite`], the bearer secret if it is a bearer invite,
//! the network's id and name, and where the admin's node can be dialed ([`PeerAddr`]). Its
//! text form is `reflow1` followed by the lowercase, unpadded base32 (RFC 4648) of a
//! versioned binary encoding ending in a checksum; the layout is in docs/protocol.md §7.1.
//! Reading is total: any text gives a ticket or a typed [`TicketError`].
//!
//! The text holds the bearer secret: whoever has the text of a bearer ticket can join (once,
//! before it expires). `Debug` redacts the secret; `Display` does not (it is the ticket).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

use crate::identity::{DeviceId, NetworkId};
use crate::membership::{BearerSecret, Invite, InviteAudience, Role};
use crate::net::PeerAddr;
use crate::vf::Id;

/// The prefix of a ticket's text form (the `1` is the text form's version).
pub const TICKET_PREFIX: &str = "reflow1";

/// The version byte of the binary encoding.
const TICKET_VERSION: u8 = 1;

/// Bytes of the checksum at the end of the binary encoding.
const CHECKSUM_LEN: usize = 4;

/// Longest ticket text read (a ticket is a few hundred characters).
pub const MAX_TICKET_LEN: usize = 8 * 1024;

/// An invitation to join a network, with where to redeem it. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The network to join.
    pub network: NetworkId,
    /// The network's name (for people; not checked).
    pub network_name: String,
    /// The admin's signed invite.
    pub invite: Invite,
    /// The bearer secret, for a bearer invite.
    pub secret: Option<BearerSecret>,
    /// The admin's node, which redeems the invite.
    pub inviter: PeerAddr,
}

/// Who a ticket is for, when an admin makes one ([`crate::node::Node::invite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invitee {
    /// Whoever holds the ticket (a bearer invite: the ticket carries a one-time secret).
    Anyone,
    /// This device only (it presents the invite over a connection that authenticates it).
    Device(DeviceId),
}

/// Why a text is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The text does not start with `reflow1`.
    #[error("not a Reflow ticket: it does not start with `{TICKET_PREFIX}`")]
    MissingPrefix,
    /// Longer than [`MAX_TICKET_LEN`].
    #[error("a ticket text of {0} bytes is too long to be a Reflow ticket")]
    TooLong(usize),
    /// The text after the prefix is not base32.
    #[error("the ticket is not valid base32 (mistyped or cut?): {0}")]
    Encoding(String),
    /// The checksum does not match: the text was mistyped, cut or altered.
    #[error("the ticket's checksum does not match: it was mistyped, cut or altered")]
    Checksum,
    /// A binary encoding version this build does not read.
    #[error("ticket version {0} is not supported (this Reflow reads version 1)")]
    UnsupportedVersion(u8),
    /// The bytes do not form a ticket (a field ends early, has a bad value, or bytes are left
    /// over).
    #[error("malformed ticket: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> TicketError {
    TicketError::Malformed(what.into())
}

impl Ticket {
    /// The binary encoding (docs/protocol.md §7.1), checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.push(TICKET_VERSION);
        out.extend_from_slice(&self.network.0);
        put_str16(&mut out, &self.network_name);
        let inv = &self.invite;
        out.extend_from_slice(&inv.version.to_be_bytes());
        if inv.network == self.network {
            out.push(0);
        } else {
            out.push(1);
            out.extend_from_slice(&inv.network.0);
        }
        out.extend_from_slice(inv.issuer.as_bytes());
        out.push(match inv.role {
            Role::Observer => 0,
            Role::Member => 1,
            Role::Admin => 2,
        });
        match &inv.agent {
            None => out.push(0),
            Some(agent) => {
                out.push(1);
                put_str16(&mut out, &agent.0);
            }
        }
        out.extend_from_slice(&inv.expires_at.to_be_bytes());
        put_hex(&mut out, &inv.nonce);
        match &inv.audience {
            InviteAudience::Device { device } => {
                out.push(0);
                out.extend_from_slice(device.as_bytes());
            }
            InviteAudience::Bearer { secret_hash } => {
                out.push(1);
                put_hex(&mut out, secret_hash);
            }
        }
        put_hex(&mut out, &inv.signature);
        match &self.secret {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.0);
            }
        }
        out.extend_from_slice(self.inviter.device.as_bytes());
        let direct = &self.inviter.direct[..self.inviter.direct.len().min(255)];
        out.push(direct.len() as u8);
        for a in direct {
            match a.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        let relays = &self.inviter.relays[..self.inviter.relays.len().min(255)];
        out.push(relays.len() as u8);
        for r in relays {
            put_str16(&mut out, r);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum[..CHECKSUM_LEN]);
        out
    }

    /// Read the binary encoding made by [`Ticket::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Ticket, TicketError> {
        if bytes.len() < 1 + CHECKSUM_LEN {
            return Err(malformed(format!("{} bytes is too short", bytes.len())));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body)[..CHECKSUM_LEN] != *sum {
            return Err(TicketError::Checksum);
        }
        let mut r = Reader {
            bytes: body,
            pos: 0,
        };
        let version = r.u8("version")?;
        if version != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion(version));
        }
        let network = NetworkId(r.array("network id")?);
        let network_name = r.str16("network name")?;
        let invite_version = u32::from_be_bytes(r.array("invite version")?);
        let invite_network = match r.u8("invite network flag")? {
            0 => network,
            1 => NetworkId(r.array("invite network")?),
            f => return Err(malformed(format!("invite network flag {f} (0 or 1)"))),
        };
        let issuer = r.device("issuer")?;
        let role = match r.u8("role")? {
            0 => Role::Observer,
            1 => Role::Member,
            2 => Role::Admin,
            n => return Err(malformed(format!("role {n} (0, 1 or 2)"))),
        };
        let agent = match r.u8("agent flag")? {
            0 => None,
            1 => Some(Id(r.str16("agent")?)),
            f => return Err(malformed(format!("agent flag {f} (0 or 1)"))),
        };
        let expires_at = u64::from_be_bytes(r.array("expiry")?);
        let nonce = r.hex("nonce")?;
        let audience = match r.u8("audience")? {
            0 => InviteAudience::Device {
                device: r.device("invited device")?,
            },
            1 => InviteAudience::Bearer {
                secret_hash: r.hex("secret hash")?,
            },
            n => return Err(malformed(format!("audience {n} (0 or 1)"))),
        };
        let signature = r.hex("signature")?;
        let secret = match r.u8("secret flag")? {
            0 => None,
            1 => Some(BearerSecret(r.array("secret")?)),
            f => return Err(malformed(format!("secret flag {f} (0 or 1)"))),
        };
        let device = r.device("inviter")?;
        let n = r.u8("address count")?;
        let mut direct = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let ip = match r.u8("address family")? {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("IPv4 address")?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("IPv6 address")?)),
                f => return Err(malformed(format!("address family {f} (4 or 6)"))),
            };
            let port = u16::from_be_bytes(r.array("port")?);
            direct.push(SocketAddr::new(ip, port));
        }
        let n = r.u8("relay count")?;
        let mut relays = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            relays.push(r.str16("relay URL")?);
        }
        if r.pos != body.len() {
            return Err(malformed(format!("{} bytes left over", body.len() - r.pos)));
        }
        Ok(Ticket {
            network,
            network_name,
            invite: Invite {
                version: invite_version,
                network: invite_network,
                issuer,
                role,
                agent,
                expires_at,
                nonce,
                audience,
                signature,
            },
            secret,
            inviter: PeerAddr {
                device,
                direct,
                relays,
            },
        })
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TICKET_PREFIX)?;
        f.write_str(&BASE32_NOPAD.encode(&self.to_bytes()).to_ascii_lowercase())
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    /// Read a ticket's text: surrounding whitespace is ignored, and upper case is read as
    /// lower case (QR codes' alphanumeric mode is upper case).
    fn from_str(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong(text.len()));
        }
        let body = match text.get(..TICKET_PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(TICKET_PREFIX) => &text[TICKET_PREFIX.len()..],
            _ => return Err(TicketError::MissingPrefix),
        };
        let bytes = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|e| TicketError::Encoding(e.to_string()))?;
        Ticket::from_bytes(&bytes)
    }
}

/// A string of at most 65,535 bytes: u16 length, UTF-8 (longer strings are cut on a
/// character boundary; names, ids and URLs are far shorter).
fn put_str16(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// A hex field (nonce, secret hash, signature): tag 0, u8 length and the bytes, if it is
/// lowercase hex of at most 255 bytes (always, for invites Reflow issues); else tag 1 and the
/// string, so that any invite survives the round trip exactly (and fails its signature check
/// where it should).
fn put_hex(out: &mut Vec<u8>, s: &str) {
    let canonical = s.len() <= 510 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match hex::decode(s) {
        Ok(bytes) if canonical => {
            out.push(0);
            out.push(bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        _ => {
            out.push(1);
            put_str16(out, s);
        }
    }
}

/// A cursor that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], TicketError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(malformed(format!("{what}: needs {n} bytes, {left} left")));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], TicketError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, TicketError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn str16(&mut self, what: &str) -> Result<String, TicketError> {
        let len = usize::from(u16::from_be_bytes(self.array(what)?));
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| malformed(format!("{what}: {e}")))
    }

    fn hex(&mut self, what: &str) -> Result<String, TicketError> {
        match self.u8(what)? {
            0 => {
                let len = usize::from(self.u8(what)?);
                Ok(hex::encode(self.take(len, what)?))
            }
            1 => self.str16(what),
            t => Err(malformed(format!("{what}: tag {t} (0 or 1)"))),
        }
    }

    fn device(&mut self, what: &str) -> Result<DeviceId, TicketError> {
        DeviceId::from_bytes(&self.array(what)?)
            .map_err(|e| malformed(format!("{what} is not a device key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    fn ticket(secret: bool) -> Ticket {
        let key = DeviceKey::generate().expect("key");
        let network = NetworkId([3; 32]);
        let (audience, s) = if secret {
            let s = BearerSecret([9; 32]);
            (
                InviteAudience::Bearer {
                    secret_hash: hex::encode(Sha256::digest(s.0)),
                },
                Some(s),
            )
        } else {
            (InviteAudience::Device { device: key.id() }, None)
        };
        Ticket {
            network,
            network_name: "Repair Café".into(),
            invite: Invite::issue(
                &key,
                network,
                Role::Member,
                Some(Id::from("cafe")),
                audience,
                1_900_000_000,
            )
            .expect("invite"),
            secret: s,
            inviter: PeerAddr {
                device: key.id(),
                direct: vec![
                    "127.0.0.1:4433".parse().expect("addr"),
                    "[::1]:9".parse().expect("addr"),
                ],
                relays: vec!["https://relay.example.invalid./".into()],
            },
        }
    }

    #[test]
    fn text_round_trip_and_checksum() {
        for secret in [true, false] {
            let t = ticket(secret);
            let text = t.to_string();
            assert!(text.starts_with(TICKET_PREFIX));
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert_eq!(text.parse::<Ticket>().expect("parse"), t);
            assert_eq!(
                text.to_ascii_uppercase().parse::<Ticket>().expect("upper"),
                t
            );
            // Every single-character change is caught.
            let bytes = text.as_bytes();
            for i in TICKET_PREFIX.len()..bytes.len() {
                let mut m = bytes.to_vec();
                m[i] = if m[i] == b'a' { b'b' } else { b'a' };
                let m = String::from_utf8(m).expect("ascii");
                assert!(m.parse::<Ticket>().is_err(), "change at {i} not caught");
            }
        }
    }

    #[test]
    fn non_canonical_invites_survive_the_round_trip() {
        let mut t = ticket(true);
        t.invite.nonce = "NOT hex".into();
        t.invite.signature = "abc".into();
        t.invite.network = NetworkId([4; 32]);
        t.invite.agent = None;
        assert_eq!(t.to_string().parse::<Ticket>().expect("parse"), t);
    }
}
