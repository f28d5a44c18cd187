//! The web UI: a JSON API over the node and one embedded page (HTML, CSS and JavaScript in
//! `assets/`, compiled into the binary: nothing is fetched from the internet), on 127.0.0.1.
//!
//! Pages: inventory, event log, a form to record any event (the action list and each
//! action's fields come from the engine's action table), resource detail with track and
//! trace, conflicts with the events involved and a correcting-event form, offers and requests
//! (intents and proposals), peers and sync status, an invite as ticket text and QR code
//! (rendered here, as SVG), and a map drawn from the locations' coordinates. Changes from
//! peers reach the page as server-sent events (`/api/updates`) and it redraws without reload.
//!
//! The JSON API (all on 127.0.0.1; errors are `{"error": "..."}` with a 4xx/5xx status):
//!
//! | Route | |
//! | --- | --- |
//! | `GET /api/info` | device, network id and name, this device's role |
//! | `GET /api/actions` | the action table, each row with `fields` ([`reflow::vf::EventFields`]) |
//! | `GET /api/objects` | agents, units, specifications, locations, processes, resources |
//! | `GET /api/inventory` | resources with quantities, custodian, location |
//! | `GET /api/events`, `POST /api/events` | the event log (newest first); record an event |
//! | `POST /api/events/{id}/correct` | record an event correcting `id` (given fields override) |
//! | `GET /api/resource/{id}` | a resource, its trace and track, the events they reach |
//! | `GET /api/conflicts` | each conflict with the events it names |
//! | `GET /api/offers`, `POST /api/intents` | intents and proposals; publish an offer/request |
//! | `GET /api/peers` | peers (connected, in sync), heads, members |
//! | `POST /api/invite` | a one-time ticket (admins) and its QR code as SVG |
//! | `GET /api/map` | located places, resources, moves between places |
//! | `GET /api/updates` | server-sent events: `update` (ledger changes), `peers` |
//!
//! Tests: unit tests below; `tests/browser.rs` drives the page in a real headless Chromium.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reflow::node::Invitee;
use reflow::vf::ACTION_TABLE;
use reflow::{
    Action, Agent, Conflict, EconomicEvent, EventFilter, Id, Intent, Measure, NetworkId, Node,
    NodeEvent, Process, Proposal, ProposalStatus, ResourceFilter, ResourceSpecification, Role,
    SpatialThing, Trace, TraceNode, Unit,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use crate::app::{self, event_json, nonempty, peer_json, EventInput};

const INDEX: &str = include_str!("../assets/index.html");
const STYLE: &str = include_str!("../assets/app.css");
const SCRIPT: &str = include_str!("../assets/app.js");
const ICON: &str = include_str!("../assets/icon.svg");

/// How long an invite made in the UI stays valid.
const INVITE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    net: NetworkId,
}

type ApiError = (StatusCode, Json<Value>);
type ApiResult = std::result::Result<Json<Value>, ApiError>;

fn err(code: StatusCode, e: impl std::fmt::Display) -> ApiError {
    (code, Json(json!({"error": e.to_string()})))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    err(StatusCode::BAD_REQUEST, e)
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
        .route("/app.css", get(style))
        .route("/app.js", get(script))
        .route("/icon.svg", get(icon))
        .route("/api/info", get(info))
        .route("/api/actions", get(actions))
        .route("/api/objects", get(objects))
        .route("/api/inventory", get(inventory))
        .route("/api/events", get(events).post(record))
        .route("/api/events/{id}/correct", post(correct))
        .route("/api/resource/{id}", get(resource))
        .route("/api/conflicts", get(conflicts))
        .route("/api/offers", get(offers))
        .route("/api/intents", post(create_intent))
        .route("/api/peers", get(peers))
        .route("/api/invite", post(invite))
        .route("/api/map", get(map))
        .route("/api/updates", get(updates))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, task))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn read<R>(
    s: &AppState,
    f: impl FnOnce(&reflow::Replica) -> R,
) -> std::result::Result<R, ApiError> {
    s.node.read(s.net, f).map_err(|e| {
        // A network whose replica could not be opened: say so, with its reason.
        let code = match e {
            reflow::NetError::NetworkUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        err(code, e)
    })
}

/// Records as JSON objects with their `id` added (the model keeps ids out of stored bodies).
fn ids<T: serde::Serialize>(list: &[T], id: impl Fn(&T) -> &Id) -> Vec<Value> {
    list.iter()
        .map(|x| {
            let mut v = json!(x);
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), json!(id(x)));
            }
            v
        })
        .collect()
}

