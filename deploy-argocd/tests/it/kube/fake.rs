//! An in-process fake Kubernetes API server behind `kube::Client::new`: namespaced objects of
//! any resource kept as JSON, with resourceVersion optimistic concurrency (409 on a stale
//! PUT or PATCH), create (409 AlreadyExists), merge patch, delete, label and field selectors,
//! and streaming watches that replay from a resourceVersion.
//!
//! It is the API server only: controllers (the Argo CD simulation) write through
//! [`FakeApiServer::update`], which bumps the resourceVersion and notifies watchers, as a
//! real controller's write would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::broadcast;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// `group/version/plural`, e.g. `argoproj.io/v1alpha1/applications`, `coordination.k8s.io/v1/leases`, `v1/secrets`.
pub type Collection = String;

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    collection: Collection,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug)]
struct State {
    objects: BTreeMap<(Collection, String, String), Value>,
    rv: u64,
    log: Vec<Event>,
    tx: broadcast::Sender<Option<Event>>,
    requests: Vec<String>,
    conflicts_to_inject: usize,
}

/// The fake API server. Clone the `Arc` into controllers and fixtures.
#[derive(Debug)]
pub struct FakeApiServer {
    state: Mutex<State>,
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("valid status"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed_unsync())
        .expect("valid response")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn labels_match(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let term = term.trim();
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

fn fields_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return false;
        };
        let v = v.trim_start_matches('=');
        match k {
            "metadata.name" => object["metadata"]["name"].as_str() == Some(v),
            "metadata.namespace" => object["metadata"]["namespace"].as_str() == Some(v),
            _ => false,
        }
    })
}

struct Route {
    collection: Collection,
    group_version: String,
    namespace: String,
    name: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, plural] => Some(Route {
            collection: format!("{group_version}/{plural}"),
            group_version,
            namespace: (*ns).to_owned(),
            name: None,
        }),
        ["namespaces", ns, plural, name] => Some(Route {
            collection: format!("{group_version}/{plural}"),
            group_version,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
        }),
        _ => None,
    }
}

