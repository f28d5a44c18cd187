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
//! | `GET /api/commitments?now=` | every commitment with its fulfilment; `overdue` by `now` |
//! | `GET /api/agreements` | every agreement with its clauses both ways |
//! | `POST /api/proposals/{id}/accept` | accept a proposal as this device's agent |
//! | `GET /api/flows?by=&period=&from=&to=&action=&agent=&place=&spec=` | the flows report |
//! | `POST /api/recipe-plan` | plan a process (a repair) from a recipe process |
//!
//! Access ([`guard`]): any web page the user visits can make the browser send requests to
//! 127.0.0.1, so listening on loopback is not enough.
//!
//! - *DNS rebinding*: a page of `evil.example` whose name then resolves to 127.0.0.1 talks to
//!   this server as its own origin and could read every answer. Every request (assets and
//!   `/api/updates` included) must name this server in `Host` (`127.0.0.1:<port>` or
//!   `localhost:<port>`; `[::1]:<port>` when bound there), else `421 Misdirected Request`.
//! - *Cross-site requests* (CSRF): any page can send a POST to 127.0.0.1. Every request but
//!   GET and HEAD must carry `Origin: http://<its Host>` exactly (a missing Origin is
//!   refused) and the launch key, else `403`. A GET with another `Origin`, or an API request
//!   that the browser marks `Sec-Fetch-Site: cross-site` or `same-site` (another port of
//!   127.0.0.1 is the same site), is refused too.
//! - *The launch key*: 32 random bytes, new at each launch, in the URL the command prints
//!   (`http://127.0.0.1:8080/?key=<64 hex digits>`). Opening it sets the key as an HttpOnly,
//!   `SameSite=Strict` cookie for this port and redirects to `/` without it; the page's
//!   requests then carry the cookie. Other clients send the header `X-Reflow-Key`. The API
//!   (reads included) needs the key, the page and its assets do not. The key is compared in
//!   constant time and never logged ([`Key`]'s `Debug` hides it).
//!
//! Refusals are `{"error": "..."}` like every other error.
//!
//! Tests: unit tests below (real HTTP on 127.0.0.1); `tests/browser.rs` drives the page in a real headless Chromium.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reflow::node::Invitee;
use reflow::vf::ACTION_TABLE;
use reflow::{
    Action, Agent, Conflict, EconomicEvent, EventFilter, Id, Intent, Measure, NetworkId, Node,
    NodeEvent, Process, Proposal, ResourceFilter, ResourceSpecification, Role, SpatialThing, Trace,
    TraceNode, Unit,
};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
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

/// The web UI's launch key: 32 random bytes, as 64 lowercase hex digits. `Debug` hides it.
#[derive(Clone)]
pub struct Key(Arc<str>);

impl Key {
    /// A new random key.
    pub fn random() -> Result<Key> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for the web UI's key: {e}"))?;
        Ok(Key(hex::encode(bytes).into()))
    }

    /// The key's text, for the URL printed at launch (and nowhere else).
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this key, compared in constant time.
    fn matches(&self, given: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(given.trim().as_bytes()))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The header other clients than the page send the key in.
pub const KEY_HEADER: &str = "x-reflow-key";

/// A running web UI.
#[derive(Debug)]
pub struct Server {
    /// The bound address (127.0.0.1 and the port).
    pub addr: SocketAddr,
    /// This launch's key.
    pub key: Key,
    /// The server task.
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The URL to open: the page, with the key.
    pub fn url(&self) -> String {
        format!("http://{}/?key={}", self.addr, self.key.reveal())
    }
}

/// Serve the UI of `net` on 127.0.0.1:`port` with a new key (see the module's "Access").
pub async fn start(node: Arc<Node>, net: NetworkId, port: u16) -> Result<Server> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let key = Key::random()?;
    let app = router(AppState { node, net }, Guard::new(addr, key.clone()));
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Server { addr, key, task })
}

fn router(state: AppState, access: Guard) -> Router {
    Router::new()
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
        .route("/api/rules", get(rules))
        .route("/api/offers", get(offers))
        .route("/api/intents", post(create_intent))
        .route("/api/peers", get(peers))
        .route("/api/invite", post(invite))
        .route("/api/map", get(map))
        .route("/api/updates", get(updates))
        .route("/api/commitments", get(commitments))
        .route("/api/agreements", get(agreements))
        .route("/api/proposals/{id}/accept", post(accept_proposal))
        .route("/api/flows", get(flows))
        .route("/api/recipe-plan", post(plan_from_recipe))
        .fallback(not_found)
        .with_state(state)
        // After the routes and the fallback: the guard sees every request.
        .layer(middleware::from_fn_with_state(Arc::new(access), guard))
}

async fn not_found() -> ApiError {
    err(StatusCode::NOT_FOUND, "no such page or API route")
}