async fn info(State(s): State<AppState>) -> ApiResult {
    let device = s.node.device();
    let (name, role) = read(&s, |r| {
        (r.ledger().network_name(), r.role().map(|x| x.to_string()))
    })?;
    Ok(Json(json!({
        "device": device,
        "network": s.net,
        "name": name,
        "role": role,
    })))
}

/// The action table, each row with the fields an event of that action takes.
async fn actions() -> Json<Value> {
    let rows: Vec<Value> = ACTION_TABLE
        .iter()
        .map(|row| {
            let mut v = json!(row);
            v["fields"] = json!(row.action.event_fields());
            v
        })
        .collect();
    Json(json!(rows))
}

async fn objects(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        let l = r.ledger();
        Json(json!({
            "agents": ids(&l.list::<Agent>(), |x| &x.id),
            "units": ids(&l.list::<Unit>(), |x| &x.id),
            "specs": ids(&l.list::<ResourceSpecification>(), |x| &x.id),
            "locations": ids(&l.list::<SpatialThing>(), |x| &x.id),
            "processes": ids(&l.list::<Process>(), |x| &x.id),
            "resources": l.inventory(&ResourceFilter::default()),
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
        let mut list: Vec<Value> = r.ledger().events(&filter).iter().map(event_json).collect();
        list.reverse();
        Json(json!(list))
    })
}

async fn record(State(s): State<AppState>, Json(input): Json<EventInput>) -> ApiResult {
    let event = input.build(None).map_err(bad)?;
    let id = s.node.record_event(s.net, event).map_err(bad)?;
    Ok(Json(json!({"id": id})))
}

/// Record an event correcting event `id`: its fields, overridden by the given ones.
async fn correct(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(input): Json<EventInput>,
) -> ApiResult {
    let id = Id::from(id);
    let original = read(&s, |r| r.ledger().event(&id))?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no event {id}")))?;
    let event = input.build(Some(original)).map_err(bad)?;
    let new = s.node.record_event(s.net, event).map_err(bad)?;
    Ok(Json(json!({"id": new, "corrects": id})))
}

/// The events a trace reaches, by id.
fn trace_events(l: &reflow::Ledger, t: &Trace, out: &mut BTreeMap<String, Value>) {
    for step in &t.steps {
        if let TraceNode::EconomicEvent { id, .. } = &step.node {
            if let Some(e) = l.event(id) {
                out.insert(id.to_string(), event_json(&e));
            }
        }
    }
}

async fn resource(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = Id::from(id);
    let out = read(&s, |r| {
        let l = r.ledger();
        let res = l.resource(&id)?;
        let trace = l.trace(&id).ok();
        let track = l.track(&id).ok();
        let mut evs = BTreeMap::new();
        for t in trace.iter().chain(track.iter()) {
            trace_events(l, t, &mut evs);
        }
        let history: Vec<Value> = l
            .events(&EventFilter {
                include_corrected: true,
                ..EventFilter::default()
            })
            .iter()
            .filter(|e| {
                e.resource_inventoried_as.as_ref() == Some(&id)
                    || e.to_resource_inventoried_as.as_ref() == Some(&id)
                    || e.created_resource.as_ref() == Some(&id)
            })
            .map(event_json)
            .collect();
        Some(json!({
            "resource": res,
            "trace": trace,
            "track": track,
            "events": evs,
            "history": history,
        }))
    })?;
    out.map(Json)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no resource {id}")))
}

/// The event ids a conflict names.
fn conflict_events(c: &Conflict) -> Vec<Id> {
    let v = json!(c);
    let mut out = Vec::new();
    for key in [
        "event",
        "earlier",
        "corrected",
        "applied",
        "removedBy",
        "competing",
        "superseded",
    ] {
        match v.get(key) {
            Some(Value::String(s)) => out.push(Id::from(s.as_str())),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(Id::from)),
            _ => {}
        }
    }
    out
}

async fn conflicts(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        let l = r.ledger();
        let list: Vec<Value> = l
            .conflicts()
            .iter()
            .map(|c| {
                let events: Vec<Value> = conflict_events(c)
                    .iter()
                    .filter_map(|id| l.event(id))
                    .map(|e| event_json(&e))
                    .collect();
                json!({"conflict": c, "events": events})
            })
            .collect();
        Json(json!(list))
    })
}