impl FakeApiServer {
    /// An empty server.
    pub fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        Arc::new(Self {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                rv: 1000,
                log: Vec::new(),
                tx,
                requests: Vec::new(),
                conflicts_to_inject: 0,
            }),
        })
    }

    /// A kube client whose every request this server answers; default namespace `namespace`.
    pub fn client(self: &Arc<Self>, namespace: &str) -> ::kube::Client {
        let server = Arc::clone(self);
        let service = tower::service_fn(move |req: Request<::kube::client::Body>| {
            let server = Arc::clone(&server);
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        ::kube::Client::new(service, namespace)
    }

    /// Every request so far as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// Makes the next `n` PUT requests fail with 409 Conflict, as if someone wrote just before.
    pub fn inject_conflicts(&self, n: usize) {
        self.state.lock().expect("lock").conflicts_to_inject = n;
    }

    /// Ends every open watch stream, as a load balancer's idle timeout would.
    pub fn cut_watches(&self) {
        let _ = self.state.lock().expect("lock").tx.send(None);
    }

    /// The stored object, if any.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().expect("lock");
        state
            .objects
            .get(&(collection.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Creates or replaces an object without any check (a seed, or a controller's write).
    pub fn put(&self, collection: &str, namespace: &str, mut object: Value) {
        let mut state = self.state.lock().expect("lock");
        let name = object["metadata"]["name"]
            .as_str()
            .expect("named object")
            .to_owned();
        let key = (collection.to_owned(), namespace.to_owned(), name);
        let kind = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        Self::store(&mut state, key, &mut object, kind);
    }

    /// Changes an object in place (a controller's write); returns false when it does not
    /// exist or `change` returns false (no write, no event).
    pub fn update(
        &self,
        collection: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value) -> bool,
    ) -> bool {
        let mut state = self.state.lock().expect("lock");
        let key = (collection.to_owned(), namespace.to_owned(), name.to_owned());
        let Some(mut object) = state.objects.get(&key).cloned() else {
            return false;
        };
        if !change(&mut object) {
            return false;
        }
        Self::store(&mut state, key, &mut object, "MODIFIED");
        true
    }

    fn store(
        state: &mut State,
        key: (Collection, String, String),
        object: &mut Value,
        kind: &'static str,
    ) {
        state.rv += 1;
        let rv = state.rv;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        meta["namespace"] = json!(key.1);
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("uid-{rv}"));
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let event = Event {
            rv,
            collection: key.0.clone(),
            namespace: key.1.clone(),
            kind,
            object: object.clone(),
        };
        if kind == "DELETED" {
            state.objects.remove(&key);
        } else {
            state.objects.insert(key, object.clone());
        }
        state.log.push(event.clone());
        let _ = state.tx.send(Some(event));
    }

    async fn handle(self: Arc<Self>, req: Request<::kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", &format!("unreadable body: {e}")),
        };
        let path = parts.uri.path().to_owned();
        let query = query(&parts.uri);
        self.state.lock().expect("lock").requests.push(format!(
            "{} {}{}",
            parts.method,
            path,
            parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ));
        let Some(route) = route(&path) else {
            return status(
                404,
                "NotFound",
                &format!("the server could not find the requested resource {path}"),
            );
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let parsed = || serde_json::from_slice::<Value>(&body);
        match (&parts.method, route.name.clone()) {
            (&Method::GET, Some(name)) => self.get_one(&route, &name),
            (&Method::GET, None)
                if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
            {
                self.watch(&route, &query)
            }
            (&Method::GET, None) => self.list_response(&route, &query),
            (&Method::POST, None) => match parsed() {
                Ok(v) => self.create(&route, v),
                Err(e) => status(400, "BadRequest", &e.to_string()),
            },
            (&Method::PUT, Some(name)) => match parsed() {
                Ok(v) => self.replace(&route, &name, v),
                Err(e) => status(400, "BadRequest", &e.to_string()),
            },
            (&Method::PATCH, Some(name)) => {
                if !content_type.starts_with("application/merge-patch+json") {
                    return status(
                        415,
                        "UnsupportedMediaType",
                        &format!("fake supports merge patch only, got {content_type}"),
                    );
                }
                match parsed() {
                    Ok(v) => self.patch(&route, &name, &v),
                    Err(e) => status(400, "BadRequest", &e.to_string()),
                }
            }
            (&Method::DELETE, Some(name)) => {
                self.delete(&route, &name, &parsed().unwrap_or(Value::Null))
            }
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        }
    }

    fn key(route: &Route, name: &str) -> (Collection, String, String) {
        (
            route.collection.clone(),
            route.namespace.clone(),
            name.to_owned(),
        )
    }

    fn not_found(route: &Route, name: &str) -> Response<Body> {
        let plural = route.collection.rsplit('/').next().unwrap_or_default();
        status(404, "NotFound", &format!("{plural} \"{name}\" not found"))
    }

    fn conflict(route: &Route, name: &str) -> Response<Body> {
        let plural = route.collection.rsplit('/').next().unwrap_or_default();
        status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
    }

    fn get_one(&self, route: &Route, name: &str) -> Response<Body> {
        let state = self.state.lock().expect("lock");
        match state.objects.get(&Self::key(route, name)) {
            Some(v) => json_response(200, v),
            None => Self::not_found(route, name),
        }
    }

    fn matching(state: &State, route: &Route, query: &BTreeMap<String, String>) -> Vec<Value> {
        state
            .objects
            .iter()
            .filter(|((c, ns, _), _)| *c == route.collection && *ns == route.namespace)
            .map(|(_, v)| v)
            .filter(|v| {
                query
                    .get("labelSelector")
                    .is_none_or(|s| labels_match(v, s))
            })
            .filter(|v| {
                query
                    .get("fieldSelector")
                    .is_none_or(|s| fields_match(v, s))
            })
            .cloned()
            .collect()
    }

    fn list_response(&self, route: &Route, query: &BTreeMap<String, String>) -> Response<Body> {
        let state = self.state.lock().expect("lock");
        let items = Self::matching(&state, route, query);
        json_response(
            200,
            &json!({
                "apiVersion": route.group_version,
                "kind": "List",
                "metadata": { "resourceVersion": state.rv.to_string() },
                "items": items,
            }),
        )
    }

    fn create(&self, route: &Route, mut object: Value) -> Response<Body> {
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "Invalid", "metadata.name: Required value");
        };
        let mut state = self.state.lock().expect("lock");
        let key = Self::key(route, &name);
        if state.objects.contains_key(&key) {
            let plural = route.collection.rsplit('/').next().unwrap_or_default();
            return status(
                409,
                "AlreadyExists",
                &format!("{plural} \"{name}\" already exists"),
            );
        }
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        Self::store(&mut state, key, &mut object, "ADDED");
        json_response(201, &object)
    }

    fn replace(&self, route: &Route, name: &str, mut object: Value) -> Response<Body> {
        let mut state = self.state.lock().expect("lock");
        let key = Self::key(route, name);
        let Some(current) = state.objects.get(&key) else {
            return Self::not_found(route, name);
        };
        if state.conflicts_to_inject > 0 {
            state.conflicts_to_inject -= 1;
            return Self::conflict(route, name);
        }
        let sent = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if sent.is_empty() {
            return status(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            );
        }
        if sent
            != current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
        {
            return Self::conflict(route, name);
        }
        object["metadata"]["uid"] = current["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
        Self::store(&mut state, key, &mut object, "MODIFIED");
        json_response(200, &object)
    }

    fn patch(&self, route: &Route, name: &str, patch: &Value) -> Response<Body> {
        let mut state = self.state.lock().expect("lock");
        let key = Self::key(route, name);
        let Some(mut object) = state.objects.get(&key).cloned() else {
            return Self::not_found(route, name);
        };
        // A resourceVersion in the patch is a precondition, as in Kubernetes.
        if let Some(sent) = patch["metadata"]["resourceVersion"].as_str()
            && Some(sent) != object["metadata"]["resourceVersion"].as_str()
        {
            return Self::conflict(route, name);
        }
        merge(&mut object, patch);
        Self::store(&mut state, key, &mut object, "MODIFIED");
        json_response(200, &object)
    }

    /// Deletes; `options` is the DeleteOptions body, whose `preconditions.resourceVersion`
    /// must match as in Kubernetes (else 409 Conflict, "Precondition failed: ...").
    fn delete(&self, route: &Route, name: &str, options: &Value) -> Response<Body> {
        let mut state = self.state.lock().expect("lock");
        let key = Self::key(route, name);
        let Some(mut object) = state.objects.get(&key).cloned() else {
            return Self::not_found(route, name);
        };
        if let Some(wanted) = options["preconditions"]["resourceVersion"].as_str() {
            let actual = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if wanted != actual {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {wanted}, ResourceVersion in object meta: {actual}"
                    ),
                );
            }
        }
        Self::store(&mut state, key, &mut object, "DELETED");
        json_response(200, &object)
    }

    fn watch(&self, route: &Route, query: &BTreeMap<String, String>) -> Response<Body> {
        let state = self.state.lock().expect("lock");
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let labels = query.get("labelSelector").cloned();
        let fields = query.get("fieldSelector").cloned();
        let wanted = {
            let collection = route.collection.clone();
            let namespace = route.namespace.clone();
            move |e: &Event| {
                e.collection == collection
                    && e.namespace == namespace
                    && labels.as_deref().is_none_or(|s| labels_match(&e.object, s))
                    && fields.as_deref().is_none_or(|s| fields_match(&e.object, s))
            }
        };
        // Start at "now" with synthetic ADDED events when no version is given, else replay.
        let backlog: Vec<Event> = if from == 0 {
            Self::matching(&state, route, query)
                .into_iter()
                .map(|object| Event {
                    rv: state.rv,
                    collection: route.collection.clone(),
                    namespace: route.namespace.clone(),
                    kind: "ADDED",
                    object,
                })
                .collect()
        } else {
            state
                .log
                .iter()
                .filter(|e| e.rv > from && wanted(e))
                .cloned()
                .collect()
        };
        let rx = state.tx.subscribe();
        drop(state);
        // A cut (None), a lagging reader or a closed channel ends the stream; the client
        // re-watches from the last resourceVersion it saw, which the log replays.
        let live = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(Some(event)) => Some((event, rx)),
                Ok(None) | Err(_) => None,
            }
        })
        .filter(move |e| futures::future::ready(wanted(e)));
        let lines = futures::stream::iter(backlog).chain(live).map(|e| {
            let line = json!({ "type": e.kind, "object": e.object }).to_string() + "\n";
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(line)))
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(lines).boxed_unsync())
            .expect("valid response")
    }
}
