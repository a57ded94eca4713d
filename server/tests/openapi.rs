//! The OpenAPI document (`server/openapi.json`, served at `GET /v1/openapi.json`) against
//! the real API: the router serves exactly the documented operations, with the documented
//! credentials; real answers (successes and every documented error) validate against the
//! document's schemas, with a documented status and media type; every documented status is
//! produced by a real request; request bodies the gateway refuses are the ones the schema
//! refuses; and every example fits its schema and the protocol crate's types.
#![allow(clippy::unwrap_used)]

mod support;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use support::redis::RedisServer;
use support::*;
use tether_protocol::api::{
    Health, History, InboundPage, InboxPage, Kicked, RoomList, SendToApp, SendToRoom, SendToUser,
    SendToUsers, SentToApp, SentToRoom, SentToUser, SentToUsers, Stats,
};
use tether_protocol::server::RoomPresence;
use tether_server::api::{endpoints, openapi::DOCUMENT, Access};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("server/openapi.json is JSON")
}

/// `/v1/send/user` -> `~1v1~1send~1user` (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The document with the methods it describes.
struct Spec {
    doc: Value,
}

/// One documented answer: where its schema is and its media type.
struct Documented {
    schema_pointer: String,
    media: String,
}

impl Spec {
    fn new() -> Spec {
        Spec { doc: document() }
    }

    /// `(path, method)` of every operation.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (key, _) in item.as_object().unwrap() {
                if METHODS.contains(&key.as_str()) {
                    ops.insert((path.clone(), key.clone()));
                }
            }
        }
        ops
    }

    fn operation(&self, path: &str, method: &str) -> &Value {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        op
    }

    /// Follows a `$ref` inside the document; returns the value and its pointer.
    fn deref<'a>(&'a self, value: &'a Value, pointer: String) -> (&'a Value, String) {
        match value.get("$ref").and_then(Value::as_str) {
            Some(target) => {
                let pointer = target.strip_prefix('#').unwrap().to_owned();
                let found = self.doc.pointer(&pointer);
                (
                    found.unwrap_or_else(|| panic!("dangling {target}")),
                    pointer,
                )
            }
            None => (value, pointer),
        }
    }

    /// Documented statuses of an operation.
    fn statuses(&self, path: &str, method: &str) -> BTreeSet<u16> {
        self.operation(path, method)["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect()
    }

    /// The documented answer for `status`, with the media type the gateway sent.
    fn answer(&self, path: &str, method: &str, status: u16, content_type: &str) -> Documented {
        let op = self.operation(path, method);
        let here = format!("/paths/{}/{method}/responses/{status}", escape(path));
        let response = op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path} answered {status}, not documented"));
        let (response, pointer) = self.deref(response, here);
        let content = response["content"].as_object().unwrap_or_else(|| {
            panic!("{method} {path} {status}: no content documented");
        });
        let essence = content_type.split(';').next().unwrap_or("").trim();
        assert!(
            content.contains_key(essence),
            "{method} {path} {status}: sent {content_type}, documented {:?}",
            content.keys().collect::<Vec<_>>()
        );
        Documented {
            schema_pointer: format!("{pointer}/content/{}/schema", escape(essence)),
            media: essence.to_owned(),
        }
    }

    /// A validator for the schema at `pointer` (resolving `$ref`s in the document).
    fn validator(&self, pointer: &str) -> jsonschema::Validator {
        let mut root = self.doc.clone();
        root["$ref"] = json!(format!("#{pointer}"));
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("schema at {pointer} does not compile: {e}"))
    }

    fn check(&self, pointer: &str, value: &Value, what: &str) {
        let validator = self.validator(pointer);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: {value} breaks {pointer}: {errors:#?}"
        );
    }

    /// Whether `query` fits the documented parameters of the operation: each required one
    /// present, each value valid for its schema. A parameter the document does not name
    /// fails the test: the gateway would read something undocumented.
    fn query_is_valid(&self, path: &str, method: &str, query: &str) -> bool {
        let op = self.operation(path, method);
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let given: Vec<(String, String)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        for (name, _) in &given {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name.as_str() && p["in"] == "query"),
                "{method} {path}: query parameter {name} is not documented"
            );
        }
        params.iter().enumerate().all(|(i, param)| {
            let name = param["name"].as_str().unwrap();
            match given.iter().find(|(k, _)| k == name) {
                None => param["required"] != json!(true),
                Some((_, raw)) => {
                    let pointer = format!("/paths/{}/{method}/parameters/{i}/schema", escape(path));
                    let schema = self.doc.pointer(&pointer).unwrap();
                    // Query values are text; an integer parameter is its decimal form.
                    let value = if schema["type"] == "integer" {
                        raw.parse::<i64>().map(Value::from).unwrap_or(json!(raw))
                    } else {
                        json!(raw)
                    };
                    self.validator(&pointer).is_valid(&value)
                }
            }
        })
    }

    fn request_schema_pointer(&self, path: &str, method: &str) -> String {
        let op = self.operation(path, method);
        assert!(
            op["requestBody"]["content"]["application/json"]["schema"].is_object(),
            "{method} {path}: no JSON request body documented"
        );
        format!(
            "/paths/{}/{method}/requestBody/content/application~1json/schema",
            escape(path)
        )
    }
}

