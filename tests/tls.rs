//! The TLS listener: HTTP/1.1 and HTTP/2 by ALPN, and a renewed certificate served after a
//! reload without a restart (the certificate files are watched with the config file).

mod common;
use common::certs::{server_cert, sh};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "sk-tls";

fn serial_of_file(dir: &Path) -> String {
    sh(&format!(
        "openssl x509 -noout -serial -in {}/srv.pem",
        dir.display()
    ))
}

fn serial_served(port: u16) -> String {
    sh(&format!(
        "echo | openssl s_client -connect 127.0.0.1:{port} -servername localhost 2>/dev/null | openssl x509 -noout -serial"
    ))
}

/// The HTTP version curl used for a request through the listener, and the status.
fn curl(port: u16, dir: &Path, flag: &str) -> String {
    sh(&format!(
        "curl -sS {flag} --cacert {d}/ca.pem -o /dev/null -w '%{{http_version}} %{{http_code}}' \
         -H 'authorization: Bearer {KEY}' https://localhost:{port}/v1/models",
        d = dir.display()
    ))
}

#[test]
fn http1_and_http2_over_tls_and_a_renewed_certificate_without_restart() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    server_cert(d);
    let gw = Gw::start(&format!(
        "server: {{threads: 1, tls: {{cert_file: {c}, key_file: {k}}}}}\n\
         consumers: [{{name: t, keys: [\"{KEY}\"]}}]\n\
         providers: [{{name: mock, kind: mock}}]\n\
         models: [{{name: m, deployments: [{{provider: mock}}]}}]\n\
         reload: {{poll_interval: 200ms}}\n",
        c = d.join("srv.pem").display(),
        k = d.join("srv.key").display(),
    ));
    assert_eq!(curl(gw.port, d, "--http1.1"), "1.1 200");
    assert_eq!(curl(gw.port, d, "--http2"), "2 200", "h2 by ALPN");
    let first = serial_of_file(d);
    assert_eq!(serial_served(gw.port), first);

    // Renew: new key and certificate in place; the watcher reloads them.
    server_cert(d);
    let renewed = serial_of_file(d);
    assert_ne!(renewed, first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while serial_served(gw.port) != renewed {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl(gw.port, d, "--http2"), "2 200");
    assert!(gw.logs().contains("TLS certificate reloaded"));

    // A broken pair is refused; the current certificate stays.
    std::fs::write(d.join("srv.key"), "not a key").unwrap();
    gw.wait_log(|l| l.contains("TLS certificate not reloaded"));
    assert_eq!(serial_served(gw.port), renewed);
}
