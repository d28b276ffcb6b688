//! A throwaway PKI for the local control plane: one CA, the API server's serving certificate, an admin client
//! certificate and a service-account signing key. Everything is generated fresh per control plane.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::DevError;

/// Paths of the PEM files written by [`generate`], and the PEM text kubeconfigs embed.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

fn pki_err(e: rcgen::Error) -> DevError {
    DevError::Pki(e.to_string())
}

fn leaf(cn: &str, org: Option<&str>, usage: ExtendedKeyUsagePurpose) -> Result<CertificateParams, DevError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    Ok(params)
}

/// Generates the PKI into `dir` (created if missing).
pub fn generate(dir: &Path) -> Result<Pki, DevError> {
    std::fs::create_dir_all(dir).map_err(|e| DevError::io("create pki dir", e))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "keyward-dev-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(pki_err)?).map_err(pki_err)?;

    let mut serving = leaf("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth)?;
    serving.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into().map_err(pki_err)?),
        SanType::DnsName("kubernetes.default.svc".try_into().map_err(pki_err)?),
    ];
    let serving_key = KeyPair::generate().map_err(pki_err)?;
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(pki_err)?;

    let admin = leaf("admin", Some("system:masters"), ExtendedKeyUsagePurpose::ClientAuth)?;
    let admin_key = KeyPair::generate().map_err(pki_err)?;
    let admin_cert = admin.signed_by(&admin_key, &ca).map_err(pki_err)?;

    let sa_key = KeyPair::generate().map_err(pki_err)?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_pem: ca.pem(),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
        service_account_key: dir.join("sa.key"),
        service_account_pub: dir.join("sa.pub"),
    };
    write(&pki.ca_cert, &pki.ca_pem)?;
    write(&pki.serving_cert, &serving_cert.pem())?;
    write(&pki.serving_key, &serving_key.serialize_pem())?;
    write(&pki.service_account_key, &sa_key.serialize_pem())?;
    write(&pki.service_account_pub, &sa_key.public_key_pem())?;
    Ok(pki)
}

fn write(path: &Path, text: &str) -> Result<(), DevError> {
    std::fs::write(path, text).map_err(|e| DevError::io("write pki file", e))
}
