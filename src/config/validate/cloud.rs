//! Validation of the cloud providers' settings: Bedrock's region and AWS keys, Vertex's
//! project, location and service-account file; each setting only on its kind.

use super::*;
use crate::config::schema::ProviderConfig;

/// A service-account key file's fields the Vertex token flow needs (its key is checked
/// when the first token is made).
#[derive(serde::Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    token_uri: String,
}

pub(super) fn check(pr: &ProviderConfig, path: &str, p: &mut Problems) {
    let bedrock = pr.kind == ProviderKind::Bedrock;
    let vertex = pr.kind == ProviderKind::Vertex;
    let only = |set: bool, field: &str, kind: &str, p: &mut Problems| {
        if set {
            p.add(
                format!("{path}.{field}"),
                format!("only a {kind} provider takes {field}"),
            );
        }
    };
    only(!bedrock && pr.region.is_some(), "region", "bedrock", p);
    only(
        !bedrock && pr.access_key_id.is_some(),
        "access_key_id",
        "bedrock",
        p,
    );
    only(
        !bedrock && pr.secret_access_key.is_some(),
        "secret_access_key",
        "bedrock",
        p,
    );
    only(
        !bedrock && pr.session_token.is_some(),
        "session_token",
        "bedrock",
        p,
    );
    only(!vertex && pr.project.is_some(), "project", "vertex", p);
    only(!vertex && pr.location.is_some(), "location", "vertex", p);
    only(
        !vertex && pr.credentials_file.is_some(),
        "credentials_file",
        "vertex",
        p,
    );
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if bedrock {
        match pr.region.as_deref() {
            None => p.add(format!("{path}.region"), "required for kind bedrock"),
            Some(r) if !name_ok(r) => p.add(format!("{path}.region"), "must look like us-east-1"),
            _ => {}
        }
        match (&pr.access_key_id, &pr.secret_access_key, &pr.api_key) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (Some(_), Some(_), Some(_)) => p.add(
                format!("{path}.api_key"),
                "either AWS keys (access_key_id, secret_access_key) or a Bedrock api_key, not both",
            ),
            (Some(_), None, _) | (None, Some(_), _) => p.add(
                format!("{path}.secret_access_key"),
                "access_key_id and secret_access_key go together",
            ),
            (None, None, None) => p.add(
                format!("{path}.access_key_id"),
                "required for kind bedrock (or a Bedrock api_key)",
            ),
        }
        if pr.session_token.is_some() && pr.access_key_id.is_none() {
            p.add(format!("{path}.session_token"), "only with access_key_id");
        }
    }
    if vertex {
        for (field, value) in [("project", &pr.project), ("location", &pr.location)] {
            match value.as_deref() {
                None if pr.base_url.is_none() => {
                    p.add(format!("{path}.{field}"), "required for kind vertex")
                }
                Some(v) if !name_ok(v) => {
                    p.add(format!("{path}.{field}"), "letters, digits, - and _ only")
                }
                _ => {}
            }
        }
        match &pr.credentials_file {
            None => p.add(
                format!("{path}.credentials_file"),
                "required for kind vertex",
            ),
            Some(f) => match std::fs::read_to_string(f) {
                Err(e) => p.add(
                    format!("{path}.credentials_file"),
                    format!("cannot read {}: {e}", f.display()),
                ),
                Ok(text) => {
                    let problem = match serde_json::from_str::<KeyFile>(&text) {
                        Err(e) => Some(format!("not a service-account key file: {e}")),
                        Ok(k) if k.client_email.is_empty() => Some("client_email is empty".into()),
                        Ok(k) if !k.private_key.contains("PRIVATE KEY-----") => {
                            Some("private_key is not a PEM key".into())
                        }
                        Ok(k) => crate::url::BaseUrl::parse(&k.token_uri)
                            .err()
                            .map(|e| format!("token_uri: {e}")),
                    };
                    if let Some(msg) = problem {
                        p.add(format!("{path}.credentials_file"), msg);
                    }
                }
            },
        }
        if pr.api_key.is_some() {
            p.add(
                format!("{path}.api_key"),
                "vertex authenticates with credentials_file",
            );
        }
    }
}
