//! The OpenAPI 3.1 document of the HTTP API, generated from the code (utoipa): each handler's
//! `#[utoipa::path]` gives its method, path, parameters, bodies and answers, the request and
//! response types derive `ToSchema`, and the route table in `mod.rs` (`api_routes`,
//! `probe_routes`) builds both the router and the document, so a route cannot be served
//! without being described. [`document`] then adds what `auth.rs` decides: each operation's
//! role (`x-warden-role` and a line of its description), the bearer-key `security` of every
//! route that needs a key, and the 401/403 answers of those routes.
//!
//! `GET /openapi.json` serves it (open, like the probes); `warden openapi` prints it.

use axum::extract::State;
use axum::http::Method;
use utoipa::OpenApi;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::json::Json;
use super::{AppState, Limits};
use crate::model::key::Role;

/// Name of the security scheme in the document.
const SCHEME: &str = "api_key";

/// What an operation says about its role: `x-warden-role` is `read`, `write`, `admin` or
/// `none` (open).
pub const ROLE_EXTENSION: &str = "x-warden-role";

/// The parts of the document no handler declares: title, version, tags, the security scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warden",
        description = "The HTTP API of Warden, a WebAssembly task host: deploy components, call their \
                       tasks, follow invocations, workflows, triggers and the cluster.\n\nWhen keys are in \
                       force (a bootstrap `--admin-key` or any stored key), every route but `/health/*` and \
                       `/openapi.json` (and `/metrics` with `--metrics-public`) needs `Authorization: Bearer \
                       KEY` of the role in its `x-warden-role`: `read` < `write` < `admin`. Every error is \
                       `{\"error\":{\"code\",\"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "components", description = "Upload, list and remove components (wasm32-wasip2)."),
        (name = "tasks", description = "The tasks components register, their options and resource use."),
        (name = "invocations", description = "Calls of tasks: route, follow, cancel, rerun."),
        (name = "rate limits", description = "Limits on how many attempts of the tasks naming them start per window, across the cluster."),
        (name = "triggers", description = "Triggers and events (pynenc): route a call when something happens."),
        (name = "workflows", description = "Workflows and arrays (Jobmon): graphs of calls."),
        (name = "cluster", description = "Nodes, the token ring, pins, the atomic services' runs."),
        (name = "keys", description = "API keys and their roles."),
        (name = "operations", description = "Probes, metrics and this document."),
    ),
    modifiers(&BearerKey)
)]
struct Base;

/// Adds the bearer-key security scheme.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "An API key (`wk_…`) from `--admin-key` or `POST /v1/keys`, sent as `Authorization: Bearer KEY`."
                .to_string(),
        );
        doc.components.get_or_insert_with(Default::default).add_security_scheme(SCHEME, SecurityScheme::Http(http));
    }
}

/// The document as a daemon with this `--metrics-public` serves it.
pub fn document(metrics_public: bool) -> serde_json::Value {
    let limits = Limits::of(&crate::config::Config::default());
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.merge(super::api_routes(&limits).into_openapi());
    doc.merge(super::probe_routes().into_openapi());
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
            (Method::HEAD, &mut item.head),
            (Method::OPTIONS, &mut item.options),
            (Method::TRACE, &mut item.trace),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                annotate(op, super::auth::required_role(&method, path, metrics_public));
                op.operation_id = Some(operation_id(&method, path));
            }
        }
    }
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    // `Millis` is an alias of `i64`, which utoipa names by its target: give it its own name.
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(serde_json::Value::as_object_mut)
        && let Some(mut millis) = schemas.remove("i64")
    {
        millis["description"] = "Milliseconds since the Unix epoch, on the database clock.".into();
        schemas.insert("Millis".into(), millis);
        rename_ref(&mut doc, "#/components/schemas/i64", "#/components/schemas/Millis");
    }
    doc
}

/// A unique operation id from the method and the path: `get_v1_invocations_id_result`.
fn operation_id(method: &Method, path: &str) -> String {
    let words = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    std::iter::once(method.as_str().to_ascii_lowercase()).chain(words.map(str::to_string)).collect::<Vec<_>>().join("_")
}

