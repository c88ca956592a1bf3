//! Consumer keys as the config may give them: the key itself, or its SHA-256 digest
//! (`sha256:<64 hex digits>`), so a `gateway.yaml` (or the environment it reads) need not
//! hold a readable key. The gateway compares keys by digest either way.

use sha2::{Digest, Sha256};

/// The prefix of a key given by its digest.
pub const PREFIX: &str = "sha256:";

/// The SHA-256 digest of a presented key.
pub fn of_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The digest a config key entry stands for: its own digest, or the one it spells
/// (`sha256:` and 64 hex digits). `Err`: a `sha256:` entry that is not one.
pub fn of_entry(entry: &str) -> Result<[u8; 32], String> {
    let Some(hex_digits) = entry.strip_prefix(PREFIX) else {
        return Ok(of_key(entry));
    };
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits.trim(), &mut out).map_err(|_| {
        "a key given as sha256: must be 64 hex digits, the SHA-256 of the key \
         (printf %s \"$KEY\" | sha256sum)"
            .to_string()
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_entry_matches_its_key() {
        let digest = hex::encode(of_key("sk-team-a"));
        assert_eq!(
            of_entry(&format!("sha256:{digest}")).unwrap(),
            of_key("sk-team-a")
        );
        assert_eq!(
            of_entry(&format!("sha256:{}", digest.to_uppercase())).unwrap(),
            of_key("sk-team-a")
        );
        assert_eq!(of_entry("sk-team-a").unwrap(), of_key("sk-team-a"));
        assert!(of_entry("sha256:abc")
            .unwrap_err()
            .contains("64 hex digits"));
    }
}
