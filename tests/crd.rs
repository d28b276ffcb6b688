//! The checked-in CRD YAML is exactly what the code generates (`make generate` refreshes it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn checked_in_crds_match_the_code() {
    for name in ["managedsecrets", "accesspolicies"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["crd", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keyward crd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated = String::from_utf8(out.stdout).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("crds/{name}.keyward.dev.yaml"));
        let checked_in = std::fs::read_to_string(&path).unwrap();
        assert!(
            generated == checked_in,
            "{} is stale: run `make generate` and commit the result",
            path.display()
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        2,
        "crds/ holds exactly the generated CRDs"
    );
}