/// Replaces every `$ref` to `from` by one to `to`.
fn rename_ref(v: &mut serde_json::Value, from: &str, to: &str) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k == "$ref" && x == from {
                    *x = to.into();
                } else {
                    rename_ref(x, from, to);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|x| rename_ref(x, from, to)),
        _ => {}
    }
}

/// Writes the role `auth.rs` requires into an operation.
fn annotate(op: &mut Operation, role: Option<Role>) {
    let name = role.map_or("none", Role::as_str);
    op.extensions
        .get_or_insert_with(Default::default)
        .merge(ExtensionsBuilder::new().add(ROLE_EXTENSION, name).build());
    let line = match role {
        Some(r) => format!("Role: `{r}` (an API key of role `{r}` or higher, when keys are in force)."),
        None => "Role: none (open, no key needed).".to_string(),
    };
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
        _ => line,
    });
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build())
                .build(),
        )
    };
    let responses = &mut op.responses.responses;
    if role.is_some() {
        op.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
        responses.insert("401".into(), error("No API key, or an unknown one (keys are in force)."));
        responses.insert("403".into(), error("The key's role is below the operation's `x-warden-role`."));
    }
    responses.insert(
        "default".into(),
        error(
            "Any other error, in the one error shape: e.g. 421 (a `Host` this daemon does not serve), 403 (a \
             state-changing request from a foreign `Origin`), 503 (the database is unavailable; `Retry-After`), \
             500.",
        ),
    );
}

