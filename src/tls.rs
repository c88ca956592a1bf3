//! The proxy listener's TLS certificate, swappable at run time: the rustls acceptor asks
//! [`ReloadableCert`] for the certificate on every handshake, and a config reload (file
//! change or SIGHUP) reads the certificate and key files again and swaps them in. A pair
//! that cannot be loaded is refused with an error log; the old certificate stays.

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The certificate served, and the files it came from.
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
    files: Mutex<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadableCert")
    }
}

/// Read a PEM certificate chain and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    pingora::tls::install_default_crypto_provider();
    let (certs, key_der) = pingora::tls::load_certs_and_key_files(
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .map_err(|e| format!("reading {} / {}: {e}", cert.display(), key.display()))?
    .ok_or_else(|| {
        format!(
            "{} has no certificate or {} no private key",
            cert.display(),
            key.display()
        )
    })?;
    let provider =
        CryptoProvider::get_default().ok_or_else(|| "no TLS crypto provider".to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ReloadableCert {
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<ReloadableCert>, String> {
        Ok(Arc::new(ReloadableCert {
            current: ArcSwap::from_pointee(load(cert, key)?),
            files: Mutex::new((cert.to_path_buf(), key.to_path_buf())),
        }))
    }

    /// Read the files again (possibly new paths); keeps the old pair on failure.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let pair = load(cert, key)?;
        self.current.store(Arc::new(pair));
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) =
            (cert.to_path_buf(), key.to_path_buf());
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
