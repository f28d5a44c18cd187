//! `reflow sync`: run the node in the foreground, printing a status line for everything that
//! happens (peers connecting and leaving, invites redeemed, changes received or refused),
//! until Ctrl-C or SIGTERM.

use anyhow::Result;
use reflow::{LedgerUpdate, NetworkId, Node, NodeEvent};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

/// One status line, as text or JSON.
struct Out {
    json: bool,
}

impl Out {
    fn line(&self, kind: &str, text: String, extra: Value) {
        if self.json {
            let mut v = json!({"type": kind, "text": text});
            if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
                m.extend(x);
            }
            println!("{v}");
        } else {
            println!("{text}");
        }
    }
}

fn short(x: &impl std::fmt::Display) -> String {
    let s = x.to_string();
    s.chars().take(10).collect()
}

/// A line summing up the peers and the ledger.
fn status(node: &Node, net: NetworkId, out: &Out) -> Result<()> {
    let peers = node.peers(net)?;
    let connected = peers.iter().filter(|p| p.connected).count();
    let (events, heads) = node.read(net, |r| {
        (r.ledger().event_count(), r.ledger().heads().len())
    })?;
    out.line(
        "status",
        format!(
            "status: {connected} peer(s) connected, {} known; {events} events",
            peers.len()
        ),
        json!({"connected": connected, "known": peers.len(), "events": events, "heads": heads}),
    );
    Ok(())
}

/// Run until Ctrl-C or SIGTERM.
pub async fn run(node: &Node, net: NetworkId, json: bool) -> Result<()> {
    let out = Out { json };
    let mut events = node.events();
    let mut updates = node.subscribe(net)?;
    let name = node.read(net, |r| r.ledger().network_name())?;
    let addr = node.addr();
    out.line(
        "start",
        format!(
            "syncing network {name} ({net}) as device {} at {}; Ctrl-C stops",
            node.device(),
            addr.direct
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        json!({"network": net.to_string(), "device": node.device().to_string(),
               "addrs": addr.direct.iter().map(ToString::to_string).collect::<Vec<_>>()}),
    );
    status(node, net, &out)?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            e = events.recv() => match e {
                Ok(e) => {
                    if node_event(&e, net, &out) {
                        status(node, net, &out)?;
                    }
                }
                Err(RecvError::Lagged(n)) => out.line("lagged", format!("({n} status events missed)"), json!({"missed": n})),
                Err(RecvError::Closed) => break,
            },
            u = updates.recv() => match u {
                Ok(u) => update(node, net, &u, &out)?,
                Err(RecvError::Lagged(n)) => out.line("lagged", format!("({n} ledger updates missed)"), json!({"missed": n})),
                Err(RecvError::Closed) => break,
            },
        }
    }
    out.line("stop", "stopping".into(), json!({}));
    Ok(())
}

/// Print a line for a node event of this network; true if the peer set changed.
fn node_event(e: &NodeEvent, net: NetworkId, out: &Out) -> bool {
    match e {
        NodeEvent::Connected {
            network,
            peer,
            inbound,
        } if *network == net => {
            let dir = if *inbound { "from" } else { "to" };
            out.line(
                "connected",
                format!("connected {dir} {peer}"),
                json!({"peer": peer.to_string(), "inbound": inbound}),
            );
            true
        }
        NodeEvent::Disconnected {
            network,
            peer,
            error,
        } if *network == net => {
            let why = error.as_ref().map_or(String::new(), |e| format!(": {e}"));
            out.line(
                "disconnected",
                format!("disconnected from {peer}{why}"),
                json!({"peer": peer.to_string(), "error": error}),
            );
            true
        }
        NodeEvent::InviteRedeemed {
            network,
            device,
            role,
            ..
        } if *network == net => {
            out.line(
                "joined",
                format!("invite redeemed: {device} joined as {role}"),
                json!({"device": device.to_string(), "role": role.to_string()}),
            );
            true
        }
        NodeEvent::Refused {
            network,
            peer,
            by_us,
            reason,
            ..
        } if *network == net => {
            let who = if *by_us { "refused" } else { "was refused by" };
            out.line(
                "refused",
                format!("{who} {}: {reason}", short(peer)),
                json!({"peer": peer.to_string(), "byUs": by_us, "reason": reason}),
            );
            false
        }
        NodeEvent::RetryScheduled {
            network,
            peer,
            attempt,
            after,
        } if *network == net => {
            out.line(
                "retry",
                format!(
                    "will retry {} in {} s (attempt {attempt})",
                    short(peer),
                    after.as_secs().max(1)
                ),
                json!({"peer": peer.to_string(), "attempt": attempt, "afterMs": u64::try_from(after.as_millis()).unwrap_or(u64::MAX)}),
            );
            false
        }
        NodeEvent::ChangesRefused {
            network,
            peer,
            count,
            reason,
        } if *network == net => {
            out.line(
                "changesRefused",
                format!("refused {count} change(s) from {}: {reason}", short(peer)),
                json!({"peer": peer.to_string(), "count": count, "reason": reason}),
            );
            false
        }
        NodeEvent::Discovered { peer, .. } => {
            out.line(
                "discovered",
                format!("found {} on the local network", short(&peer.device)),
                json!({"peer": peer.device.to_string()}),
            );
            false
        }
        _ => false,
    }
}

fn update(node: &Node, net: NetworkId, u: &LedgerUpdate, out: &Out) -> Result<()> {
    let events = node.read(net, |r| r.ledger().event_count())?;
    let from = u
        .from
        .map_or_else(|| "this device".to_string(), |d| d.to_string());
    out.line(
        "changes",
        format!(
            "{} change(s) from {from}; {events} events",
            u.changes.len()
        ),
        json!({"from": u.from.map(|d| d.to_string()), "changes": u.changes.len(), "events": events}),
    );
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
