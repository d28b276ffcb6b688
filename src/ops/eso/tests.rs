use super::*;

const FIXTURES: &str = include_str!("../../../tests/fixtures/eso/externalsecrets.yaml");
const UNSUPPORTED: &str = include_str!("../../../tests/fixtures/eso/unsupported.yaml");

fn by_name(c: &Converted) -> BTreeMap<String, serde_json::Value> {
    c.objects
        .iter()
        .map(|(_, ms)| {
            (
                ms.metadata.name.clone().unwrap(),
                serde_json::to_value(&ms.spec).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_supported_field_converts() {
    let c = convert(FIXTURES, "externalsecrets.yaml", Some("shop")).unwrap();
    let specs = by_name(&c);
    assert_eq!(
        specs["db"],
        serde_json::json!({
            "source": {"esc": {"environment": "acme/shop/prod", "data": [
                {"key": "DB_HOST", "path": "db.host"}, {"key": "DB_USER", "path": "db.user"},
                {"key": "DB_PORT", "path": "db.port"}, {"key": "DB_PASSWORD", "path": "db.password"}]}},
            "target": {"name": "db-credentials"},
            "refreshInterval": "15m"
        })
    );
    assert_eq!(
        specs["settings"],
        serde_json::json!({
            "source": {"esc": {"environment": "acme/shop/prod", "dataFrom": [{"path": "settings"}]}},
            "target": {"labels": {"team": "shop"}},
            "deletionPolicy": "Retain"
        })
    );
    assert_eq!(
        specs["settings-prefixed"]["source"]["esc"]["dataFrom"],
        serde_json::json!([{"path": "settings", "keyPrefix": "APP_"}])
    );
    assert_eq!(
        specs["openai"]["source"]["esc"]["data"][0]["path"],
        r#"["api keys"].openai"#
    );
    assert_eq!(
        specs["registry-pull"]["target"],
        serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "template": {"data": {
            ".dockerconfigjson": r#"{"auths":{"{{ host }}":{"auth":"{{ (user ~ ":" ~ password) | b64encode }}"}}}"#}}})
    );
    assert_eq!(
        specs["database-url"]["target"],
        serde_json::json!({"annotations": {"owner": "shop-team"}, "template": {"mergePolicy": "Merge", "data": {
            "DATABASE_URL": "postgres://{{ user }}:{{ password }}@{{ host }}:5432/shop"}}})
    );
    assert_eq!(c.policies.len(), 1);
    let grant = &c.policies[0].spec.esc[0];
    assert_eq!(grant.environments, ["acme/shop/prod"]);
    assert_eq!(
        grant.paths,
        [
            r#"["api keys"].openai"#,
            "db.host",
            "db.password",
            "db.port",
            "db.user",
            "registry",
            "settings"
        ]
    );
    assert!(c.notes.iter().any(|n| n.contains("its own token")), "{:?}", c.notes);
    let text = render(&c, "externalsecrets.yaml").unwrap();
    assert!(text.contains("# From ExternalSecret shop/db\n"), "{text}");
}

#[test]
fn what_does_not_convert_is_listed_and_nothing_is_returned() {
    let e = convert(UNSUPPORTED, "unsupported.yaml", None).unwrap_err().to_string();
    for want in [
        "SecretStore shop/vault: provider \"vault\" is not Pulumi ESC",
        "ExternalSecret shop/on-change: spec.refreshPolicy: OnChange",
        "ExternalSecret shop/find: spec.dataFrom[0]: only extract converts",
        "ExternalSecret shop/immutable: spec.target.immutable: not supported",
        "ExternalSecret shop/merged: spec.target.creationPolicy: Merge",
        "ExternalSecret shop/property: spec.data[0].remoteRef.property: ESO's Pulumi provider ignores it",
        "ExternalSecret shop/decoded: spec.data[0].remoteRef.decodingStrategy: Base64",
        "ExternalSecret shop/template-from: spec.target.template.templateFrom: not supported",
        "ExternalSecret shop/pkcs12: spec.target.template.data[keystore.p12]: has no translation: the function \"pkcs12cert\"",
        "ExternalSecret shop/once: spec.refreshInterval: 0 syncs once",
        "ExternalSecret shop/elsewhere: spec.secretStoreRef: store \"vault\" does not convert",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert!(e.contains(": 11 problems:"), "one problem per field, none twice:\n{e}");
}

#[test]
fn durations_and_paths_convert_exactly() {
    assert_eq!(go_duration_seconds("1h0m0s"), Some(3600));
    assert_eq!(go_duration_seconds("90m"), Some(5400));
    assert_eq!(go_duration_seconds("1.5h"), None);
    assert_eq!(go_duration_seconds("500ms"), None);
    assert_eq!(keyward_duration(5400), "1h30m");
    assert_eq!(keyward_duration(45), "45s");
    assert_eq!(spec_path("a.b[0]").unwrap(), "a.b[0]");
    assert_eq!(spec_path("a.1x").unwrap(), r#"a["1x"]"#);
    assert_eq!(spec_path(r#"["k.x"].y"#).unwrap(), r#"["k.x"].y"#);
    assert!(spec_path("values.a").is_err());
}
