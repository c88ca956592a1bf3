//! Test certificates, made with the `openssl` command: a test CA (`ca.pem`, `ca.key`) and a
//! server certificate it signs for localhost and 127.0.0.1 (`srv.pem`, `srv.key`).

use std::path::Path;
use std::process::Command;

/// Run a shell script; its trimmed stdout. Panics with its stderr when it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {} (openssl is needed: apt-get install openssl)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test CA in `dir`, made on first use: `dir/ca.pem`.
pub fn ca(dir: &Path) {
    sh(&format!(
        "set -e; cd {d}; \
         [ -f ca.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null",
        d = dir.display()
    ));
}

/// A new server certificate for localhost signed by the test CA in `dir` (made on first
/// use): `dir/srv.pem` and `dir/srv.key`, each replaced in one rename (a server watching
/// them never reads half a file).
pub fn server_cert(dir: &Path) {
    ca(dir);
    sh(&format!(
        "set -e; cd {d}; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout new.key -out srv.csr -subj /CN=localhost 2>/dev/null; \
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; \
         openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out new.pem -days 2 -extfile ext.cnf 2>/dev/null; \
         mv new.key srv.key; mv new.pem srv.pem",
        d = dir.display()
    ));
}