async fn offers(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        let l = r.ledger();
        Json(json!({
            "intents": ids(&l.list::<Intent>(), |x| &x.id),
            "proposals": ids(&l.list::<Proposal>(), |x| &x.id),
        }))
    })
}

/// An offer (a provider) or a request (a receiver), optionally published as a proposal.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IntentInput {
    /// `offer` or `request`.
    kind: String,
    action: String,
    agent: String,
    conforms_to: Option<String>,
    resource: Option<String>,
    quantity: Option<String>,
    at_location: Option<String>,
    due: Option<String>,
    note: Option<String>,
    /// If given, also publish the intent in a new proposal of this name.
    proposal: Option<String>,
}

fn intent_from(input: &IntentInput) -> std::result::Result<Intent, ApiError> {
    let action = Action::from_str(input.action.trim()).map_err(bad)?;
    let agent = input.agent.trim();
    if agent.is_empty() {
        return Err(bad("an offer or request needs an agent"));
    }
    let (provider, receiver) = match input.kind.as_str() {
        "offer" => (Some(Id::from(agent)), None),
        "request" => (None, Some(Id::from(agent))),
        other => return Err(bad(format!("kind must be offer or request, not {other:?}"))),
    };
    let resource_quantity = match nonempty(&input.quantity) {
        Some(q) => {
            let (n, unit) = app::measure(q, "quantity").map_err(bad)?;
            Some(Measure::new(n, unit))
        }
        None => None,
    };
    let id = |s: &Option<String>| nonempty(s).map(Id::from);
    if id(&input.conforms_to).is_none() && id(&input.resource).is_none() {
        return Err(bad(
            "say what is offered or requested: a resource specification or a resource",
        ));
    }
    Ok(Intent {
        id: Id::from(""),
        action,
        provider,
        receiver,
        resource_conforms_to: id(&input.conforms_to),
        resource_inventoried_as: id(&input.resource),
        resource_quantity,
        at_location: id(&input.at_location),
        due: nonempty(&input.due).map(str::to_string),
        finished: false,
        note: nonempty(&input.note).map(str::to_string),
    })
}

async fn create_intent(State(s): State<AppState>, Json(input): Json<IntentInput>) -> ApiResult {
    let intent = intent_from(&input)?;
    let proposal = nonempty(&input.proposal).map(str::to_string);
    let location = intent.at_location.clone();
    let (intent_id, proposal_id) = s
        .node
        .write(s.net, move |l| {
            let iid = l.create(intent)?;
            let pid = match proposal {
                Some(name) => Some(l.create(Proposal {
                    id: Id::from(""),
                    name,
                    publishes: vec![iid.clone()],
                    unit_based: false,
                    eligible_location: location,
                    status: ProposalStatus::Open,
                    note: None,
                })?),
                None => None,
            };
            Ok((iid, pid))
        })
        .map_err(bad)?;
    Ok(Json(json!({"id": intent_id, "proposal": proposal_id})))
}

async fn peers(State(s): State<AppState>) -> ApiResult {
    let list = s
        .node
        .peers(s.net)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut ours = s
        .node
        .heads(s.net)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    ours.sort();
    let (events, members) = read(&s, |r| {
        let members: Vec<Value> = r
            .members()
            .iter()
            .map(|m| json!({"device": m.device, "role": m.role.to_string(), "agent": m.agent}))
            .collect();
        (r.ledger().event_count(), members)
    })?;
    let rows: Vec<Value> = list
        .iter()
        .map(|p| {
            let mut v = peer_json(p);
            let in_sync = p.their_heads.as_ref().map(|h| {
                let mut h = h.clone();
                h.sort();
                h == ours
            });
            v["inSync"] = json!(in_sync);
            v
        })
        .collect();
    Ok(Json(json!({
        "device": s.node.device(),
        "heads": ours.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "events": events,
        "peers": rows,
        "members": members,
    })))
}

/// What an invite grants.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InviteInput {
    /// `observer`, `member` (the default) or `admin`.
    role: Option<String>,
}

fn role_from(text: Option<&str>) -> std::result::Result<Role, ApiError> {
    match text.map(str::trim) {
        None | Some("") | Some("member") => Ok(Role::Member),
        Some("observer") => Ok(Role::Observer),
        Some("admin") => Ok(Role::Admin),
        Some(other) => Err(bad(format!(
            "role must be observer, member or admin, not {other:?}"
        ))),
    }
}

