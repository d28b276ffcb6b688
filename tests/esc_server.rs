//! The local ESC server over HTTP: each test starts its own in-process server on a free loopback port with a
//! temporary data file, and talks to it with reqwest as any ESC client would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use keyward_dev::esc_server::{EscServer, EscServerOptions, Fault};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-1";
const CANARY: &str = "canary-Zq81-never-on-disk";

struct Fixture {
    server: EscServer,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Fixture {
    async fn start(token: Option<&str>) -> Fixture {
        keyward::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let server = EscServer::start(EscServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().join("esc.json"),
            token: token.map(str::to_owned),
        })
        .await
        .unwrap();
        Fixture {
            server,
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn data_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("esc.json")).unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("Authorization", format!("token {TOKEN}"))
    }

    async fn create(&self, org: &str, project: &str, name: &str) -> StatusCode {
        self.req(Method::POST, &format!("/environments/{org}"))
            .json(&json!({"project": project, "name": name}))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn update(&self, env: &str, yaml: &str, if_match: Option<&str>) -> reqwest::Response {
        let mut r = self
            .req(Method::PATCH, &format!("/environments/{env}"))
            .header("Content-Type", "application/x-yaml")
            .body(yaml.to_owned());
        if let Some(etag) = if_match {
            r = r.header("If-Match", etag);
        }
        r.send().await.unwrap()
    }

    async fn open(&self, env: &str, version: Option<&str>) -> String {
        let path = match version {
            None => format!("/environments/{env}/open?duration=1h"),
            Some(v) => format!("/environments/{env}/versions/{v}/open"),
        };
        let res = self.req(Method::POST, &path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn property(&self, env: &str, id: &str, property: &str) -> (StatusCode, Value) {
        let res = self
            .req(
                Method::GET,
                &format!("/environments/{env}/open//{id}?property={}", encode(property)),
            )
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap())
    }

    async fn json(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let res = self.req(method, path).send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_update_open_and_read() {
    let f = Fixture::start(Some(TOKEN)).await;
    assert_eq!(f.create("acme", "sophia", "prod").await, StatusCode::NO_CONTENT);
    assert_eq!(f.create("acme", "sophia", "prod").await, StatusCode::CONFLICT);
    assert_eq!(f.create("acme", "sophia", "open-x").await, StatusCode::BAD_REQUEST);
    assert_eq!(f.create("acme", ".hidden", "x").await, StatusCode::BAD_REQUEST);
    assert_eq!(f.create("acme", "default", "legacy").await, StatusCode::NO_CONTENT);

    // A new environment is revision 1, empty.
    let res = f
        .req(Method::GET, "/environments/acme/sophia/prod")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "pulumi-esc-revision"), "1");
    let etag1 = header(&res, "etag");
    assert!(!etag1.is_empty());
    assert_eq!(header(&res, "content-type"), "application/x-yaml");

    let definition = format!(
        "# production\nimports:\n  - legacy\nvalues:\n  sophia:\n    ai:\n      openai_api_key:\n        fn::secret: {CANARY}\n  list: [a, b]\n  url: https://${{sophia.ai.openai_api_key}}@api\n  aws:\n    fn::open::aws-login: {{oidc: {{roleArn: arn}}}}\n"
    );
    assert_eq!(
        f.update(
            "acme/default/legacy",
            "values:\n  region: eu-west-1\n  list: [z]\n",
            None
        )
        .await
        .status(),
        StatusCode::OK
    );
    let res = f.update("acme/sophia/prod", &definition, Some(&etag1)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "pulumi-esc-revision"), "2");
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"diagnostics": []}));

    // The old ETag is stale now; without If-Match an update is accepted.
    let stale = f.update("acme/sophia/prod", "values: {}\n", Some(&etag1)).await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["code"], json!(409));
    assert!(body["message"].is_string());

    // The stored definition keeps every byte except the secret, which is ciphertext.
    let res = f
        .req(Method::GET, "/environments/acme/sophia/prod")
        .send()
        .await
        .unwrap();
    let etag2 = header(&res, "etag");
    assert_ne!(etag1, etag2);
    let stored = res.text().await.unwrap();
    assert!(!stored.contains(CANARY), "{stored}");
    assert!(stored.contains("fn::secret: {ciphertext: "), "{stored}");
    let (before, after) = definition.split_once(CANARY).unwrap();
    assert!(stored.starts_with(before) && stored.ends_with(after), "{stored}");

    let head = f
        .req(Method::HEAD, "/environments/acme/sophia/prod")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "etag"), etag2);
    assert_eq!(header(&head, "pulumi-esc-revision"), "2");

    // Open and read: the whole environment, then single properties.
    let id = f.open("acme/sophia/prod", None).await;
    let (status, env) = f
        .json(Method::GET, &format!("/environments/acme/sophia/prod/open/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let props = &env["properties"];
    let key = &props["sophia"]["value"]["ai"]["value"]["openai_api_key"];
    assert_eq!(key["value"], json!(CANARY));
    assert_eq!(key["secret"], json!(true));
    assert_eq!(key["trace"]["def"]["environment"], json!("sophia/prod"));
    assert_eq!(props["region"]["value"], json!("eu-west-1"), "imported");
    assert_eq!(props["list"]["value"][0]["value"], json!("a"), "the importer wins");
    assert_eq!(props["url"]["value"], json!(format!("https://{CANARY}@api")));
    assert_eq!(props["url"]["secret"], json!(true));
    assert_eq!(props["aws"]["unknown"], json!(true));

    let (status, v) = f.property("acme/sophia/prod", &id, "sophia.ai.openai_api_key").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((v["value"].clone(), v["secret"].clone()), (json!(CANARY), json!(true)));
    let (_, v) = f.property("acme/sophia/prod", &id, "list[1]").await;
    assert_eq!(v["value"], json!("b"));
    let (_, v) = f
        .property("acme/sophia/prod", &id, r#"sophia["ai"].openai_api_key"#)
        .await;
    assert_eq!(v["value"], json!(CANARY));
    let (status, v) = f.property("acme/sophia/prod", &id, "sophia.nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["message"].as_str().unwrap().contains("sophia.nope"), "{v}");
    let (status, _) = f.property("acme/sophia/prod", &id, "a..b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = f.property("acme/sophia/prod", "no-such-session", "list").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // decrypt shows the plaintext definition.
    let res = f
        .req(Method::GET, "/environments/acme/sophia/prod/decrypt")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), definition);

    // Listing.
    let (_, list) = f.json(Method::GET, "/environments/acme").await;
    let names: Vec<_> = list["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}/{}", e["project"].as_str().unwrap(), e["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec!["default/legacy", "sophia/prod"]);
    assert_eq!(list["environments"][1]["organization"], json!("acme"));
    assert!(list["environments"][1]["created"].is_string() && list["environments"][1]["modified"].is_string());

    // Not found and bad requests answer with the spec's Error body.
    let (status, body) = f.json(Method::GET, "/environments/acme/sophia/nope").await;
    assert_eq!((status, body["code"].clone()), (StatusCode::NOT_FOUND, json!(404)));
    let bad = f.update("acme/sophia/prod", "values: [unclosed\n", None).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let diags: Value = bad.json().await.unwrap();
    assert!(!diags["diagnostics"].as_array().unwrap().is_empty());
    let bad_ref = f.update("acme/sophia/prod", "values:\n  a: ${missing}\n", None).await;
    assert_eq!(bad_ref.status(), StatusCode::BAD_REQUEST);

    // The canary never reached the disk.
    let data = f.data_file();
    assert!(!data.contains(CANARY));
    assert!(data.contains("ciphertext"));

    // Deleting.
    let res = f
        .req(Method::DELETE, "/environments/acme/default/legacy")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = f
        .req(Method::DELETE, "/environments/acme/default/legacy")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    f.server.stop().await;
}

#[tokio::test]
async fn revisions_tags_and_opening_old_versions() {
    let f = Fixture::start(Some(TOKEN)).await;
    assert_eq!(f.create("acme", "app", "dev").await, StatusCode::NO_CONTENT);
    for v in ["one", "two", "three"] {
        let yaml = format!("values:\n  pw:\n    fn::secret: {CANARY}-{v}\n");
        assert_eq!(f.update("acme/app/dev", &yaml, None).await.status(), StatusCode::OK);
    }
    // Revisions 1 (creation) to 4, newest first.
    let (status, list) = f.json(Method::GET, "/environments/acme/app/dev/versions").await;
    assert_eq!(status, StatusCode::OK);
    let numbers: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![4, 3, 2, 1]);
    assert_eq!(list[0]["tags"], json!(["latest"]));
    assert!(list[0]["created"].is_string() && list[0]["creatorLogin"].is_string());
    let (_, page) = f
        .json(Method::GET, "/environments/acme/app/dev/versions?before=4&count=2")
        .await;
    let numbers: Vec<u64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![3, 2]);

    // A definition at a revision, still without plaintext.
    let res = f
        .req(Method::GET, "/environments/acme/app/dev/versions/2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "pulumi-esc-revision"), "2");
    let text = res.text().await.unwrap();
    assert!(text.contains("ciphertext") && !text.contains(CANARY));
    let (status, _) = f.json(Method::GET, "/environments/acme/app/dev/versions/99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revision tags: `latest` always exists and follows the newest revision.
    let (_, tags) = f.json(Method::GET, "/environments/acme/app/dev/versions/tags").await;
    assert_eq!(tags["tags"][0]["name"], json!("latest"));
    assert_eq!(tags["tags"][0]["revision"], json!(4));
    let res = f
        .req(Method::POST, "/environments/acme/app/dev/versions/tags")
        .json(&json!({"name": "stable", "revision": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = f
        .req(Method::POST, "/environments/acme/app/dev/versions/tags")
        .json(&json!({"name": "stable", "revision": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let (_, tag) = f
        .json(Method::GET, "/environments/acme/app/dev/versions/tags/stable")
        .await;
    assert_eq!(
        (tag["name"].clone(), tag["revision"].clone()),
        (json!("stable"), json!(2))
    );

    // Open at a revision number and at a tag.
    let at3 = f.open("acme/app/dev", Some("3")).await;
    let (_, v) = f.property("acme/app/dev", &at3, "pw").await;
    assert_eq!(v["value"], json!(format!("{CANARY}-two")));
    let stable = f.open("acme/app/dev", Some("stable")).await;
    let (_, v) = f.property("acme/app/dev", &stable, "pw").await;
    assert_eq!(v["value"], json!(format!("{CANARY}-one")));
    let latest = f.open("acme/app/dev", Some("latest")).await;
    let (_, v) = f.property("acme/app/dev", &latest, "pw").await;
    assert_eq!(v["value"], json!(format!("{CANARY}-three")));
    let res = f
        .req(Method::POST, "/environments/acme/app/dev/versions/nope/open")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Moving and deleting tags; `latest` cannot be changed.
    let res = f
        .req(Method::PATCH, "/environments/acme/app/dev/versions/tags/stable")
        .json(&json!({"revision": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (_, list) = f.json(Method::GET, "/environments/acme/app/dev/versions").await;
    assert_eq!(list[1]["tags"], json!(["stable"]));
    let res = f
        .req(Method::PATCH, "/environments/acme/app/dev/versions/tags/latest")
        .json(&json!({"revision": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = f
        .req(Method::DELETE, "/environments/acme/app/dev/versions/tags/stable")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // A session belongs to its environment.
    assert_eq!(f.create("acme", "app", "other").await, StatusCode::NO_CONTENT);
    let (status, _) = f.property("acme/app/other", &latest, "pw").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!f.data_file().contains(CANARY));
    f.server.stop().await;
}

#[tokio::test]
async fn authentication() {
    let f = Fixture::start(Some(TOKEN)).await;
    for auth in [None, Some("token wrong"), Some(&*format!("Bearer {TOKEN}"))] {
        let mut r = f.http.get(f.url("/environments/acme"));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        let res = r.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], json!(401));
    }
    let (status, _) = f.json(Method::GET, "/environments/acme").await;
    assert_eq!(status, StatusCode::OK);
    f.server.stop().await;

    // Without a token, anything goes.
    let open = Fixture::start(None).await;
    let res = open.http.get(open.url("/environments/acme")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    open.server.stop().await;
}

#[tokio::test]
async fn faults_and_counters() {
    let f = Fixture::start(Some(TOKEN)).await;
    f.server
        .put_definition("acme", "app", "dev", "values:\n  a: 1\n")
        .unwrap();

    // Unavailable, with and without Retry-After.
    f.server.set_fault(Fault::unavailable(Some(7)));
    let res = f.req(Method::GET, "/environments/acme/app/dev").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "retry-after"), "7");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], json!(503));
    f.server.set_fault(Fault::unavailable(None));
    let res = f.req(Method::GET, "/environments/acme/app/dev").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("retry-after").is_none());

    // Throttled through the control endpoint, healing after two requests.
    let res = f
        .http
        .put(format!("http://{}/_dev/fault", f.server.addr()))
        .json(&json!({"mode": "throttled", "retryAfterSeconds": 2, "failCount": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for _ in 0..2 {
        let res = f
            .req(Method::POST, "/environments/acme/app/dev/open")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after"), "2");
    }
    let id = f.open("acme/app/dev", None).await;
    assert_eq!(f.property("acme/app/dev", &id, "a").await.1["value"], json!(1));

    // Latency.
    f.server
        .set_fault(Fault::none().with_latency(Duration::from_millis(300)));
    let t = Instant::now();
    let (status, _) = f.json(Method::GET, "/environments/acme").await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    f.server.set_fault(Fault::none());

    // Counters, in process and over HTTP: every request, faulted ones included.
    let c = f.server.counters();
    assert_eq!(c.requests("getDefinition"), 2);
    assert_eq!(c.requests("open"), 3);
    assert_eq!(c.requests("readProperty"), 1);
    assert_eq!(c.requests("listEnvironments"), 1);
    assert_eq!(c.opens("acme/app/dev"), 3);
    assert_eq!(c.faults_injected, 4);
    assert_eq!(c.total, 7);
    let over_http: Value = f
        .http
        .get(format!("http://{}/_dev/counters", f.server.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["requests"]["open"], json!(3));
    assert_eq!(over_http["opens"]["acme/app/dev"], json!(3));
    let res = f
        .http
        .post(format!("http://{}/_dev/counters/reset", f.server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(f.server.counters().total, 0);
    f.server.stop().await;
}

#[tokio::test]
async fn data_survives_a_restart() {
    keyward::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let opts = EscServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: dir.path().join("esc.json"),
        token: None,
    };
    let first = EscServer::start(opts.clone()).await.unwrap();
    let rev = first
        .put_definition(
            "acme",
            "app",
            "dev",
            &format!("values:\n  pw: {{fn::secret: {CANARY}}}\n"),
        )
        .unwrap();
    assert_eq!(rev, 2);
    first.stop().await;
    let on_disk = std::fs::read_to_string(dir.path().join("esc.json")).unwrap();
    assert!(!on_disk.contains(CANARY));

    let second = EscServer::start(opts).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = second.base_url();
    let open: Value = http
        .post(format!("{base}/environments/acme/app/dev/open"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = open["id"].as_str().unwrap();
    let v: Value = http
        .get(format!("{base}/environments/acme/app/dev/open//{id}?property=pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"], json!(CANARY));
    second.stop().await;
}