/// Who may talk to this server: the `Host` values that name it, and the launch key.
#[derive(Debug)]
struct Guard {
    /// `127.0.0.1:8080`, `localhost:8080` (lowercase).
    hosts: Vec<String>,
    key: Key,
    /// The key's cookie, one per port (cookies do not tell ports apart).
    cookie: String,
}

impl Guard {
    fn new(addr: SocketAddr, key: Key) -> Guard {
        let port = addr.port();
        let mut hosts = vec![format!("localhost:{port}")];
        if addr.ip().is_loopback() {
            hosts.push(match addr.ip() {
                std::net::IpAddr::V4(ip) => format!("{ip}:{port}"),
                std::net::IpAddr::V6(ip) => format!("[{ip}]:{port}"),
            });
        }
        if port == 80 {
            // Browsers leave the default port out of Host and Origin.
            let bare: Vec<String> = hosts
                .iter()
                .filter_map(|h| h.strip_suffix(":80").map(str::to_string))
                .collect();
            hosts.extend(bare);
        }
        Guard {
            hosts,
            key,
            cookie: format!("reflow-key-{port}"),
        }
    }

    /// The request's host, if every host it names (`Host`, an absolute URI's authority) is
    /// this server and it names one.
    fn host(&self, req: &Request) -> std::result::Result<String, String> {
        let mut named = Vec::new();
        let mut hosts = req.headers().get_all(header::HOST).iter();
        if let Some(h) = hosts.next() {
            if hosts.next().is_some() {
                return Err("more than one Host header".into());
            }
            named.push(h.to_str().unwrap_or("<not text>").to_string());
        }
        if let Some(a) = req.uri().authority() {
            named.push(a.as_str().to_string());
        }
        if named.is_empty() {
            return Err("the request has no Host header".into());
        }
        for n in &named {
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(n)) {
                return Err(format!("Host {n:?} is not this server"));
            }
        }
        Ok(named.swap_remove(0).to_ascii_lowercase())
    }

    /// Whether the request carries the key, in the `X-Reflow-Key` header or the cookie.
    fn has_key(&self, headers: &HeaderMap) -> bool {
        let mut found = false;
        for v in headers.get_all(KEY_HEADER) {
            found |= v.to_str().is_ok_and(|v| self.key.matches(v));
        }
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    found |= name == self.cookie && self.key.matches(value);
                }
            }
        }
        found
    }
}

fn refuse(code: StatusCode, e: impl std::fmt::Display) -> Response {
    let mut r = err(code, e).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const NO_KEY: &str = "this request does not carry this launch's key: open the URL that                       `reflow serve` (or `reflow demo`) printed at this launch,                       http://127.0.0.1:<port>/?key=..., or send the key in X-Reflow-Key";

/// Every request passes here first: the `Host` check; then `Origin`, which must be this
/// server's when present and must be present on anything but GET and HEAD; then (for the API
/// and anything but GET and HEAD) `Sec-Fetch-Site` must not name another site and the key
/// must be there. A GET of `/?key=<key>` trades the key for a cookie.
async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = match g.host(&req) {
        Ok(h) => h,
        Err(why) => {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "{why}: this Reflow node answers only requests to {}                      (a page of another site, e.g. through DNS rebinding, gets nothing)",
                    g.hosts.join(" or ")
                ),
            )
        }
    };
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let want = format!("http://{host}");
    match req.headers().get(header::ORIGIN).map(HeaderValue::to_str) {
        Some(Ok(o)) if o.eq_ignore_ascii_case(&want) => {}
        Some(o) => {
            let o = o.unwrap_or("<not text>");
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin {o:?} is not {want:?}: only this node's own page may use it \
                     (cross-site request refused)"
                ),
            );
        }
        None if !reading => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "a {} without Origin is refused: send Origin: {want}",
                    req.method()
                ),
            )
        }
        None => {}
    }
    let api = req.uri().path().starts_with("/api/");
    // Defence in depth: browsers say where a request comes from even when they send no Origin
    // (a no-cors GET from another site's <script> or <img>).
    let site = req
        .headers()
        .get("sec-fetch-site")
        .map(HeaderValue::as_bytes);
    if (api || !reading) && matches!(site, Some(b"cross-site" | b"same-site")) {
        return refuse(
            StatusCode::FORBIDDEN,
            "a request from another site is refused (Sec-Fetch-Site): only this node's own \
             page may use its API",
        );
    }
    if reading && req.uri().path() == "/" {
        if let Some(given) = key_param(req.uri().query()) {
            return if g.key.matches(&given) {
                login(&g, req.uri().query())
            } else {
                refuse(
                    StatusCode::FORBIDDEN,
                    format!("this link's key is not this launch's key: {NO_KEY}"),
                )
            };
        }
    }
    if (api || !reading) && !g.has_key(req.headers()) {
        return refuse(StatusCode::FORBIDDEN, NO_KEY);
    }
    next.run(req).await
}