/// Make a one-time bearer ticket (admins only) and its QR code as SVG.
async fn invite(State(s): State<AppState>, Json(input): Json<InviteInput>) -> ApiResult {
    let role = role_from(input.role.as_deref())?;
    let ticket = s
        .node
        .invite(s.net, role, None, INVITE_TTL, Invitee::Anyone)
        .map_err(|e| err(StatusCode::FORBIDDEN, e))?;
    let text = ticket.to_string();
    let qr = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    Ok(Json(json!({
        "ticket": text,
        "svg": svg,
        "expiresInHours": INVITE_TTL.as_secs() / 3600,
        "role": role.to_string(),
    })))
}

/// Locations with coordinates, the resources at each, and the moves between them.
async fn map(State(s): State<AppState>) -> ApiResult {
    read(&s, |r| {
        let l = r.ledger();
        let locations = ids(&l.list::<SpatialThing>(), |x| &x.id);
        let resources = l.inventory(&ResourceFilter::default());
        let moves: Vec<Value> = l
            .events(&EventFilter::default())
            .iter()
            .filter_map(|e: &EconomicEvent| {
                let to = e.to_location.as_ref()?;
                let from = e.at_location.clone().or_else(|| {
                    let res = e.resource_inventoried_as.as_ref()?;
                    l.resource(res)?.current_location
                })?;
                (from != *to).then(|| {
                    json!({"from": from, "to": to, "event": e.id, "action": e.action,
                           "resource": e.resource_inventoried_as})
                })
            })
            .collect();
        Json(json!({"locations": locations, "resources": resources, "moves": moves}))
    })
}

async fn updates(
    State(s): State<AppState>,
) -> std::result::Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>, ApiError>
{
    let rx = s
        .node
        .subscribe(s.net)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let ledger = BroadcastStream::new(rx).map(|u| {
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
    let net = s.net;
    let peers = BroadcastStream::new(s.node.events()).filter_map(move |e| {
        let about = match &e {
            Ok(NodeEvent::Connected { network, .. })
            | Ok(NodeEvent::Disconnected { network, .. })
            | Ok(NodeEvent::Refused { network, .. }) => *network == net,
            Ok(_) => false,
            Err(_) => true,
        };
        about.then(|| Ok(Event::default().event("peers").data("{}")))
    });
    let hello = tokio_stream::once(Ok(Event::default().event("hello").data("{}")));
    Ok(Sse::new(hello.chain(ledger.merge(peers))).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_reference_nothing_on_the_internet() {
        for (name, text) in [
            ("index.html", INDEX),
            ("app.css", STYLE),
            ("app.js", SCRIPT),
            ("icon.svg", ICON),
        ] {
            let urls: Vec<&str> = text
                .split(['"', '\'', '(', ' '])
                .filter(|t| {
                    t.starts_with("http:")
                        || t.starts_with("https:")
                        || (t.starts_with("//") && t[2..].contains('.'))
                })
                .filter(|t| *t != "http://www.w3.org/2000/svg")
                .collect();
            assert!(urls.is_empty(), "{name} refers to {urls:?}");
        }
    }

    #[test]
    fn invite_roles() {
        assert_eq!(role_from(None).expect("default"), Role::Member);
        assert_eq!(
            role_from(Some("observer")).expect("observer"),
            Role::Observer
        );
        assert_eq!(role_from(Some("admin")).expect("admin"), Role::Admin);
        assert!(role_from(Some("owner")).is_err());
    }

    #[test]
    fn intents_need_an_agent_and_a_kind_and_what() {
        let mut i = IntentInput {
            kind: "offer".into(),
            action: "transfer".into(),
            agent: "stall".into(),
            conforms_to: Some("jam".into()),
            quantity: Some("3 jar".into()),
            ..IntentInput::default()
        };
        let intent = intent_from(&i).expect("a valid offer");
        assert_eq!(intent.provider, Some(Id::from("stall")));
        assert_eq!(intent.receiver, None);
        i.kind = "request".into();
        assert_eq!(
            intent_from(&i).expect("request").receiver,
            Some(Id::from("stall"))
        );
        i.kind = "gift".into();
        assert!(intent_from(&i).is_err());
        i.kind = "offer".into();
        i.quantity = Some("three".into());
        assert!(intent_from(&i).is_err());
        i.quantity = None;
        i.conforms_to = None;
        assert!(intent_from(&i).is_err());
        i.conforms_to = Some("jam".into());
        i.action = "steal".into();
        assert!(intent_from(&i).is_err());
    }
}
