//! The file paths a config names. Relative ones are relative to the config file's
//! directory (resolved by [`super::load_file`] before validation reads any of them), so
//! the same file means the same files whatever the working directory.

use super::Config;
use std::path::PathBuf;

impl Config {
    /// Every path field, with its config path (`responses.data_dir`).
    pub fn paths_mut(&mut self) -> Vec<(String, &mut PathBuf)> {
        let mut out: Vec<(String, &mut PathBuf)> = vec![
            ("batch.data_dir".into(), &mut self.batch.data_dir),
            ("responses.data_dir".into(), &mut self.responses.data_dir),
            ("admin.data_dir".into(), &mut self.admin.data_dir),
        ];
        if let Some(p) = self.server.upgrade_sock.as_mut() {
            out.push(("server.upgrade_sock".into(), p));
        }
        if let Some(t) = self.server.tls.as_mut() {
            out.push(("server.tls.cert_file".into(), &mut t.cert_file));
            out.push(("server.tls.key_file".into(), &mut t.key_file));
        }
        if let Some(p) = self.upstream.extra_ca_file.as_mut() {
            out.push(("upstream.extra_ca_file".into(), p));
        }
        for (i, p) in self.providers.iter_mut().enumerate() {
            if let Some(f) = p.credentials_file.as_mut() {
                out.push((format!("providers[{i}].credentials_file"), f));
            }
        }
        out
    }

    /// Every path field as resolved (for `check`).
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        let mut c = self.clone();
        c.paths_mut()
            .into_iter()
            .map(|(k, p)| (k, p.clone()))
            .collect()
    }
}
