//! TLS and mutual TLS between the BFF and compute, with certificates made in the test (a CA,
//! a server certificate for `localhost`, a client certificate for the BFF).

use std::path::PathBuf;

use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use reqwest::multipart::Form;

struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    stranger_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let dir = TempDir::new("tls");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let authority = ca("imagegate test CA");
    let leaf = |san: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, san);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &authority).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("bff.imagegate.test", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", authority.pem()),
        server_cert: write("server.pem", server_cert),
        server_key: write("server.key", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
        stranger_ca: write("stranger.pem", ca("someone else").pem()),
        _dir: dir,
    }
}

fn tls_compute(pki: &Pki, mutual: bool) -> Compute {
    let mut c = compute_config();
    c.tls_cert = Some(pki.server_cert.to_string_lossy().into());
    c.tls_key = Some(pki.server_key.to_string_lossy().into());
    if mutual {
        c.tls_client_ca = Some(pki.ca.to_string_lossy().into());
    }
    start_compute(c, None)
}

fn path(p: &std::path::Path) -> Option<String> {
    Some(p.to_string_lossy().into_owned())
}

async fn health(bff: &Bff) -> u16 {
    reqwest::get(bff.url("/health"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn compress(bff: &Bff) -> u16 {
    post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(jpeg(40, 30))),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn the_bff_speaks_tls_to_compute_and_refuses_an_untrusted_certificate() {
    let pki = pki();
    let compute = tls_compute(&pki, false);
    let url = format!("https://localhost:{}", compute.addr.port());

    let mut config = bff_config(&url);
    config.compute_tls.ca_cert = path(&pki.ca);
    let bff = start_bff(config);
    assert_eq!(health(&bff).await, 200);
    assert_eq!(compress(&bff).await, 200);
    let text = metrics_text(&bff).await;
    assert!(metric(&text, "imagegate_lane_connections{lane=\"heavy\"}").unwrap() >= 1.0);

    // Trusting another CA: the handshake fails, the BFF answers 503, never 500.
    let mut config = bff_config(&url);
    config.compute_tls.ca_cert = path(&pki.stranger_ca);
    let distrustful = start_bff(config);
    assert_eq!(health(&distrustful).await, 503);
    let status = compress(&distrustful).await;
    assert!(status == 502 || status == 503, "{status}");

    // Plain HTTP/2 to a TLS-only server does not work either.
    let plain = start_bff(bff_config(&format!(
        "http://127.0.0.1:{}",
        compute.addr.port()
    )));
    assert_eq!(health(&plain).await, 503);
}

#[tokio::test]
async fn mutual_tls_admits_only_a_bff_with_a_certificate_the_ca_signed() {
    let pki = pki();
    let compute = tls_compute(&pki, true);
    let url = format!("https://localhost:{}", compute.addr.port());

    let mut config = bff_config(&url);
    config.compute_tls.ca_cert = path(&pki.ca);
    config.compute_tls.cert = path(&pki.client_cert);
    config.compute_tls.key = path(&pki.client_key);
    let bff = start_bff(config);
    assert_eq!(health(&bff).await, 200);
    assert_eq!(compress(&bff).await, 200);

    // Without a client certificate compute refuses the connection.
    let mut config = bff_config(&url);
    config.compute_tls.ca_cert = path(&pki.ca);
    let anonymous = start_bff(config);
    assert_eq!(health(&anonymous).await, 503);
    let status = compress(&anonymous).await;
    assert!(status == 502 || status == 503, "{status}");
}

#[test]
fn tls_settings_are_checked_at_start_with_the_key_named() {
    use imagegate::config::Config;
    let err = Config::from_toml("[compute_tls]\nca_cert = \"/nonexistent/ca.pem\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("compute_tls.ca_cert"), "{err}");
    let err = Config::from_toml("[compute]\ntls_cert = \"/x.pem\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("compute.tls_cert"), "{err}");
    let c = Config::from_toml("compute_url = \"https://compute.internal:443\"").unwrap();
    assert_eq!(c.compute_url, "https://compute.internal:443");
    // The key's path may show in Debug output; key material never does.
    let c = Config::from_toml("").unwrap();
    assert!(!format!("{c:?}").contains("PRIVATE KEY"));
}
