//! The web UI: a JSON API over the node and one embedded page, on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reflow::vf::ACTION_TABLE;
use reflow::{
    Agent, EventFilter, Id, NetworkId, Node, ResourceFilter, ResourceSpecification, SpatialThing,
    Unit,
};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use crate::app::{event_json, peer_json, EventInput};

const INDEX: &str = include_str!("../assets/index.html");

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    net: NetworkId,
}

type ApiResult = std::result::Result<Json<Value>, (StatusCode, Json<Value>)>;

fn err(code: StatusCode, e: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    (code, Json(json!({"error": e.to_string()})))
}

/// Serve the UI of `net` on 127.0.0.1:`port`; returns the bound address and the server task.
pub async fn start(
    node: Arc<Node>,
    net: NetworkId,
    port: u16,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let state = AppState { node, net };
    let app = Router::new()
        .route("/", get(index))
        .route("/api/info", get(info))
        .route("/api/actions", get(actions))
        .route("/api/objects", get(objects))
        .route("/api/inventory", get(inventory))
        .route("/api/events", get(events).post(record))
        .route("/api/resource/{id}", get(resource))
        .route("/api/conflicts", get(conflicts))
        .route("/api/peers", get(peers))
        .route("/api/updates", get(updates))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, task))
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

fn read<R>(
    s: &AppState,
    f: impl FnOnce(&reflow::Replica) -> R,
) -> std::result::Result<R, (StatusCode, Json<Value>)> {
    s.node
        .read(s.net, f)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))
}

async fn info(State(s): State<AppState>) -> ApiResult {
    let name = read(&s, |r| r.ledger().network_name())?;
    Ok(Json(
        json!({"device": s.node.device(), "network": s.net, "name": name}),
    ))
}

async fn actions() -> Json<Value> {
    Json(json!(ACTION_TABLE))
}

async fn objects(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        let l = r.ledger();
        Json(json!({
            "agents": l.list::<Agent>(),
            "units": l.list::<Unit>(),
            "specs": l.list::<ResourceSpecification>(),
            "locations": l.list::<SpatialThing>(),
        }))
    })
}

async fn inventory(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        Json(json!(r.ledger().inventory(&ResourceFilter::default())))
    })
}

async fn events(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        let filter = EventFilter {
            include_corrected: true,
            ..EventFilter::default()
        };
        let list: Vec<Value> = r.ledger().events(&filter).iter().map(event_json).collect();
        Json(json!(list))
    })
}

async fn record(State(s): State<AppState>, Json(input): Json<EventInput>) -> ApiResult {
    let event = input
        .build(None)
        .map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    let id = s
        .node
        .record_event(s.net, event)
        .map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(json!({"id": id})))
}

async fn resource(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = Id::from(id);
    let out = read(&s, |r| {
        let l = r.ledger();
        let res = l.resource(&id)?;
        Some(json!({
            "resource": res,
            "trace": l.trace(&id).ok(),
            "track": l.track(&id).ok(),
        }))
    })?;
    out.map(Json)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no resource {id}")))
}

async fn conflicts(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| Json(json!(r.ledger().conflicts())))
}

async fn peers(State(s): State<AppState>) -> ApiResult {
    let list = s
        .node
        .peers(s.net)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(json!(list.iter().map(peer_json).collect::<Vec<_>>())))
}

async fn updates(
    State(s): State<AppState>,
) -> std::result::Result<
    Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>,
    (StatusCode, Json<Value>),
> {
    let rx = s
        .node
        .subscribe(s.net)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let stream = BroadcastStream::new(rx).map(|u| {
        let data = match u {
            Ok(u) => json!({
                "heads": u.heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                "from": u.from,
                "changes": u.changes.len(),
            }),
            Err(_) => json!({"lagged": true}),
        };
        Ok(Event::default().event("update").data(data.to_string()))
    });
    let hello = tokio_stream::once(Ok(Event::default().event("hello").data("{}")));
    Ok(Sse::new(hello.chain(stream)).keep_alive(KeepAlive::default()))
}