/// `a%20b` -> `a b` (the test's own queries: ASCII only).
fn percent_decode(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).unwrap()
}

/// What a real answer looked like.
struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

/// Calls the API and checks every answer against the document, remembering which
/// documented statuses were seen.
struct Caller<'a> {
    spec: &'a Spec,
    base: String,
    http: reqwest::Client,
    seen: &'a Mutex<BTreeSet<(String, String, u16)>>,
}

impl Caller<'_> {
    /// `path` may carry a query; the document is looked up without it.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        key: Option<&str>,
    ) -> Answer {
        self.call_with(method, path, body, key, None).await
    }

    /// [`Caller::call`] with an `Idempotency-Key`.
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        key: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("idempotency-key", idempotency_key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.unwrap();
        let route = path.split('?').next().unwrap();
        let verb = method.as_str().to_ascii_lowercase();
        let documented = self.spec.answer(route, &verb, status, &content_type);
        let body = if documented.media == "application/json" {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{verb} {path} {status}: not JSON ({e}): {text}"))
        } else {
            Value::String(text)
        };
        self.spec.check(
            &documented.schema_pointer,
            &body,
            &format!("{verb} {path} answered {status}"),
        );
        self.seen
            .lock()
            .unwrap()
            .insert((route.to_owned(), verb, status));
        Answer {
            status,
            body,
            headers,
        }
    }

    /// An admin POST with an `Idempotency-Key`.
    async fn keyed(&self, path: &str, body: &Value, idempotency_key: &str) -> Answer {
        let body = serde_json::to_vec(body).unwrap();
        self.call_with(
            Method::POST,
            path,
            Some(body),
            Some(ADMIN_KEY),
            Some(idempotency_key),
        )
        .await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.call(method, path, body, Some(ADMIN_KEY)).await
    }

    /// Calls a query operation and checks that the gateway and the documented parameters
    /// agree on whether the query is valid.
    async fn query_checked(&self, method: Method, path_and_query: &str) -> Answer {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let verb = method.as_str().to_ascii_lowercase();
        let valid = self.spec.query_is_valid(path, &verb, query);
        let answer = self.admin(method, path_and_query, None).await;
        assert_eq!(
            answer.status != 400,
            valid,
            "{verb} {path_and_query}: gateway answered {} {}, parameters say valid={valid}",
            answer.status,
            answer.body
        );
        answer
    }

    /// Sends `body` and checks that the gateway and the documented request schema agree
    /// on whether it is valid.
    async fn post_checked(&self, path: &str, body: Value) -> Answer {
        let pointer = self.spec.request_schema_pointer(path, "post");
        let valid = self.spec.validator(&pointer).is_valid(&body);
        let answer = self.admin(Method::POST, path, Some(body.clone())).await;
        assert_eq!(
            answer.status != 400,
            valid,
            "POST {path} {body}: gateway answered {} {}, schema says valid={valid}",
            answer.status,
            answer.body
        );
        answer
    }
}

