//! The contract with upstream Argo CD: every request kind the REST client sends (method, path,
//! query, body, and the merge patch inside a PATCH body) is checked against `swagger.json`, and
//! every Application, ApplicationSet and Cluster the fake serves against the swagger
//! definitions and the CRD `openAPIV3Schema`. Schemas are made strict (no property they do not
//! declare), so a misspelt field fails here rather than being ignored by the server.

use deploy_core::port::ArgoCdInventory as _;
use std::collections::BTreeSet;
use std::path::PathBuf;

use deploy_core::port::{ArgoCd, OverrideValue};
use deploy_engine::conformance::argocd::{ArgoCdFixture, seed};
use serde_json::{Value, json};
use wiremock::Request;

use deploy_argocd::fake::{FakeArgo, client};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/argocd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Adds `additionalProperties: false` to every object schema that lists its properties and
/// neither allows extra ones nor preserves unknown fields.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let preserve = map
                .get("x-kubernetes-preserve-unknown-fields")
                .is_some_and(|v| v == &json!(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserve
            {
                map.insert("additionalProperties".into(), json!(false));
            }
            for (key, value) in map.iter_mut() {
                // Property names are data, not schemas.
                if key == "properties" {
                    if let Value::Object(props) = value {
                        props.values_mut().for_each(strict);
                    }
                } else {
                    strict(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

pub(crate) struct Swagger {
    doc: Value,
}

impl Swagger {
    pub(crate) fn load() -> Self {
        let doc: Value = serde_json::from_str(&fixture("swagger.json")).expect("swagger.json");
        Self { doc }
    }

    pub(crate) fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut definitions = self.doc["definitions"].clone();
        for (name, definition) in definitions.as_object_mut().expect("definitions") {
            // Free-form JSON, modelled in swagger by its protobuf wrapper (`{raw: bytes}`).
            if name.ends_with("JSON") || name.ends_with("RawExtension") {
                *definition = json!({});
            }
        }
        strict(&mut definitions);
        let mut schema = schema.clone();
        strict(&mut schema);
        let root = json!({ "definitions": definitions, "allOf": [schema] });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&root)
            .expect("swagger schema compiles")
    }

    pub(crate) fn definition(&self, name: &str) -> jsonschema::Validator {
        self.validator(&json!({ "$ref": format!("#/definitions/{name}") }))
    }

    /// The swagger path template and operation of a request.
    pub(crate) fn operation(&self, verb: &str, path: &str) -> Option<(String, &Value)> {
        let mut candidates: Vec<(&String, &Value)> = self.doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .filter(|(template, _)| matches_template(template, path))
            .collect();
        // A literal segment beats a placeholder.
        candidates.sort_by_key(|(t, _)| t.matches('{').count());
        candidates.into_iter().find_map(|(template, item)| {
            item.get(verb.to_ascii_lowercase())
                .map(|op| (template.clone(), op))
        })
    }
}

fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

pub(crate) fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

/// Checks one request against swagger; returns its `METHOD template`.
pub(crate) fn check_request(swagger: &Swagger, request: &Request) -> Result<String, String> {
    let verb = request.method.as_str();
    let path = request.url.path();
    let (template, op) = swagger
        .operation(verb, path)
        .ok_or_else(|| format!("{verb} {path} is not in swagger.json"))?;
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    for (key, value) in request.url.query_pairs() {
        let param = params
            .iter()
            .find(|p| p["in"] == "query" && p["name"] == json!(key))
            .ok_or_else(|| format!("{verb} {template}: query parameter {key} is not declared"))?;
        if param["type"] == "boolean" && !matches!(value.as_ref(), "true" | "false") {
            return Err(format!("{verb} {template}: {key}={value} is not a boolean"));
        }
    }
    let body_param = params.iter().find(|p| p["in"] == "body");
    match body_param {
        None if !request.body.is_empty() => {
            return Err(format!("{verb} {template}: a body where none is declared"));
        }
        None => {}
        Some(param) => {
            let body: Value = serde_json::from_slice(&request.body)
                .map_err(|e| format!("{verb} {template}: body is not JSON: {e}"))?;
            let found = errors(&swagger.validator(&param["schema"]), &body);
            if !found.is_empty() {
                return Err(format!("{verb} {template}: body {body}: {found:?}"));
            }
            if template == "/api/v1/applications/{name}" && verb == "PATCH" {
                let patch: Value = serde_json::from_str(body["patch"].as_str().unwrap_or("null"))
                    .map_err(|e| format!("PATCH: patch is not JSON: {e}"))?;
                // Each merge patch, or each value a JSON patch writes, as a partial Application.
                let partials = match body["patchType"].as_str() {
                    Some("merge") => vec![patch],
                    Some("json") => json_patch_partials(&patch)?,
                    _ => return Err(format!("PATCH: patchType {}", body["patchType"])),
                };
                for partial in partials {
                    let found = errors(&swagger.definition("v1alpha1Application"), &partial);
                    if !found.is_empty() {
                        return Err(format!("PATCH: patch {partial}: {found:?}"));
                    }
                }
            }
        }
    }
    Ok(format!("{verb} {template}"))
}

/// The values an RFC 6902 patch tests or writes, each nested at its path as a partial
/// Application (`/spec/source/helm/parameters` → `{"spec":{"source":{"helm":{"parameters":..}}}}`).
/// Only `test`, `add`, `replace` and `remove` are sent, on object paths (no array indices).
fn json_patch_partials(patch: &Value) -> Result<Vec<Value>, String> {
    let ops = patch
        .as_array()
        .ok_or_else(|| format!("PATCH: a json patch that is not an array: {patch}"))?;
    let mut partials = Vec::new();
    for op in ops {
        let kind = op["op"].as_str().unwrap_or_default();
        if !matches!(kind, "test" | "add" | "replace" | "remove") {
            return Err(format!("PATCH: json patch op {op}"));
        }
        let path = op["path"].as_str().unwrap_or_default();
        let segments: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        if !path.starts_with("/spec/") && !path.starts_with("/metadata/") {
            return Err(format!(
                "PATCH: json patch path {path:?} outside spec and metadata"
            ));
        }
        if segments
            .iter()
            .any(|s| s.parse::<usize>().is_ok() || s == "-")
        {
            return Err(format!("PATCH: json patch path {path:?} indexes an array"));
        }
        if kind == "remove" {
            continue;
        }
        let mut partial = op["value"].clone();
        for segment in segments.iter().rev() {
            partial = json!({ segment.as_str(): partial });
        }
        partials.push(partial);
    }
    Ok(partials)
}

fn crd(file: &str) -> jsonschema::Validator {
    let doc: Value = serde_norway::from_str(&fixture(file)).expect("CRD yaml");
    let mut schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .expect("CRD schema compiles")
}

fn as_resource(mut object: Value, kind: &str) -> Value {
    object["apiVersion"] = json!("argoproj.io/v1alpha1");
    object["kind"] = json!(kind);
    object
}

/// Drives every call of the client against the fake, then checks what was sent and served.
#[tokio::test]
async fn every_request_kind_and_every_fixture_matches_upstream() {
    let swagger = Swagger::load();
    let fake = FakeArgo::start_with(1).await;
    let port = client(&fake.server);
    deploy_engine::conformance::argocd::run_all(&port, &fake, "contract")
        .await
        .unwrap();
    // Calls the suite does not make.
    fake.create_application(&seed("contract-kustomize", "v1"))
        .await;
    port.set_override(
        "contract-kustomize",
        &OverrideValue::Kustomize {
            images: vec!["111111111111.dkr.ecr.us-west-2.amazonaws.com/api:v3".into()],
        },
    )
    .await
    .unwrap();
    port.application_sets().await.unwrap();
    port.application_set("myapp-prod").await.unwrap();
    port.clusters().await.unwrap();
    port.username().await.unwrap();
    // The project's windows, as the AppProject CRD and swagger describe them.
    let windows = json!([
        { "kind": "deny", "schedule": "0 22 * * *", "duration": "8h", "applications": ["contract-*"],
          "timeZone": "Europe/Berlin", "manualSync": false },
        { "kind": "allow", "schedule": "0 6 * * 1-5", "duration": "14h", "clusters": ["*"], "manualSync": true }
    ]);
    for w in windows.as_array().unwrap() {
        let found = errors(&swagger.definition("v1alpha1SyncWindow"), w);
        assert!(found.is_empty(), "SyncWindow vs swagger: {found:#?}");
    }
    fake.set_sync_windows("default", windows);
    let assigned = port.sync_windows("contract-kustomize").await.unwrap();
    assert_eq!(assigned.assigned.len(), 2, "{assigned:?}");
    assert!(assigned.answer.is_some() && assigned.zoned, "{assigned:?}");
    // The answers as served, against swagger: the Application's syncwindows
    // (`applicationApplicationSyncWindowsResponse`, no `timeZone`) and the AppProject
    // (`v1alpha1AppProject`, whose windows have it).
    let served = |path: String| {
        let url = format!("{}{path}", fake.server.uri());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(deploy_argocd::fake::TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let answer = served("/api/v1/applications/contract-kustomize/syncwindows".into()).await;
    let found = errors(
        &swagger.definition("applicationApplicationSyncWindowsResponse"),
        &answer,
    );
    assert!(
        found.is_empty(),
        "syncwindows answer vs swagger: {found:#?}\n{answer:#}"
    );
    assert!(
        answer["assignedWindows"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|w| w.get("timeZone").is_none())),
        "{answer:#}"
    );
    let project = served("/api/v1/projects/default".into()).await;
    let found = errors(&swagger.definition("v1alpha1AppProject"), &project);
    assert!(
        found.is_empty(),
        "AppProject vs swagger: {found:#?}\n{project:#}"
    );
    assert_eq!(
        project["spec"]["syncWindows"][0]["timeZone"], "Europe/Berlin",
        "{project:#}"
    );

    let requests = fake.server.received_requests().await.expect("recording");
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for request in &requests {
        match check_request(&swagger, request) {
            Ok(kind) => {
                covered.insert(kind);
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "requests not allowed by swagger.json: {failures:#?}"
    );
    let want: BTreeSet<String> = [
        "GET /api/v1/applications/{name}",
        "PATCH /api/v1/applications/{name}",
        "POST /api/v1/applications/{name}/sync",
        "DELETE /api/v1/applications/{name}/operation",
        "GET /api/v1/stream/applications",
        "GET /api/v1/applicationsets",
        "GET /api/v1/applicationsets/{name}",
        "GET /api/v1/clusters",
        "GET /api/v1/session/userinfo",
        "GET /api/v1/applications/{name}/syncwindows",
        "GET /api/v1/projects/{name}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(covered, want, "request kinds exercised");
    let queries: BTreeSet<String> = requests
        .iter()
        .flat_map(|r| {
            r.url
                .query_pairs()
                .map(|(k, _)| k.into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        queries,
        BTreeSet::from(["name".into(), "resourceVersion".into()]),
        "query parameters exercised"
    );
    let bodies: Vec<Value> = requests
        .iter()
        .filter(|r| r.url.path().ends_with("/sync"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    // The port has no rollback call any more (a rollback is an override and a sync of our
    // own), so no sync names a revision; every one carries our operation id.
    assert!(
        !bodies.is_empty() && bodies.iter().all(|b| b["infos"].is_array()),
        "every sync carries our operation id in its infos: {bodies:?}"
    );

    // What the fake serves is what Argo CD would serve.
    let app_swagger = swagger.definition("v1alpha1Application");
    let app_crd = crd("application-crd.yaml");
    let objects = fake.objects();
    assert!(objects.len() > 5);
    for object in objects {
        let found = errors(&app_swagger, &object);
        assert!(
            found.is_empty(),
            "Application vs swagger: {found:#?}\n{object:#}"
        );
        let resource = as_resource(object, "Application");
        let found = errors(&app_crd, &resource);
        assert!(
            found.is_empty(),
            "Application vs CRD: {found:#?}\n{resource:#}"
        );
    }
    let set = deploy_argocd::fake::application_set();
    let found = errors(&swagger.definition("v1alpha1ApplicationSet"), &set);
    assert!(found.is_empty(), "ApplicationSet vs swagger: {found:#?}");
    let found = errors(
        &crd("applicationset-crd.yaml"),
        &as_resource(set, "ApplicationSet"),
    );
    assert!(found.is_empty(), "ApplicationSet vs CRD: {found:#?}");
    for cluster in deploy_argocd::fake::clusters().as_array().unwrap() {
        let found = errors(&swagger.definition("v1alpha1Cluster"), cluster);
        assert!(found.is_empty(), "Cluster vs swagger: {found:#?}");
    }
}

#[test]
fn the_strict_schemas_reject_a_misspelt_field() {
    let swagger = Swagger::load();
    let sync = swagger.definition("applicationApplicationSyncRequest");
    assert!(
        errors(
            &sync,
            &json!({"name": "a", "prune": true, "infos": [{"name": "k", "value": "v"}]})
        )
        .is_empty()
    );
    assert!(!errors(&sync, &json!({"name": "a", "prun": true})).is_empty());
    assert!(!errors(&sync, &json!({"name": "a", "infos": [{"key": "k"}]})).is_empty());
    let app = crd("application-crd.yaml");
    let bad = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {},
        "spec": {"destination": {}, "project": "p", "source": {"repoURL": "r", "helm": {"parameter": []}}}});
    assert!(!errors(&app, &bad).is_empty());
}