/// The `key` parameter of a query string.
fn key_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|p| p.strip_prefix("key="))
        .map(str::to_string)
}

/// The answer to `/?key=<the key>`: set the cookie, go to `/` (other parameters kept).
fn login(g: &Guard, query: Option<&str>) -> Response {
    let rest: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("key="))
        .collect();
    let to = if rest.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", rest.join("&"))
    };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        g.cookie,
        g.key.reveal()
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let (Ok(loc), Ok(c)) = (HeaderValue::from_str(&to), HeaderValue::from_str(&cookie)) {
        h.insert(header::LOCATION, loc);
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
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

/// Run a handler's body on tokio's blocking pool: reading takes the network's lock and
/// recording fsyncs, and neither may hold up a runtime thread (every other request, and the
/// node's own tasks, run on those).
async fn blocking<T: Send + 'static>(
    body: impl FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    match tokio::task::spawn_blocking(body).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(err(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

/// Read the network's replica (it takes the network's lock: call it inside [`blocking`]).
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
    blocking(move || {
        let device = s.node.device();
        // What this device may record (admission's agent binding, decided by the engine).
        let (name, role, agent, for_others) = read(&s, |r| {
            (
                r.ledger().network_name(),
                r.role().map(|role| role.to_string()),
                r.agent(),
                r.records_for_others(),
            )
        })?;
        Ok(Json(json!({
            "device": device,
            "network": s.net,
            "name": name,
            "role": role,
            "agent": agent,
            "recordsForOthers": for_others,
        })))
    })
    .await
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
    blocking(move || {
        read(&s, |r| {
            let l = r.ledger();
            Json(json!({
                "agents": ids(&l.list::<Agent>(), |x| &x.id),
                "units": ids(&l.list::<Unit>(), |x| &x.id),
                "specs": ids(&l.list::<ResourceSpecification>(), |x| &x.id),
                "locations": ids(&l.list::<SpatialThing>(), |x| &x.id),
                "processes": ids(&l.list::<Process>(), |x| &x.id),
                "recipeProcesses": ids(&l.list::<reflow::RecipeProcess>(), |x| &x.id),
                "resources": l.inventory(&ResourceFilter::default()),
            }))
        })
    })
    .await
}

async fn inventory(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
        read(&s, |r| {
            Json(json!(r.ledger().inventory(&ResourceFilter::default())))
        })
    })
    .await
}

async fn events(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
        read(&s, |r| {
            let filter = EventFilter {
                include_corrected: true,
                ..EventFilter::default()
            };
            let mut list: Vec<Value> = r.ledger().events(&filter).iter().map(event_json).collect();
            list.reverse();
            Json(json!(list))
        })
    })
    .await
}

async fn record(State(s): State<AppState>, Json(input): Json<EventInput>) -> ApiResult {
    blocking(move || {
        let agent = read(&s, |r| r.agent())?;
        let event = input.acting_for(agent.as_ref()).build(None).map_err(bad)?;
        read(&s, |r| r.may_record(&event.event))?.map_err(|e| err(StatusCode::FORBIDDEN, e))?;
        let id = s.node.record_event(s.net, event).map_err(bad)?;
        Ok(Json(json!({"id": id})))
    })
    .await
}

/// Record an event correcting event `id`: its fields, overridden by the given ones.
async fn correct(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(input): Json<EventInput>,
) -> ApiResult {
    blocking(move || {
        let id = Id::from(id);
        let original = read(&s, |r| r.ledger().event(&id))?
            .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no event {id}")))?;
        let event = input.build(Some(original)).map_err(bad)?;
        let new = s.node.record_event(s.net, event).map_err(bad)?;
        Ok(Json(json!({"id": new, "corrects": id})))
    })
    .await
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
    blocking(move || {
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
    })
    .await
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
    blocking(move || {
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
    })
    .await
}

/// The network's rules in force, their versions, and what they refused and flagged.
async fn rules(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
        read(&s, |r| {
            let l = r.ledger();
            let refused: Vec<Value> = r
                .rule_refusals()
                .iter()
                .map(|q| json!({"change": q.change.hash().to_string(), "reason": q.reason, "text": q.reason.to_string()}))
                .collect();
            let flagged: Vec<Value> = l
                .conflicts()
                .into_iter()
                .filter(|c| matches!(c, Conflict::RuleViolation { .. }))
                .map(|c| {
                    let event = l.event(c.event()).map(|e| event_json(&e));
                    json!({"conflict": c, "event": event})
                })
                .collect();
            let versions: Vec<Value> = r
                .rule_versions()
                .iter()
                .map(
                    |(change, set)| json!({"change": change, "version": set.version, "name": set.name}),
                )
                .collect();
            Json(json!({
                "ruleSet": r.rules(),
                "versions": versions,
                "refused": refused,
                "flagged": flagged,
            }))
        })
    })
    .await
}

