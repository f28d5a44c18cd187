//! Local-network discovery: devices on the same link (a Wi-Fi, a LAN) find each other with
//! no ticket, no relay and no internet.
//!
//! A node with [`NodeConfig::mdns`](super::NodeConfig::mdns) on advertises its device id and
//! direct addresses by mDNS (service `_reflow._udp.local`, through
//! [`iroh_mdns_address_lookup`]) and listens for the other Reflow nodes on the link. The
//! mDNS lookup is also registered with the endpoint, so a device known by id alone
//! ([`PeerAddr::new`]) can be dialed once it was seen on the link.
//!
//! For each device found, the node emits [`NodeEvent::Discovered`] with the networks (of
//! those it holds) in whose replica the device is a member, and connects to it for each of
//! them, as [`Node::connect`](super::Node::connect) would. Whether the device is a member is
//! decided by this node's replica only: the advertisement says nothing of networks, and a
//! device that is not a member is never dialed. When both devices see each other, the one
//! with the smaller device id dials at once and the other only after [`DIAL_GRACE`], if no
//! connection is open by then: one connection per pair and network in the usual case.
//!
//! What is advertised: the device id and the addresses the endpoint is bound to, to anyone on
//! the link. Nothing of the networks or ledgers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
use n0_future::StreamExt;
use tracing::{debug, info, warn, Instrument};

use super::{lock, Inner, NodeEvent};
use crate::identity::{DeviceId, NetworkId};
use crate::net::PeerAddr;

/// The mDNS service name (`_reflow._udp.local`): only Reflow nodes are seen.
pub const SERVICE_NAME: &str = "reflow";

/// How long the device with the larger id waits for the other to dial before it dials.
pub const DIAL_GRACE: Duration = Duration::from_secs(2);

/// Start advertising and listening on the local network, and connecting to the members found.
/// Discovery is best effort: if the mDNS sockets cannot be opened (no IPv4 nor IPv6, no
/// multicast), the node goes on without it and says so in the log.
pub(super) fn start(inner: &Arc<Inner>) {
    let mdns = match MdnsAddressLookup::builder()
        .service_name(SERVICE_NAME)
        .build(inner.endpoint.id())
    {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "local-network discovery (mDNS) could not start; going on without it");
            return;
        }
    };
    match inner.endpoint.address_lookup() {
        Ok(lookup) => lookup.add(mdns.clone()),
        Err(e) => {
            warn!(error = %e, "the endpoint is closed; no local-network discovery");
            return;
        }
    }
    info!(service = SERVICE_NAME, "local-network discovery (mDNS) on");
    let task = inner.clone();
    inner
        .tracker
        .spawn(async move { task.run_discovery(mdns).await }.instrument(tracing::Span::current()));
}

impl Inner {
    async fn run_discovery(self: Arc<Self>, mdns: MdnsAddressLookup) {
        let mut events = mdns.subscribe().await;
        let dialing: Arc<Mutex<HashSet<(NetworkId, DeviceId)>>> = Arc::default();
        loop {
            let event = tokio::select! {
                _ = self.cancel.cancelled() => break,
                event = events.next() => event,
            };
            match event {
                None => break,
                Some(DiscoveryEvent::Discovered { endpoint_info, .. }) => {
                    let Some(peer) =
                        PeerAddr::from_endpoint_addr(&endpoint_info.into_endpoint_addr())
                    else {
                        continue;
                    };
                    self.discovered(peer, &dialing).await;
                }
                Some(DiscoveryEvent::Expired { endpoint_id }) => {
                    debug!(peer = %endpoint_id, "a device left the local network");
                }
                Some(_) => {}
            }
        }
        debug!("local-network discovery stopped");
    }

    /// The networks of this node in whose replica `device` is a member.
    /// Asked of each network's worker (the replica is never locked on the runtime's threads).
    async fn shared_networks(&self, device: &DeviceId) -> Vec<NetworkId> {
        let nets: Vec<Arc<super::Net>> = self.read_networks().values().cloned().collect();
        let mut ids = Vec::new();
        for net in nets {
            let device = *device;
            if net
                .with(move |r| r.replica().member(&device).is_some())
                .await
                == Some(true)
            {
                ids.push(net.id);
            }
        }
        ids.sort();
        ids
    }

    async fn discovered(
        self: &Arc<Self>,
        peer: PeerAddr,
        dialing: &Arc<Mutex<HashSet<(NetworkId, DeviceId)>>>,
    ) {
        if peer.device == self.device || self.cancel.is_cancelled() {
            return;
        }
        let networks = self.shared_networks(&peer.device).await;
        info!(peer = %peer, networks = networks.len(), "found a device on the local network");
        self.emit(NodeEvent::Discovered {
            peer: peer.clone(),
            networks: networks.clone(),
        });
        let grace = if self.device < peer.device {
            Duration::ZERO
        } else {
            DIAL_GRACE.min(self.config.connect_timeout)
        };
        for network in networks {
            if !lock(dialing).insert((network, peer.device)) {
                continue;
            }
            let inner = self.clone();
            let peer = peer.clone();
            let dialing = dialing.clone();
            self.tracker.spawn(
                async move {
                    let wait = tokio::select! {
                        _ = inner.cancel.cancelled() => false,
                        () = tokio::time::sleep(grace) => true,
                    };
                    if wait {
                        if let Err(e) = inner.connect(network, &peer).await {
                            debug!(error = %e, "could not connect to a device found on the local network");
                        }
                    }
                    lock(&dialing).remove(&(network, peer.device));
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
}