#[test]
fn the_router_serves_exactly_the_documented_operations() {
    let spec = Spec::new();
    assert_eq!(spec.doc["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = endpoints()
        .iter()
        .map(|e| (e.path.to_owned(), e.verb.as_str().to_owned()))
        .collect();
    assert_eq!(
        served.len(),
        endpoints().len(),
        "an endpoint is listed twice"
    );
    let documented = spec.operations();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");

    // Credentials: the document's security (an operation's own, else the global one)
    // matches what the router enforces.
    assert_eq!(spec.doc["security"], json!([{"adminKey": []}]));
    assert_eq!(
        spec.doc["components"]["securitySchemes"]["adminKey"],
        json!({"type": "http", "scheme": "bearer", "description": spec.doc["components"]["securitySchemes"]["adminKey"]["description"]})
    );
    let mut ids = BTreeSet::new();
    for endpoint in endpoints() {
        let op = spec.operation(endpoint.path, endpoint.verb.as_str());
        let public = op.get("security") == Some(&json!([]));
        assert_eq!(
            public,
            endpoint.access == Access::Public,
            "{} {}: documented security disagrees with the router",
            endpoint.verb.as_str(),
            endpoint.path
        );
        let id = op["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        let statuses = spec.statuses(endpoint.path, endpoint.verb.as_str());
        if endpoint.access == Access::AdminKey {
            assert!(statuses.contains(&401), "{}: 401 missing", endpoint.path);
        }
    }
}

/// Value -> T -> value gives back the same JSON: the example has exactly the type's fields.
fn round_trips<T: DeserializeOwned + Serialize>(example: &Value, what: &str) {
    let typed: T = serde_json::from_value(example.clone())
        .unwrap_or_else(|e| panic!("{what}: example {example} does not fit the type: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, example, "{what}: the type and the example differ");
}

#[test]
fn every_example_fits_its_schema_and_the_protocol_types() {
    let spec = Spec::new();
    let mut checked = 0;
    for (path, method) in spec.operations() {
        let op = spec.operation(&path, &method);
        let mut media_types: Vec<(String, &Value)> = Vec::new();
        if let Some(content) = op["requestBody"]["content"].as_object() {
            for (media, m) in content {
                let pointer = format!(
                    "/paths/{}/{method}/requestBody/content/{}",
                    escape(&path),
                    escape(media)
                );
                media_types.push((pointer, m));
            }
        }
        for (status, response) in op["responses"].as_object().unwrap() {
            let here = format!("/paths/{}/{method}/responses/{status}", escape(&path));
            let (response, pointer) = spec.deref(response, here);
            for (media, m) in response["content"].as_object().unwrap() {
                media_types.push((format!("{pointer}/content/{}", escape(media)), m));
            }
        }
        for (pointer, media) in media_types {
            let mut examples: Vec<&Value> = media.get("example").into_iter().collect();
            if let Some(named) = media["examples"].as_object() {
                examples.extend(named.values().map(|e| &e["value"]));
            }
            for example in examples {
                spec.check(
                    &format!("{pointer}/schema"),
                    example,
                    &format!("{method} {path} example"),
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} examples");

    // The examples carry every field of the protocol crate's types, and no other.
    let example = |pointer: &str| spec.doc.pointer(pointer).unwrap().clone();
    let request = |path: &str| {
        example(&format!(
            "/paths/{}/post/requestBody/content/application~1json/example",
            escape(path)
        ))
    };
    let ok = |path: &str, method: &str| {
        example(&format!(
            "/paths/{}/{method}/responses/200/content/application~1json/example",
            escape(path)
        ))
    };
    // The types the schema refuses are exactly the ones the gateway reserves.
    let refused =
        &spec.doc["components"]["schemas"]["OutgoingMessage"]["properties"]["type"]["not"]["enum"];
    assert_eq!(
        *refused,
        json!(tether_protocol::client::RESERVED_TYPES),
        "OutgoingMessage.type's reserved list"
    );
    round_trips::<SendToUser>(&request("/v1/send/user"), "SendToUser");
    round_trips::<SendToUsers>(&request("/v1/send/users"), "SendToUsers");
    round_trips::<SentToUsers>(&ok("/v1/send/users", "post"), "SentToUsers");
    round_trips::<SendToRoom>(&request("/v1/send/room"), "SendToRoom");
    round_trips::<SendToApp>(&request("/v1/send/app"), "SendToApp");
    round_trips::<SentToUser>(&ok("/v1/send/user", "post"), "SentToUser");
    round_trips::<SentToRoom>(&ok("/v1/send/room", "post"), "SentToRoom");
    round_trips::<SentToApp>(&ok("/v1/send/app", "post"), "SentToApp");
    round_trips::<Kicked>(&ok("/v1/connections", "delete"), "Kicked");
    round_trips::<InboundPage>(&ok("/v1/inbound", "get"), "InboundPage");
    round_trips::<Stats>(&ok("/v1/stats", "get"), "Stats");
    round_trips::<RoomPresence>(&ok("/v1/presence", "get"), "RoomPresence");
    round_trips::<History>(&ok("/v1/history", "get"), "History");
    round_trips::<RoomList>(&ok("/v1/rooms", "get"), "RoomList");
    round_trips::<InboxPage>(&ok("/v1/inbox", "get"), "InboxPage");
    round_trips::<Health>(
        &example("/paths/~1health/get/responses/503/content/application~1json/example"),
        "Health",
    );
    for name in ["memory", "redis"] {
        round_trips::<Health>(
            &example(&format!(
                "/paths/~1health/get/responses/200/content/application~1json/examples/{name}/value"
            )),
            "Health",
        );
    }
}

async fn exercise_embedded(caller: &Caller<'_>, gw: &TestGateway) {
    // The document itself, without a key.
    let answer = caller
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, document());
    let answer = caller.call(Method::GET, "/health", None, None).await;
    assert_eq!(answer.status, 200);
    let answer = caller.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.as_str().unwrap().contains("# TYPE"));

    // Connections, a room member and a client message, so every answer has content.
    let mut alice = gw.connect("alice", "phone-1").await;
    let _alice_tablet = gw.connect("alice", "tablet-1").await;
    assert_eq!(
        alice
            .request(json!({"type": "join_room", "data": {"room": "orders:1"}}))
            .await["type"],
        "room_joined"
    );
    assert_eq!(
        alice
            .request(json!({"type": "chat", "id": "m-1", "data": {"text": "hi"}}))
            .await["type"],
        "ack"
    );

    // Sends: valid bodies, with and without optional fields.
    let message = json!({"type": "order_update", "id": "order-1", "data": {"orderId": 1}});
    let answer = caller
        .post_checked(
            "/v1/send/user",
            json!({"userId": "alice", "app": APP, "message": message}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["delivered"].as_u64()),
        (200, Some(2))
    );
    let answer = caller
        .post_checked(
            "/v1/send/user",
            json!({"userId": "bob", "app": APP, "message": {"type": "n"}}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["delivered"].as_u64()),
        (200, Some(0))
    );
    let answer = caller
        .post_checked(
            "/v1/send/users",
            json!({"userIds": ["alice", "bob"], "app": APP, "message": {"type": "n", "id": "order-2"}}),
        )
        .await;
    assert_eq!(
        (
            answer.status,
            answer.body["sent"].as_u64(),
            answer.body["users"][0]["delivered"].as_u64()
        ),
        (200, Some(2), Some(2))
    );
    let answer = caller
        .post_checked(
            "/v1/send/room",
            json!({"room": "orders:1", "app": APP, "message": {"type": "n", "data": [1, 2]}}),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["delivered"].as_u64()),
        (200, Some(1))
    );
    let answer = caller
        .post_checked(
            "/v1/send/app",
            json!({"app": APP, "message": {"type": "n", "data": null}}),
        )
        .await;
    assert_eq!(answer.status, 200);

    // An Idempotency-Key: a retry gets the first answer, marked; another request with
    // the key is refused.
    for (path, body) in idempotent_sends("orders:1") {
        let first = caller.keyed(path, &body, &format!("embedded{path}")).await;
        assert_eq!(first.status, 200, "{path}: {}", first.body);
        assert!(first.headers.get("idempotent-replayed").is_none());
        let retry = caller.keyed(path, &body, &format!("embedded{path}")).await;
        assert_eq!((retry.status, &retry.body), (200, &first.body), "{path}");
        assert_eq!(retry.headers["idempotent-replayed"], "true", "{path}");
        let mut other = body.clone();
        other["message"]["data"] = json!("something else");
        let reused = caller.keyed(path, &other, &format!("embedded{path}")).await;
        assert_eq!(reused.status, 422, "{path}: {}", reused.body);
        assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    }

    // Bodies the gateway refuses, each also refused by the schema.
    let long = "x".repeat(129);
    for body in [
        json!({"app": APP, "message": {"type": "n"}}),
        json!({"userId": "u", "app": "bad app", "message": {"type": "n"}}),
        json!({"userId": "", "app": APP, "message": {"type": "n"}}),
        json!({"userId": long, "app": APP, "message": {"type": "n"}}),
        json!({"userId": "a\u{7}b", "app": APP, "message": {"type": "n"}}),
        json!({"userId": "u", "app": APP, "message": {"type": "Bad Type"}}),
        json!({"userId": "u", "app": APP, "message": {"type": "pong"}}),
        json!({"userId": "u", "app": APP, "message": {"type": "n", "id": "has space"}}),
        json!({"userId": "u", "app": APP, "message": {"type": "n", "id": ""}}),
        json!({"userId": "u", "app": APP, "message": {"data": 1}}),
        json!({"userId": 5, "app": APP, "message": {"type": "n"}}),
        json!("not an object"),
    ] {
        caller.post_checked("/v1/send/user", body).await;
    }
    let many: Vec<String> = (0..1001).map(|n| format!("u{n}")).collect();
    for body in [
        json!({"userIds": [], "app": APP, "message": {"type": "n"}}),
        json!({"userIds": ["a", "b", "a"], "app": APP, "message": {"type": "n"}}),
        json!({"userIds": many, "app": APP, "message": {"type": "n"}}),
        json!({"userIds": ["ok", ""], "app": APP, "message": {"type": "n"}}),
        json!({"userIds": "alice", "app": APP, "message": {"type": "n"}}),
        json!({"userId": "alice", "app": APP, "message": {"type": "n"}}),
    ] {
        caller.post_checked("/v1/send/users", body).await;
    }
    for body in [
        json!({"room": "bad room", "app": APP, "message": {"type": "n"}}),
        json!({"room": "", "app": APP, "message": {"type": "n"}}),
        json!({"app": APP, "message": {"type": "n"}}),
    ] {
        caller.post_checked("/v1/send/room", body).await;
    }
    for body in [
        json!({"app": APP}),
        json!({"app": "", "message": {"type": "n"}}),
    ] {
        caller.post_checked("/v1/send/app", body).await;
    }
    let answer = caller
        .call(
            Method::POST,
            "/v1/send/app",
            Some(b"{not json".to_vec()),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(answer.status, 400);
    // Bodies above the 2 MiB limit are refused by the HTTP layer.
    for path in [
        "/v1/send/user",
        "/v1/send/users",
        "/v1/send/room",
        "/v1/send/app",
    ] {
        let huge = format!("{{\"app\":\"{APP}\",\"pad\":\"{}\"}}", "x".repeat(3 << 20));
        let answer = caller
            .call(Method::POST, path, Some(huge.into_bytes()), Some(ADMIN_KEY))
            .await;
        assert_eq!(answer.status, 413, "{path}");
        assert_eq!(answer.body["error"]["code"], "payload_too_large", "{path}");
    }

    // Inbound pages.
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/inbound?app={APP}&limit=10"))
        .await;
    assert_eq!(answer.status, 200);
    let messages = answer.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let next = answer.body["next"].as_str().unwrap().to_owned();
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/inbound?app={APP}&after={next}"))
        .await;
    assert_eq!(
        (
            answer.status,
            answer.body["messages"].as_array().map(Vec::len)
        ),
        (200, Some(0))
    );
    let answer = caller
        .query_checked(Method::GET, "/v1/inbound?app=empty-app&limit=1000")
        .await;
    assert_eq!(answer.status, 200);
    for query in [
        "",
        "?app=bad%20app",
        "?app=shop&limit=0",
        "?app=shop&limit=1001",
        "?app=shop&limit=x",
    ] {
        let answer = caller
            .query_checked(Method::GET, &format!("/v1/inbound{query}"))
            .await;
        assert_eq!(answer.status, 400, "{query}");
    }

    // Presence: alice is in orders:1 from one of her two connections; nobody in lobby.
    let answer = caller
        .query_checked(
            Method::GET,
            &format!("/v1/presence?app={APP}&room=orders:1"),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"room": "orders:1", "users": 1, "connections": 1, "truncated": false,
               "members": [{"userId": "alice", "userType": "customer", "connections": 1,
                            "connectionIds": [alice.established["data"]["connectionId"].clone()]}]})
    );
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/presence?app={APP}&room=lobby"))
        .await;
    assert_eq!(
        (answer.status, answer.body["users"].clone()),
        (200, json!(0))
    );
    for query in [
        "",
        "?app=shop",
        "?room=lobby",
        "?app=bad%20app&room=lobby",
        "?app=shop&room=a%20b",
    ] {
        let answer = caller
            .query_checked(Method::GET, &format!("/v1/presence{query}"))
            .await;
        assert_eq!(answer.status, 400, "{query}");
    }

    // Rooms of this node: alice's one connection in orders:1.
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/rooms?app={APP}"))
        .await;
    assert_eq!(answer.status, 200);
    let orders = answer.body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "orders:1")
        .cloned();
    assert_eq!(
        orders,
        Some(json!({"room": "orders:1", "connections": 1})),
        "{}",
        answer.body
    );
    let answer = caller
        .query_checked(Method::GET, "/v1/rooms?app=nobody-here")
        .await;
    assert_eq!(
        (answer.status, answer.body["total"].clone()),
        (200, json!(0))
    );
    for query in ["", "?app=bad%20app"] {
        let answer = caller
            .query_checked(Method::GET, &format!("/v1/rooms{query}"))
            .await;
        assert_eq!(answer.status, 400, "{query}");
    }

    // Inbox: what alice's inbox keeps, page by page.
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/inbox?app={APP}&userId=alice"))
        .await;
    assert_eq!(answer.status, 200);
    let kept = answer.body["messages"].as_array().unwrap().clone();
    assert!(kept.len() >= 2, "{}", answer.body);
    assert_eq!(answer.body["more"], false);
    let first_seq = kept[0]["seq"].as_u64().unwrap();
    let answer = caller
        .query_checked(
            Method::GET,
            &format!("/v1/inbox?app={APP}&userId=alice&after={first_seq}&limit=1"),
        )
        .await;
    assert_eq!(
        answer.body["messages"],
        json!([kept[1].clone()]),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["more"], kept.len() > 2);
    for query in [
        "",
        "?app=shop",
        "?userId=alice",
        "?app=shop&userId=alice&limit=0",
        "?app=shop&userId=alice&limit=1001",
        "?app=shop&userId=alice&after=x",
    ] {
        let answer = caller
            .query_checked(Method::GET, &format!("/v1/inbox{query}"))
            .await;
        assert_eq!(answer.status, 400, "{query}");
    }

    // History: rooms matching WS_ROOM_HISTORY (news:*) and the app's broadcasts keep what
    // was sent to them, with offsets; other rooms keep nothing.
    let sent = caller
        .post_checked(
            "/v1/send/room",
            json!({"room": "news:1", "app": APP, "message": {"type": "n", "data": 1}}),
        )
        .await;
    assert_eq!((sent.status, sent.body["offset"].clone()), (200, json!(1)));
    let epoch = sent.body["epoch"].as_str().unwrap().to_owned();
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/history?app={APP}&room=news:1"))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["offset"], 1);
    assert_eq!(answer.body["messages"][0]["data"], 1);
    assert_eq!(answer.body["messages"][0]["offset"], 1);
    let answer = caller
        .query_checked(
            Method::GET,
            &format!("/v1/history?app={APP}&room=news:1&since=1&epoch={epoch}&limit=5"),
        )
        .await;
    assert_eq!(
        (
            answer.status,
            answer.body["recovered"].clone(),
            answer.body["messages"].clone()
        ),
        (200, json!(true), json!([]))
    );
    let answer = caller
        .query_checked(
            Method::GET,
            &format!("/v1/history?app={APP}&room=news:1&since=1&epoch=other"),
        )
        .await;
    assert_eq!(
        (
            answer.body["recovered"].clone(),
            answer.body["messages"].as_array().unwrap().len()
        ),
        (json!(false), 1)
    );
    let sent = caller
        .post_checked(
            "/v1/send/app",
            json!({"app": APP, "message": {"type": "n"}}),
        )
        .await;
    // Earlier sends to the app went into its stream too.
    assert!(sent.body["offset"].as_u64().unwrap() >= 1, "{}", sent.body);
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/history?app={APP}"))
        .await;
    assert_eq!(
        (answer.status, answer.body["room"].clone()),
        (200, json!(null))
    );
    assert_eq!(answer.body["offset"], sent.body["offset"]);
    let answer = caller
        .query_checked(Method::GET, &format!("/v1/history?app={APP}&room=lobby"))
        .await;
    assert_eq!(answer.status, 404);
    for query in [
        "",
        "?room=news:1",
        "?app=bad%20app",
        "?app=shop&room=a%20b",
        "?app=shop&room=news:1&limit=0",
        "?app=shop&room=news:1&limit=1001",
        "?app=shop&room=news:1&epoch=a:b",
        "?app=shop&room=news:1&since=-1",
    ] {
        let answer = caller
            .query_checked(Method::GET, &format!("/v1/history{query}"))
            .await;
        assert_eq!(answer.status, 400, "{query}");
    }

    // Stats.
    let answer = caller.admin(Method::GET, "/v1/stats", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["totalConnections"], 2);
    assert_eq!(answer.body["connectionsByApp"][APP], 2);

    // Kicks.
    for query in [
        "",
        "?app=shop",
        "?userId=alice",
        "?app=bad%20app&userId=alice",
    ] {
        let answer = caller
            .query_checked(Method::DELETE, &format!("/v1/connections{query}"))
            .await;
        assert_eq!(answer.status, 400, "{query}");
    }
    let answer = caller
        .query_checked(
            Method::DELETE,
            &format!("/v1/connections?app={APP}&userId=alice"),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["kicked"].as_u64()),
        (200, Some(2))
    );

    // Every operation that needs the key refuses a missing or wrong one.
    for endpoint in endpoints()
        .into_iter()
        .filter(|e| e.access == Access::AdminKey)
    {
        let method =
            Method::from_bytes(endpoint.verb.as_str().to_ascii_uppercase().as_bytes()).unwrap();
        let body = (endpoint.verb.as_str() == "post").then(|| b"{}".to_vec());
        for key in [None, Some("wrong-key-0123456789")] {
            let answer = caller
                .call(method.clone(), endpoint.path, body.clone(), key)
                .await;
            assert_eq!(answer.status, 401, "{} {key:?}", endpoint.path);
        }
    }
}

async fn exercise_without_key(caller: &Caller<'_>) {
    for endpoint in endpoints()
        .into_iter()
        .filter(|e| e.access == Access::AdminKey)
    {
        let method =
            Method::from_bytes(endpoint.verb.as_str().to_ascii_uppercase().as_bytes()).unwrap();
        let answer = caller
            .call(method, endpoint.path, None, Some(ADMIN_KEY))
            .await;
        assert_eq!(answer.status, 401, "{}", endpoint.path);
        assert!(answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ADMIN_API_KEY"));
    }
    let answer = caller
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(answer.status, 200);
}

/// One valid body per send endpoint, for the `Idempotency-Key` checks.
fn idempotent_sends(room: &str) -> [(&'static str, Value); 4] {
    let message = json!({"type": "n", "data": {"orderId": 1}});
    [
        (
            "/v1/send/user",
            json!({"userId": "alice", "app": APP, "message": message}),
        ),
        (
            "/v1/send/users",
            json!({"userIds": ["alice", "bob"], "app": APP, "message": message}),
        ),
        (
            "/v1/send/room",
            json!({"room": room, "app": APP, "message": message}),
        ),
        ("/v1/send/app", json!({"app": APP, "message": message})),
    ]
}

/// A request whose first attempt is still running (its pending record in Redis, as the
/// gateway that took it wrote it) is answered 409 with `Retry-After`.
async fn exercise_in_progress(caller: &Caller<'_>, redis: &RedisServer) {
    for (path, body) in idempotent_sends("r") {
        let key = format!("running{path}");
        let fingerprint = tether_server::broker::idempotency::fingerprint(path, &body);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let record = format!("tether:{{i:{APP}:{}}}:idem", key.replace('/', "%2F"));
        redis
            .cli(&[
                "SET",
                &record,
                &format!("p:{now_ms}:00000000deadbeef:{fingerprint}"),
                "PX",
                "60000",
            ])
            .unwrap();
        let answer = caller.keyed(path, &body, &key).await;
        assert_eq!(answer.status, 409, "{path}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], "idempotency_in_progress");
        assert_eq!(answer.headers["retry-after"], "1");
    }
}

async fn exercise_redis_down(caller: &Caller<'_>, redis: &mut RedisServer) {
    let answer = caller.call(Method::GET, "/health", None, None).await;
    assert_eq!(answer.status, 200);
    redis.kill();
    let deadline = std::time::Instant::now() + WAIT * 2;
    while caller.call(Method::GET, "/health", None, None).await.status != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "health never turned 503"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let message = json!({"type": "n"});
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/send/user".to_owned(),
            Some(json!({"userId": "u", "app": APP, "message": message})),
        ),
        (
            Method::POST,
            "/v1/send/users".to_owned(),
            Some(json!({"userIds": ["u", "v"], "app": APP, "message": message})),
        ),
        (
            Method::POST,
            "/v1/send/room".to_owned(),
            Some(json!({"room": "r", "app": APP, "message": message})),
        ),
        (
            Method::POST,
            "/v1/send/app".to_owned(),
            Some(json!({"app": APP, "message": message})),
        ),
        (
            Method::DELETE,
            format!("/v1/connections?app={APP}&userId=u"),
            None,
        ),
        (Method::GET, format!("/v1/inbound?app={APP}"), None),
        (Method::GET, format!("/v1/presence?app={APP}&room=r"), None),
        (Method::GET, format!("/v1/inbox?app={APP}&userId=u"), None),
        (
            Method::GET,
            format!("/v1/history?app={APP}&room=news:1"),
            None,
        ),
        (Method::GET, "/v1/stats".to_owned(), None),
    ] {
        let answer = caller.admin(method, &path, body).await;
        assert_eq!(answer.status, 503, "{path}: {}", answer.body);
    }
}

#[tokio::test]
async fn real_answers_match_the_document_and_cover_every_documented_status() {
    let spec = Spec::new();
    let seen = Mutex::new(BTreeSet::new());
    let caller = |gw: &TestGateway| Caller {
        spec: &spec,
        base: format!("http://{}", gw.addr),
        http: reqwest::Client::new(),
        seen: &seen,
    };

    let gw = TestGateway::with(|c| {
        c.room_history = vec!["news:*".into()];
        c.app_history_size = 10;
    })
    .await;
    exercise_embedded(&caller(&gw), &gw).await;
    let keyless = TestGateway::with(|c| c.admin_api_key = None).await;
    exercise_without_key(&caller(&keyless)).await;
    let mut redis = RedisServer::start();
    let on_redis =
        TestGateway::redis(&redis.url(), |c| c.room_history = vec!["news:*".into()]).await;
    exercise_in_progress(&caller(&on_redis), &redis).await;
    exercise_redis_down(&caller(&on_redis), &mut redis).await;

    let seen = seen.into_inner().unwrap();
    let mut unseen: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for (path, method) in spec.operations() {
        for status in spec.statuses(&path, &method) {
            if !seen.contains(&(path.clone(), method.clone(), status)) {
                unseen
                    .entry(format!("{method} {path}"))
                    .or_default()
                    .push(status);
            }
        }
    }
    assert!(
        unseen.is_empty(),
        "documented but never answered: {unseen:?}"
    );
}