async fn offers(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
        read(&s, |r| {
            let l = r.ledger();
            // Each proposal's status as the ledger derives it (accepted once an agreement
            // takes it up).
            let mut proposals = l.list::<Proposal>();
            for p in &mut proposals {
                if let Ok(status) = l.proposal_status(&p.id) {
                    p.status = status;
                }
            }
            Json(json!({
                "intents": ids(&l.list::<Intent>(), |x| &x.id),
                "proposals": ids(&proposals, |x| &x.id),
            }))
        })
    })
    .await
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
    /// What is asked in return, with its unit: "3 EUR" (a reciprocal intent of the proposal).
    price: Option<String>,
    /// The kind of resource asked in return (e.g. the currency's specification).
    price_conforms_to: Option<String>,
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
    let mut intent = Intent::request(action, receiver);
    intent.provider = provider;
    intent.resource_conforms_to = id(&input.conforms_to);
    intent.resource_inventoried_as = id(&input.resource);
    intent.resource_quantity = resource_quantity;
    intent.at_location = id(&input.at_location);
    intent.due = nonempty(&input.due).map(str::to_string);
    intent.note = nonempty(&input.note).map(str::to_string);
    Ok(intent)
}

async fn create_intent(State(s): State<AppState>, Json(input): Json<IntentInput>) -> ApiResult {
    blocking(move || {
        let intent = intent_from(&input)?;
        let proposal = nonempty(&input.proposal).map(str::to_string);
        // The price: the reciprocal intent, with the sides of the intent swapped.
        let price = match nonempty(&input.price) {
            Some(p) => {
                if proposal.is_none() {
                    return Err(bad("a price needs a proposal to publish it in"));
                }
                let (n, unit) = app::measure(p, "price").map_err(bad)?;
                let mut r = Intent::request(Action::Transfer, intent.provider.clone());
                r.provider = intent.receiver.clone();
                r.resource_quantity = Some(Measure::new(n, unit));
                r.resource_conforms_to = nonempty(&input.price_conforms_to).map(Id::from);
                Some(r)
            }
            None => None,
        };
        let location = intent.at_location.clone();
        // VF's purpose, as the intent's open side says it.
        let purpose = match (&intent.provider, &intent.receiver) {
            (Some(_), None) => Some(reflow::ProposalPurpose::Offer),
            (None, Some(_)) => Some(reflow::ProposalPurpose::Request),
            _ => None,
        };
        let created = crate::app::now_utc();
        let (intent_id, proposal_id) = s
            .node
            .write(s.net, move |l| {
                let iid = l.create(intent)?;
                let rid = price.map(|p| l.create(p)).transpose()?;
                let pid = match proposal {
                    Some(name) => Some(l.create(Proposal {
                        reciprocal: rid.into_iter().collect(),
                        created: Some(created),
                        eligible_location: location,
                        purpose,
                        ..Proposal::new("", name, vec![iid.clone()])
                    })?),
                    None => None,
                };
                Ok((iid, pid))
            })
            .map_err(bad)?;
        Ok(Json(json!({"id": intent_id, "proposal": proposal_id})))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NowQuery {
    /// The viewer's clock (ISO 8601); default: this device's.
    now: Option<String>,
}

async fn commitments(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NowQuery>,
) -> ApiResult {
    blocking(move || {
        let now = q.now.unwrap_or_else(crate::app::now_utc);
        let list = read(&s, |r| r.ledger().commitment_statuses(Some(&now)))?.map_err(bad)?;
        Ok(Json(json!(list)))
    })
    .await
}

async fn agreements(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
        let list = read(&s, |r| {
            r.ledger()
                .list::<reflow::Agreement>()
                .into_iter()
                .map(|a| r.ledger().agreement_status(&a.id))
                .collect::<reflow::Result<Vec<_>>>()
        })?
        .map_err(bad)?;
        Ok(Json(json!(list)))
    })
    .await
}

async fn accept_proposal(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    blocking(move || {
        let agent = read(&s, |r| r.member(&r.device()).map(|m| m.agent))?
            .ok_or_else(|| bad("this device is not a member of the network"))?;
        let now = crate::app::now_utc();
        let accepted = s
            .node
            .write(s.net, |l| {
                l.accept_proposal(&Id::from(id.as_str()), &agent, Some(now))
            })
            .map_err(bad)?;
        Ok(Json(json!(accepted)))
    })
    .await
}

/// What to plan from a recipe process.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RecipePlanInput {
    recipe_process: String,
    provider: String,
    receiver: String,
    /// A plan id (created if new).
    plan: Option<String>,
    name: Option<String>,
    due: Option<String>,
}

