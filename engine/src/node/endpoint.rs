//! Binding the node's iroh endpoint: the port of the last run, relays, direct paths.

use super::*;

/// Node metadata key of the UDP port the endpoint was last bound to (u16, big-endian).
pub(super) const META_LAST_PORT: &str = "last_port";

/// Bind the endpoint. With a bind port of 0, the port of the last run is tried first (peers
/// that know this node's address reach it again), then any free port; the port bound is
/// remembered.
pub(super) async fn bind(
    config: &NodeConfig,
    key: &DeviceKey,
    alpns: Vec<Vec<u8>>,
    store: &Store,
) -> NetResult<Endpoint> {
    if config.bind_addr.port() != 0 {
        return bind_endpoint(config, config.bind_addr, key, alpns).await;
    }
    let last = match store.node_meta(META_LAST_PORT) {
        Ok(Some(b)) => <[u8; 2]>::try_from(b.as_slice())
            .ok()
            .map(u16::from_be_bytes),
        _ => None,
    };
    if let Some(port) = last.filter(|p| *p != 0) {
        let mut addr = config.bind_addr;
        addr.set_port(port);
        match bind_endpoint(config, addr, key, alpns.clone()).await {
            Ok(endpoint) => return Ok(endpoint),
            Err(e) => debug!(port, error = %e, "the last port is taken; binding a free one"),
        }
    }
    let endpoint = bind_endpoint(config, config.bind_addr, key, alpns).await?;
    let port = endpoint
        .bound_sockets()
        .iter()
        .find(|a| a.is_ipv4() == config.bind_addr.is_ipv4())
        .map(SocketAddr::port);
    if let Some(port) = port.filter(|p| Some(*p) != last) {
        if let Err(e) = store.put_node_meta(META_LAST_PORT, &port.to_be_bytes()) {
            warn!(error = %e, "could not remember the port");
        }
    }
    Ok(endpoint)
}

pub(super) async fn bind_endpoint(
    config: &NodeConfig,
    bind_addr: SocketAddr,
    key: &DeviceKey,
    alpns: Vec<Vec<u8>>,
) -> NetResult<Endpoint> {
    let bind_error = |detail: String| NetError::Bind {
        addr: bind_addr,
        detail,
    };
    let relay_mode = match &config.relay {
        RelayConfig::Disabled => RelayMode::Disabled,
        RelayConfig::Default => RelayMode::Default,
        RelayConfig::Custom(urls) => {
            let mut parsed: Vec<RelayUrl> = Vec::with_capacity(urls.len());
            for u in urls {
                parsed.push(
                    u.parse()
                        .map_err(|_| NetError::InvalidRelayUrl(u.clone()))?,
                );
            }
            RelayMode::custom(parsed)
        }
    };
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&key.secret_bytes()))
        .alpns(alpns)
        .relay_mode(relay_mode)
        .clear_ip_transports();
    if config.direct_paths {
        builder = builder
            .bind_addr(bind_addr)
            .map_err(|e| bind_error(e.to_string()))?;
    } else if config.relay == RelayConfig::Disabled {
        return Err(bind_error(
            "no direct paths and no relays: the node could reach no one".into(),
        ));
    }
    if config.direct_paths && bind_addr.ip().is_unspecified() && bind_addr.is_ipv4() {
        builder = builder
            .bind_addr_with_opts(
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
                BindOpts::default().set_is_required(false),
            )
            .map_err(|e| bind_error(e.to_string()))?;
    }
    if !config.portmapper {
        builder = builder.portmapper_config(PortmapperConfig::Disabled);
    }
    if config.relay == RelayConfig::Disabled {
        builder = builder.net_report_config(NetReportConfig::minimal());
    }
    builder.bind().await.map_err(|e| bind_error(e.to_string()))
}