/// The OpenAPI document
///
/// This document, as this daemon serves it.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object))
)]
pub(super) async fn serve_document(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(document(s.guard.metrics_public))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        document(false)
    }

    /// (method, path) of every operation of the document.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("no paths"));
        paths
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(m, _)| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                    .map(move |(m, _)| (m.clone(), p.clone()))
            })
            .collect()
    }

    /// The sources of `api/`, by file name.
    fn api_sources() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), text)
            })
            .collect();
        files.sort();
        files
    }

    /// Every route reaches the router through the table (`routes!` of a `#[utoipa::path]`
    /// handler), so it is in the document: a route registered with plain axum (`.route(…)`,
    /// `get(handler)`, a nested router) fails here, naming its line. And every documented
    /// handler is in the table.
    #[test]
    fn every_route_goes_through_the_table() {
        let mut bypass = Vec::new();
        let mut documented = Vec::new();
        for (file, text) in api_sources() {
            // The dashboard's page and files (`/ui/…`) are not part of the API document.
            if file == "ui.rs" {
                continue;
            }
            let code = text.split("\n#[cfg(test)]").next().unwrap_or_default();
            let lines: Vec<&str> = code.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let l = line.trim();
                if l.starts_with("//") {
                    continue;
                }
                // A path literal after `.route(` (or on the next line), or axum's method routers.
                let plain =
                    [".route(\"", ".route_service(\"", ".nest(\"", ".nest_service(\"", "axum::routing::", "routing::{"];
                let opened = [".route(", ".route_service(", ".nest(", ".nest_service("];
                if plain.iter().any(|p| l.contains(p)) || opened.iter().any(|p| l.ends_with(p)) {
                    bypass.push(format!("{file}:{}: {l}", i + 1));
                }
                if l.starts_with("#[utoipa::path(") {
                    let handler = lines[i..]
                        .iter()
                        .find_map(|l| l.split("async fn ").nth(1))
                        .and_then(|rest| rest.split('(').next())
                        .unwrap_or_else(|| panic!("{file}:{}: no handler after #[utoipa::path]", i + 1));
                    documented.push((file.trim_end_matches(".rs").to_string(), handler.to_string()));
                }
            }
        }
        assert!(bypass.is_empty(), "routes outside the table (and so outside the OpenAPI document):\n{bypass:#?}");
        let table = api_sources().into_iter().find(|(f, _)| f == "mod.rs").map(|(_, t)| t).unwrap_or_default();
        let routed: String = table.split("routes!(").skip(1).filter_map(|s| s.split(')').next()).collect();
        let missing: Vec<_> =
            documented.iter().filter(|(m, h)| !routed.contains(&format!("{m}::{h}"))).collect::<Vec<_>>();
        assert!(missing.is_empty(), "documented handlers that no route serves: {missing:?}");
        // 46 operations today; a route removed from the table shows here too.
        assert!(documented.len() >= 46, "{documented:?}");
        assert_eq!(operations(&doc()).len(), documented.len());
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_its_role() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"][SCHEME]["scheme"], "bearer", "{doc}");
        let ops = operations(&doc);
        for (m, p) in [
            ("post", "/v1/components"),
            ("get", "/v1/invocations/{id}/result"),
            ("post", "/v1/invocations/batch"),
            ("patch", "/v1/tasks/{task}"),
            ("delete", "/v1/keys/{name}"),
            ("get", "/metrics"),
            ("get", "/health/ready"),
            ("get", "/openapi.json"),
        ] {
            assert!(ops.contains(&(m.to_string(), p.to_string())), "{m} {p} missing from {ops:?}");
        }
        for (m, p) in &ops {
            let op = &doc["paths"][p][m];
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let role = crate::api::auth::required_role(&method, p, false);
            assert_eq!(op[ROLE_EXTENSION], role.map_or("none", Role::as_str), "{m} {p}");
            assert_eq!(op["security"].is_array(), role.is_some(), "{m} {p}: {op}");
            assert_eq!(op["responses"]["401"].is_object(), role.is_some(), "{m} {p}");
            if p.starts_with("/v1/") {
                assert!(op["security"].is_array(), "{m} {p}: every /v1 route needs a key");
            }
            assert!(op["operationId"].is_string() && op["tags"].is_array(), "{m} {p}: {op}");
            // Path parameters are declared.
            for name in p.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                let declared = op["parameters"].as_array().into_iter().flatten().any(|q| q["name"] == name);
                assert!(declared, "{m} {p}: parameter {name} not declared");
            }
        }
        for open in ["/health/live", "/health/ready", "/openapi.json"] {
            assert_eq!(doc["paths"][open]["get"][ROLE_EXTENSION], "none");
        }
        assert_eq!(doc["paths"]["/v1/components"]["post"][ROLE_EXTENSION], "admin");
        assert_eq!(doc["paths"]["/v1/invocations"]["post"][ROLE_EXTENSION], "write");
        assert_eq!(doc["paths"]["/v1/invocations"]["get"][ROLE_EXTENSION], "read");
        let upload = &doc["paths"]["/v1/components"]["post"]["requestBody"]["content"];
        assert!(upload["application/wasm"].is_object(), "{upload}");
        let public = document(true);
        assert_eq!(public["paths"]["/metrics"]["get"][ROLE_EXTENSION], "none");
        assert_eq!(doc["paths"]["/metrics"]["get"][ROLE_EXTENSION], "read");
        // Operation ids are unique; every reference resolves.
        let ids: BTreeSet<&str> = ops.iter().filter_map(|(m, p)| doc["paths"][p][m]["operationId"].as_str()).collect();
        assert_eq!(ids.len(), ops.len());
        assert!(doc["components"]["schemas"]["Millis"].is_object() && doc["components"]["schemas"]["i64"].is_null());
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1).filter_map(|s| s.split('"').next()) {
            assert!(doc["components"]["schemas"][r].is_object(), "dangling $ref to {r}");
        }
    }

    /// The README's "HTTP API" table lists exactly the document's operations, with their roles.
    #[test]
    fn the_readme_lists_every_operation_with_its_role() {
        let doc = doc();
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let text = std::fs::read_to_string(readme).unwrap_or_else(|e| panic!("{readme}: {e}"));
        let mut listed = BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, method, path, role, ..] = cells.as_slice() else { continue };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) {
                continue;
            }
            let path = path.trim_matches('`').split('?').next().unwrap_or_default().to_string();
            let m = method.to_ascii_lowercase();
            let documented = doc["paths"][&path][&m][ROLE_EXTENSION].as_str().unwrap_or("missing");
            assert!(role.starts_with(documented), "README: {method} {path} has role {role}, the document {documented}");
            listed.insert((m, path));
        }
        assert_eq!(listed, operations(&doc), "the README's HTTP API table and the document differ");
    }
}