async fn plan_from_recipe(
    State(s): State<AppState>,
    Json(input): Json<RecipePlanInput>,
) -> ApiResult {
    blocking(move || {
        let need = |x: &str, what: &str| {
            if x.trim().is_empty() {
                Err(bad(format!("planning from a recipe needs {what}")))
            } else {
                Ok(Id::from(x.trim()))
            }
        };
        let req = reflow::RecipePlanning {
            recipe_process: need(&input.recipe_process, "a recipe process")?,
            provider: need(&input.provider, "a provider")?,
            receiver: need(&input.receiver, "a receiver")?,
            plan: nonempty(&input.plan).map(Id::from),
            name: nonempty(&input.name).map(str::to_string),
            due: nonempty(&input.due).map(str::to_string),
            output_is_independent_demand: nonempty(&input.plan).is_some(),
        };
        let planned = s
            .node
            .write(s.net, |l| {
                if let Some(p) = &req.plan {
                    if l.get::<reflow::Plan>(p).is_none() {
                        let mut new = reflow::Plan::new(p.clone(), p.as_str());
                        new.due = req.due.clone();
                        l.create(new)?;
                    }
                }
                l.plan_from_recipe(&req)
            })
            .map_err(bad)?;
        Ok(Json(json!(planned)))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FlowsQuery {
    by: Option<String>,
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
    agent: Option<String>,
    place: Option<String>,
    spec: Option<String>,
}

async fn flows(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<FlowsQuery>,
) -> ApiResult {
    blocking(move || {
        let blank = |x: &Option<String>| nonempty(x).map(str::to_string);
        let args = crate::planning_cli::FlowsArgs::new(
            nonempty(&q.by)
                .map(|b| b.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            blank(&q.period),
            blank(&q.from),
            blank(&q.to),
            blank(&q.action),
            blank(&q.agent),
            blank(&q.place),
            blank(&q.spec),
        );
        let query = args.query().map_err(bad)?;
        let report = read(&s, |r| r.ledger().flows(&query))?.map_err(bad)?;
        let csv = report.to_csv();
        Ok(Json(json!({"report": report, "csv": csv})))
    })
    .await
}

async fn peers(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
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
    })
    .await
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
    blocking(move || {
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
    })
    .await
}

/// Locations with coordinates, the resources at each, and the moves between them.
async fn map(State(s): State<AppState>) -> ApiResult {
    blocking(move || {
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
    })
    .await
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
    use std::io::{Read, Write};

    /// A node with a network and a unit, serving its UI on 127.0.0.1.
    struct Fixture {
        _dir: tempfile::TempDir,
        node: Arc<Node>,
        net: NetworkId,
        server: Server,
    }

    const EVENT: &str = r#"{"action":"produce","provider":"joris","receiver":"joris","quantity":"1 kg","newResource":"jam","newResourceName":"Jam"}"#;

    impl Fixture {
        async fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let node = Arc::new(app::open_node(dir.path(), false).await.expect("node"));
            let net = node
                .create_network("market", Agent::person("joris", "Joris"))
                .expect("network");
            node.write(net, |l| {
                l.create(Unit::new("kg", "kilogram", "kg"))?;
                Ok(())
            })
            .expect("unit");
            let server = start(node.clone(), net, 0).await.expect("server");
            Fixture {
                _dir: dir,
                node,
                net,
                server,
            }
        }

        fn port(&self) -> u16 {
            self.server.addr.port()
        }

        fn host(&self) -> String {
            format!("127.0.0.1:{}", self.port())
        }

        fn origin(&self) -> String {
            format!("http://127.0.0.1:{}", self.port())
        }

        fn key(&self) -> String {
            self.server.key.reveal().to_string()
        }

        fn events(&self) -> usize {
            self.node
                .read(self.net, |r| r.ledger().event_count())
                .expect("read")
        }

        /// Send `method path` with `headers` (Host only if given) and `body` over a new
        /// connection; the status, the head (lowercase) and the body.
        async fn call(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> (u16, String, String) {
            let mut raw = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
            for (k, v) in headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            if !body.is_empty() || method != "GET" {
                raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            raw.push_str("\r\n");
            raw.push_str(body);
            let port = self.port();
            tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                s.write_all(raw.as_bytes()).expect("send");
                let mut text = String::new();
                s.read_to_string(&mut text)
                    .expect("read the answer within 20 s");
                let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .expect("status");
                (status, head.to_ascii_lowercase(), body.to_string())
            })
            .await
            .expect("request thread")
        }

        /// A request as this node's own page sends it: Host, Origin and the key.
        async fn good(&self, method: &str, path: &str, body: &str) -> (u16, String, String) {
            let (host, origin, key) = (self.host(), self.origin(), self.key());
            self.call(
                method,
                path,
                &[
                    ("Host", &host),
                    ("Origin", &origin),
                    (KEY_HEADER, &key),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
            .await
        }
    }

    const ROUTES: [(&str, &str); 12] = [
        ("GET", "/"),
        ("GET", "/app.js"),
        ("GET", "/app.css"),
        ("GET", "/icon.svg"),
        ("GET", "/api/info"),
        ("GET", "/api/events"),
        ("GET", "/api/updates"),
        ("GET", "/no/such/page"),
        ("POST", "/api/events"),
        ("POST", "/api/events/1@x/correct"),
        ("POST", "/api/intents"),
        ("POST", "/api/invite"),
    ];

    /// Reads wait for the network's lock while a write holds it, more of them than the
    /// runtime has threads: they wait on the blocking pool, so the runtime's two threads go
    /// on serving (a page, here); once the write ends, every read answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ui_answers_while_a_write_holds_the_ledger() {
        let f = Arc::new(Fixture::new().await);
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (node, net) = (f.node.clone(), f.net);
        let writer = tokio::task::spawn_blocking(move || {
            node.write(net, move |l| {
                held_tx.send(()).expect("tell the test");
                release_rx.recv().expect("the test releases the write");
                l.create(Unit::new("g", "gram", "g"))
            })
        });
        tokio::task::spawn_blocking(move || held_rx.recv_timeout(Duration::from_secs(20)))
            .await
            .expect("thread")
            .expect("the write holds the network's lock");
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move { f.good("GET", "/api/events", "").await })
            })
            .collect();
        let page = tokio::time::timeout(Duration::from_secs(10), f.good("GET", "/app.css", ""))
            .await
            .expect("a page answers while the reads wait for the write");
        assert_eq!(page.0, 200, "{page:?}");
        release_tx.send(()).expect("release the write");
        writer.await.expect("writer").expect("the write");
        for read in reads {
            let (status, _, body) = read.await.expect("read task");
            assert_eq!(status, 200, "{body}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_or_missing_host_is_refused_on_every_route() {
        let f = Fixture::new().await;
        let (key, origin) = (f.key(), f.origin());
        let other_port = format!("127.0.0.1:{}", f.port().wrapping_add(1));
        let rebound = format!("evil.example:{}", f.port());
        let before = f.events();
        for (method, path) in ROUTES {
            for host in [
                Some("evil.example"),
                Some(rebound.as_str()),
                Some(other_port.as_str()),
                Some("127.0.0.1"),
                None,
            ] {
                let mut headers = vec![(KEY_HEADER, key.as_str()), ("Origin", origin.as_str())];
                if let Some(h) = host {
                    headers.push(("Host", h));
                }
                let body = if method == "POST" { EVENT } else { "" };
                let (status, _, text) = f.call(method, path, &headers, body).await;
                assert_eq!(status, 421, "{method} {path} with Host {host:?}: {text}");
                let e: Value = serde_json::from_str(&text).expect("a JSON error");
                let e = e["error"].as_str().expect("error text");
                assert!(
                    e.contains("Host") && e.contains(&f.host()),
                    "{method} {path} with Host {host:?}: {e}"
                );
            }
        }
        // An absolute URI naming another host is refused even with the right Host header.
        let host = f.host();
        let (status, _, _) = f
            .call(
                "GET",
                "http://evil.example/api/events",
                &[("Host", &host), (KEY_HEADER, &key)],
                "",
            )
            .await;
        assert_eq!(status, 421);
        // Two Host headers are refused.
        let (status, _, _) = f
            .call(
                "GET",
                "/api/events",
                &[
                    ("Host", &host),
                    ("Host", "evil.example"),
                    (KEY_HEADER, &key),
                ],
                "",
            )
            .await;
        assert_ne!(status, 200);
        assert_eq!(f.events(), before, "a refused request recorded an event");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_changes_need_this_nodes_origin() {
        let f = Fixture::new().await;
        let (host, key) = (f.host(), f.key());
        let before = f.events();
        let https = format!("https://{host}");
        let other = format!("http://127.0.0.1:{}", f.port().wrapping_add(1));
        for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "POST").chain(&[
            ("PUT", "/api/events"),
            ("DELETE", "/api/events"),
            ("PATCH", "/api/events"),
        ]) {
            for origin in [
                None,
                Some("http://evil.example"),
                Some("null"),
                Some(https.as_str()),
                Some(other.as_str()),
                Some("http://localhost"),
            ] {
                let mut headers = vec![
                    ("Host", host.as_str()),
                    (KEY_HEADER, key.as_str()),
                    ("Content-Type", "application/json"),
                ];
                if let Some(o) = origin {
                    headers.push(("Origin", o));
                }
                let (status, _, text) = f.call(method, path, &headers, EVENT).await;
                assert_eq!(
                    status, 403,
                    "{method} {path} with Origin {origin:?}: {text}"
                );
                assert!(text.contains("Origin"), "{text}");
            }
        }
        assert_eq!(f.events(), before, "a refused request recorded an event");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_api_needs_this_launchs_key() {
        let f = Fixture::new().await;
        let (host, origin, key) = (f.host(), f.origin(), f.key());
        let before = f.events();
        let other = Key::random().expect("another key");
        let cookie = format!("reflow-key-{}={}", f.port(), other.reveal());
        let other_port = format!("reflow-key-{}={key}", f.port().wrapping_add(1));
        let short = &key[..32];
        let longer = format!("{key}0");
        let wrong: [Vec<(&str, &str)>; 6] = [
            vec![],
            vec![(KEY_HEADER, other.reveal())],
            vec![(KEY_HEADER, short)],
            vec![(KEY_HEADER, &longer)],
            vec![("Cookie", &cookie)],
            // The key of this port's cookie only: another port's cookie is not it.
            vec![("Cookie", &other_port)],
        ];
        for (method, path) in ROUTES
            .iter()
            .filter(|(m, p)| p.starts_with("/api/") || *m != "GET")
        {
            for extra in &wrong {
                let mut headers = vec![
                    ("Host", host.as_str()),
                    ("Origin", origin.as_str()),
                    ("Content-Type", "application/json"),
                ];
                headers.extend(extra.iter().copied());
                let body = if *method == "POST" { EVENT } else { "" };
                let (status, _, text) = f.call(method, path, &headers, body).await;
                assert_eq!(status, 403, "{method} {path} with {extra:?}: {text}");
                assert!(text.contains("key"), "{text}");
            }
        }
        // A link with a wrong key sets no cookie.
        let (status, head, text) = f
            .call(
                "GET",
                &format!("/?key={}", other.reveal()),
                &[("Host", &host)],
                "",
            )
            .await;
        assert_eq!(status, 403, "{text}");
        assert!(!head.contains("set-cookie"), "{head}");
        // The page and its assets need no key (they hold no ledger data).
        for path in ["/", "/app.js", "/app.css", "/icon.svg", "/?move"] {
            let (status, _, _) = f.call("GET", path, &[("Host", &host)], "").await;
            assert_eq!(status, 200, "{path}");
        }
        assert_eq!(f.events(), before, "a refused request recorded an event");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_right_host_origin_and_key_record_an_event() {
        let f = Fixture::new().await;
        let before = f.events();
        let (status, _, text) = f.good("POST", "/api/events", EVENT).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains('@'), "{text}");
        assert_eq!(f.events(), before + 1);
        let (status, _, text) = f.good("GET", "/api/events", "").await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("Jam") || text.contains("jam"), "{text}");

        // The printed URL: the key becomes a cookie, and the browser goes on to `/`.
        let host = f.host();
        let url = f.server.url();
        let path = url.strip_prefix(&format!("http://{host}")).expect("url");
        assert_eq!(path, format!("/?key={}", f.key()));
        let (status, head, _) = f.call("GET", path, &[("Host", &host)], "").await;
        assert_eq!(status, 303, "{head}");
        assert!(head.contains("\r\nlocation: /\r\n"), "{head}");
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .expect("a cookie")
            .to_string();
        assert!(cookie.contains("; httponly"), "{cookie}");
        assert!(cookie.contains("; samesite=strict"), "{cookie}");
        let pair = cookie.split(';').next().expect("name=value");
        assert_eq!(pair, format!("reflow-key-{}={}", f.port(), f.key()));
        // Other parameters survive the redirect.
        let (_, head, _) = f
            .call(
                "GET",
                &format!("/?move&{}", &path[2..]),
                &[("Host", &host)],
                "",
            )
            .await;
        assert!(head.contains("\r\nlocation: /?move\r\n"), "{head}");

        // The page's requests carry the cookie (and its Origin).
        let origin = f.origin();
        let cookie = format!("other=1; {pair}");
        let headers = [
            ("Host", host.as_str()),
            ("Origin", origin.as_str()),
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
        ];
        let event = EVENT.replace("\"jam\"", "\"jam2\"");
        let (status, _, text) = f.call("POST", "/api/events", &headers, &event).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(f.events(), before + 2);
        let (status, _, _) = f.call("GET", "/api/objects", &headers, "").await;
        assert_eq!(status, 200);

        // localhost:<port> names this server too.
        let (lh, lo) = (
            format!("localhost:{}", f.port()),
            format!("http://localhost:{}", f.port()),
        );
        let key = f.key();
        let event = EVENT.replace("\"jam\"", "\"jam3\"");
        let (status, _, text) = f
            .call(
                "POST",
                "/api/events",
                &[
                    ("Host", &lh),
                    ("Origin", &lo),
                    (KEY_HEADER, &key),
                    ("Content-Type", "application/json"),
                ],
                &event,
            )
            .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(f.events(), before + 3);

        // Live updates with the key: the stream opens.
        let port = f.port();
        let hello = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            write!(
                s,
                "GET /api/updates HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{KEY_HEADER}: {key}\r\n\r\n"
            )
            .expect("send");
            let mut seen = String::new();
            let mut buf = [0u8; 4096];
            while !seen.contains("event: hello") {
                let n = s.read(&mut buf).expect("the stream within 20 s");
                assert!(n > 0, "the stream closed: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            seen
        })
        .await
        .expect("sse thread");
        assert!(hello.starts_with("HTTP/1.1 200"), "{hello}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attacker_pages_record_nothing() {
        let f = Fixture::new().await;
        let before = f.events();
        let port = f.port();
        // Even an attacker who somehow had the cookie.
        let cookie = format!("reflow-key-{port}={}", f.key());
        // DNS rebinding: evil.example now resolves to 127.0.0.1; its page talks to its "own"
        // origin.
        let rebound = format!("evil.example:{port}");
        let rebound_origin = format!("http://{rebound}");
        for (path, body) in [("/api/events", EVENT), ("/api/invite", "{}")] {
            let (status, _, _) = f
                .call(
                    "POST",
                    path,
                    &[
                        ("Host", &rebound),
                        ("Origin", &rebound_origin),
                        ("Cookie", &cookie),
                        ("Content-Type", "application/json"),
                    ],
                    body,
                )
                .await;
            assert_eq!(status, 421, "{path}");
        }
        let (status, _, text) = f
            .call(
                "GET",
                "/api/events",
                &[("Host", &rebound), ("Cookie", &cookie)],
                "",
            )
            .await;
        assert_eq!(status, 421);
        assert!(!text.contains("joris"), "the ledger leaked: {text}");
        // Cross-site requests: a form or a no-cors fetch of another site, to 127.0.0.1.
        let host = f.host();
        for (kind, body) in [
            ("application/x-www-form-urlencoded", "action=produce"),
            ("text/plain", EVENT),
            ("application/json", EVENT),
        ] {
            for origin in ["http://evil.example", "null"] {
                let (status, _, _) = f
                    .call(
                        "POST",
                        "/api/events",
                        &[
                            ("Host", &host),
                            ("Origin", origin),
                            ("Cookie", &cookie),
                            ("Content-Type", kind),
                        ],
                        body,
                    )
                    .await;
                assert_eq!(status, 403, "{kind} from {origin}");
            }
        }
        // Reads from another site's page: with its Origin (a CORS fetch), or marked by the
        // browser (a <script src> of the API, from another port of 127.0.0.1 too).
        let sites: [&[(&str, &str)]; 3] = [
            &[("Origin", "http://127.0.0.1:1")],
            &[("Sec-Fetch-Site", "cross-site")],
            &[("Sec-Fetch-Site", "same-site")],
        ];
        for extra in sites {
            let mut headers = vec![("Host", host.as_str()), ("Cookie", cookie.as_str())];
            headers.extend(extra.iter().copied());
            let (status, _, text) = f.call("GET", "/api/events", &headers, "").await;
            assert_eq!(status, 403, "{extra:?}");
            assert!(!text.contains("joris"), "the ledger leaked: {text}");
        }
        // The page's own requests (same-origin) and the user's own navigation pass.
        for site in ["same-origin", "none"] {
            let headers = [
                ("Host", host.as_str()),
                ("Cookie", cookie.as_str()),
                ("Sec-Fetch-Site", site),
            ];
            let (status, _, _) = f.call("GET", "/api/events", &headers, "").await;
            assert_eq!(status, 200, "{site}");
        }
        assert_eq!(
            f.events(),
            before,
            "an attacker's request recorded an event"
        );
    }

    #[test]
    fn keys_are_random_long_and_never_shown() {
        let (a, b) = (Key::random().expect("key"), Key::random().expect("key"));
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(a.reveal().len(), 64);
        assert!(a.reveal().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a.matches(a.reveal()));
        assert!(!a.matches(b.reveal()));
        assert!(!a.matches(""));
        assert!(!a.matches(&a.reveal()[..63]));
        let shown = format!(
            "{a:?} {:?}",
            Guard::new(SocketAddr::from(([127, 0, 0, 1], 8080)), a.clone())
        );
        assert!(!shown.contains(a.reveal()), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

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
