//! The shapes Kubernetes' typed Secrets must have, checked before a Secret is written — more than the API
//! server checks (it wants the keys, and JSON for the docker configs), so that a Secret of a type is one its
//! readers (an ingress controller, the kubelet pulling images) can use. Kubernetes' rules and key names:
//! <https://kubernetes.io/docs/concepts/configuration/secret/#secret-types>.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::RenderError;
use crate::secret::SecretData;

/// Checks `data` against `secret_type` (`Opaque` and unknown types: anything goes).
///
/// - `kubernetes.io/tls`: `tls.crt` holds PEM certificates (the first is the server's), `tls.key` a PEM private
///   key (PKCS#8, PKCS#1 or SEC1) of an algorithm rustls signs with (RSA, ECDSA P-256/P-384, Ed25519), and the
///   key is the certificate's (their public keys are the same).
/// - `kubernetes.io/dockerconfigjson`: `.dockerconfigjson` is a JSON object with an object `auths`, each entry
///   an object with `auth` (base64 of `user:password`) or `username` and `password` (or an identity/registry
///   token).
/// - `kubernetes.io/dockercfg`: `.dockercfg` is a JSON object.
/// - `kubernetes.io/basic-auth`: `username` or `password` (or both).
/// - `kubernetes.io/ssh-auth`: `ssh-privatekey` holds one PEM-armoured private key.
pub fn check(secret_type: &str, data: &SecretData) -> Result<(), RenderError> {
    let fail = |why: String| RenderError::Type {
        secret_type: secret_type.to_string(),
        why,
    };
    let need = |key: &str| {
        data.get(key)
            .map(|v| v.expose())
            .ok_or_else(|| fail(format!("needs key {key}; the data has {}", key_list(data))))
    };
    match secret_type {
        "kubernetes.io/tls" => tls(need("tls.crt")?, need("tls.key")?).map_err(fail),
        "kubernetes.io/dockerconfigjson" => docker_config_json(need(".dockerconfigjson")?).map_err(fail),
        "kubernetes.io/dockercfg" => match serde_json::from_slice::<serde_json::Value>(need(".dockercfg")?) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            _ => Err(fail(".dockercfg must be a JSON object".into())),
        },
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            Err(fail(format!(
                "needs key username or password (or both); the data has {}",
                key_list(data)
            )))
        }
        "kubernetes.io/ssh-auth" => ssh_private_key(need("ssh-privatekey")?).map_err(fail),
        _ => Ok(()),
    }
}

fn key_list(data: &SecretData) -> String {
    if data.is_empty() {
        return "no keys".into();
    }
    data.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn tls(crt: &[u8], key: &[u8]) -> Result<(), String> {
    let mut certs = CertificateDer::pem_slice_iter(crt);
    let leaf = match certs.next() {
        Some(Ok(c)) => c,
        Some(Err(_)) => return Err("tls.crt is not PEM: expected -----BEGIN CERTIFICATE----- blocks".into()),
        None => return Err("tls.crt holds no certificate (-----BEGIN CERTIFICATE-----)".into()),
    };
    if certs.any(|c| c.is_err()) {
        return Err("tls.crt: a block after the first certificate is not a PEM certificate".into());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| "tls.crt: the first certificate is not a valid X.509 certificate".to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
        "tls.key holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)".to_string()
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        "tls.key is not a usable private key (RSA of 2048 bits or more, ECDSA P-256/P-384 or Ed25519)".to_string()
    })?;
    let public = signer
        .public_key()
        .ok_or_else(|| "tls.key: its public key cannot be derived".to_string())?;
    if public.as_ref() != cert.public_key().raw {
        return Err("tls.key does not belong to the certificate in tls.crt (their public keys differ)".into());
    }
    Ok(())
}

