//! Certificates and the rustls server configuration: either PEM files given by the user, or a
//! throwaway CA and a leaf for `127.0.0.1`, `::1` and `localhost` made at start (ECDSA P-256,
//! rcgen's ring backend). Only the CA is handed out: clients trust it like a private CA.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate chain, its key, and the PEM a client should trust.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The CA (generated) or the certificate file's text (given).
    pub ca_pem: String,
}

fn err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// A fresh CA and a leaf signed by it, valid from a day ago for ten years.
pub fn generate() -> std::io::Result<Identity> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let rc = |e: rcgen::Error| err(format!("certificate generation: {e}"));
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(3650);

    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca.distinguished_name
        .push(DnType::CommonName, "duo-sim test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().map_err(rc)?;
    let mut leaf = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
    ])
    .map_err(rc)?;
    leaf.distinguished_name.push(DnType::CommonName, "duo-sim");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(rc)?;

    Ok(Identity {
        chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        ca_pem: pem("CERTIFICATE", ca_cert.der()),
    })
}

/// Load a certificate chain and a private key from PEM files.
pub fn load(cert: &Path, key: &Path) -> std::io::Result<Identity> {
    let cert_text = std::fs::read(cert)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", cert.display())))?;
    let chain = rustls_pemfile::certs(&mut &cert_text[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(err(format!("{}: no PEM certificate", cert.display())));
    }
    let key_text = std::fs::read(key)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", key.display())))?;
    let key_der = rustls_pemfile::private_key(&mut &key_text[..])
        .map_err(|e| err(format!("{}: {e}", key.display())))?
        .ok_or_else(|| err(format!("{}: no PEM private key", key.display())))?;
    Ok(Identity {
        chain,
        key: key_der,
        ca_pem: String::from_utf8_lossy(&cert_text).into_owned(),
    })
}

/// The rustls server configuration (ring provider, TLS 1.2 and 1.3).
pub fn server_config(id: &Identity) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| err(format!("certificate and key: {e}")))?;
    Ok(Arc::new(cfg))
}

/// PEM-encode DER (64-column base64 between BEGIN/END lines).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_round_trips_through_pem() {
        let id = generate().unwrap();
        assert!(server_config(&id).is_ok());
        let parsed: Vec<_> = rustls_pemfile::certs(&mut id.ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0], id.chain[1]);
    }

    #[test]
    fn loads_files() {
        let id = generate().unwrap();
        let dir = std::env::temp_dir().join(format!("duo-sim-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let mut chain = String::new();
        for c in &id.chain {
            chain.push_str(&pem("CERTIFICATE", c));
        }
        std::fs::write(&cert, chain).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", id.key.secret_der())).unwrap();
        let loaded = load(&cert, &key).unwrap();
        assert_eq!(loaded.chain, id.chain);
        assert!(server_config(&loaded).is_ok());
        assert!(load(&key, &key).is_err());
        assert!(load(&dir.join("missing"), &key).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