fn docker_config_json(bytes: &[u8]) -> Result<(), String> {
    let Ok(serde_json::Value::Object(root)) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Err(".dockerconfigjson must be a JSON object".into());
    };
    let Some(serde_json::Value::Object(auths)) = root.get("auths") else {
        return Err(r#".dockerconfigjson needs an object "auths" (registry → credentials)"#.into());
    };
    // Entries are numbered, not named: a registry's name can come from the values.
    for (n, entry) in auths.values().enumerate() {
        let n = n + 1;
        let serde_json::Value::Object(entry) = entry else {
            return Err(format!(r#".dockerconfigjson: "auths" entry {n} is not an object"#));
        };
        let text = |f: &str| {
            entry
                .get(f)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(auth) = text("auth") {
            let decoded = STANDARD
                .decode(auth)
                .map_err(|_| format!(r#".dockerconfigjson: "auths" entry {n}: "auth" is not base64"#))?;
            if !decoded.contains(&b':') {
                return Err(format!(
                    r#".dockerconfigjson: "auths" entry {n}: "auth" must be base64 of user:password"#
                ));
            }
        } else if !(text("username").is_some() && text("password").is_some())
            && text("identitytoken").is_none()
            && text("registrytoken").is_none()
        {
            return Err(format!(
                r#".dockerconfigjson: "auths" entry {n} needs "auth", or "username" and "password", or a token"#
            ));
        }
    }
    Ok(())
}

fn ssh_private_key(bytes: &[u8]) -> Result<(), String> {
    let bad = || {
        "ssh-privatekey must hold one PEM-armoured private key (-----BEGIN OPENSSH PRIVATE KEY----- … -----END \
         OPENSSH PRIVATE KEY-----, or RSA/EC/PKCS#8)"
            .to_string()
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        return Err(bad());
    };
    let label = |line: &str, edge: &str| {
        line.strip_prefix(edge)
            .and_then(|l| l.strip_suffix("-----"))
            .filter(|l| l.ends_with("PRIVATE KEY"))
            .map(str::to_string)
    };
    let (Some(begin), Some(end)) = (label(first, "-----BEGIN "), label(last, "-----END ")) else {
        return Err(bad());
    };
    let body: String = lines[1..lines.len() - 1]
        .iter()
        .filter(|l| !l.contains(':')) // RFC 1421 headers (Proc-Type, DEK-Info) of encrypted keys
        .copied()
        .collect();
    if begin != end || lines.len() < 3 || STANDARD.decode(body).is_err() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    fn data(pairs: &[(&str, &[u8])]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.to_vec())))
            .collect()
    }

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_tls_pair_must_parse_and_match() {
        let (crt, key) = pair();
        let (other_crt, other_key) = pair();
        let tls = |c: &str, k: &str| {
            check(
                "kubernetes.io/tls",
                &data(&[("tls.crt", c.as_bytes()), ("tls.key", k.as_bytes())]),
            )
        };
        tls(&crt, &key).unwrap();
        tls(&format!("{crt}{other_crt}"), &key).unwrap();
        let cases = [
            (tls(&crt, &other_key), "does not belong"),
            (tls(&other_crt, &key), "does not belong"),
            (tls("canary-not-pem", &key), "holds no certificate"),
            (tls(&crt, "canary-not-pem"), "holds no PEM private key"),
            (
                check("kubernetes.io/tls", &data(&[("tls.crt", crt.as_bytes())])),
                "needs key tls.key; the data has tls.crt",
            ),
        ];
        for (result, want) in cases {
            let shown = result.unwrap_err().to_string();
            assert!(shown.starts_with("Secret type kubernetes.io/tls: "), "{shown}");
            assert!(shown.contains(want), "{shown}");
            let key_body = key.lines().nth(1).unwrap();
            assert!(!shown.contains("canary") && !shown.contains(key_body), "{shown}");
        }
        let _ = other_key;
    }

    #[test]
    fn docker_configs_have_the_right_shape() {
        let ok = |j: &str| {
            check(
                "kubernetes.io/dockerconfigjson",
                &data(&[(".dockerconfigjson", j.as_bytes())]),
            )
        };
        let auth = STANDARD.encode("robot:canary-pw");
        ok(&format!(r#"{{"auths":{{"registry.example":{{"auth":"{auth}"}}}}}}"#)).unwrap();
        ok(r#"{"auths":{"r":{"username":"u","password":"canary-pw"}}}"#).unwrap();
        ok(r#"{"auths":{}}"#).unwrap();
        for (json, want) in [
            ("canary{", "must be a JSON object"),
            (r#"{"registry":{}}"#, "needs an object \"auths\""),
            (
                r#"{"auths":{"canary.io":{"auth":"!!canary"}}}"#,
                "entry 1: \"auth\" is not base64",
            ),
            (r#"{"auths":{"canary.io":{"username":"canary-u"}}}"#, "entry 1 needs"),
        ] {
            let shown = ok(json).unwrap_err().to_string();
            assert!(shown.contains(want), "{shown}");
            assert!(!shown.contains("canary"), "{shown}");
        }
        assert!(check("kubernetes.io/dockercfg", &data(&[(".dockercfg", b"{}")])).is_ok());
        assert!(check("kubernetes.io/dockercfg", &data(&[(".dockercfg", b"[]")])).is_err());
    }

    #[test]
    fn basic_and_ssh_auth_need_their_keys() {
        assert!(check("kubernetes.io/basic-auth", &data(&[("password", b"p")])).is_ok());
        let e = check("kubernetes.io/basic-auth", &data(&[("user", b"u")])).unwrap_err();
        assert!(e.to_string().contains("needs key username or password"), "{e}");
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(check("kubernetes.io/ssh-auth", &data(&[("ssh-privatekey", key.as_bytes())])).is_ok());
        let openssh =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(
            check(
                "kubernetes.io/ssh-auth",
                &data(&[("ssh-privatekey", openssh.as_bytes())])
            )
            .is_ok()
        );
        for bad in [
            &b"canary"[..],
            b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!\n-----END OPENSSH PRIVATE KEY-----",
        ] {
            let e = check("kubernetes.io/ssh-auth", &data(&[("ssh-privatekey", bad)])).unwrap_err();
            assert!(
                !e.to_string().contains("canary") && e.to_string().contains("ssh-privatekey"),
                "{e}"
            );
        }
        assert!(check("Opaque", &SecretData::default()).is_ok());
    }
}
