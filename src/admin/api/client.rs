//! `ai-rate-limiter admin …`: a small client of a running gateway's Admin API, printing
//! its JSON answers (an error as the gateway's message, and a failure exit code).

use crate::cli::{AdminCommand, AdminKeyCommand};
use serde_json::{json, Value};
use std::time::Duration;

/// Run one command against the Admin API at `base` with admin key `key`: what to print.
pub fn run(command: AdminCommand, base: &str, key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("an admin key is needed: --key or GATEWAY_ADMIN_KEY".into());
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let base = base.trim_end_matches('/');
    let call = |method: &str, path: &str, body: Option<Value>| -> Result<Value, String> {
        let req = agent
            .request(method, &format!("{base}{path}"))
            .set("x-api-key", key);
        let sent = match body {
            Some(b) => req
                .set("content-type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        match sent {
            Ok(r) => serde_json::from_reader(r.into_reader())
                .map_err(|e| format!("unexpected answer: {e}")),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = serde_json::from_reader(r.into_reader()).unwrap_or(Value::Null);
                let m = v["error"]["message"].as_str().unwrap_or("no message");
                Err(format!("the Admin API answered {code}: {m}"))
            }
            Err(e) => Err(format!("cannot reach the Admin API at {base}: {e}")),
        }
    };
    let parse = |what: &str, text: Option<String>| -> Result<Option<Value>, String> {
        text.map(|t| serde_json::from_str(&t).map_err(|e| format!("--{what} is not JSON: {e}")))
            .transpose()
    };
    let out = match command {
        AdminCommand::Consumers => call("GET", "/admin/consumers?limit=1000", None)?,
        AdminCommand::CreateConsumer {
            name,
            limits,
            metadata,
        } => {
            let mut body = json!({"name": name});
            if let Some(l) = parse("limits", limits)? {
                body["limits"] = l;
            }
            if let Some(m) = parse("metadata", metadata)? {
                body["metadata"] = m;
            }
            call("POST", "/admin/consumers", Some(body))?
        }
        AdminCommand::DeleteConsumer { name } => {
            call("DELETE", &format!("/admin/consumers/{name}"), None)?
        }
        AdminCommand::Usage { name } => {
            call("GET", &format!("/admin/consumers/{name}/usage"), None)?
        }
        AdminCommand::Audit => call("GET", "/admin/audit?limit=1000", None)?,
        AdminCommand::Keys(k) => match k {
            AdminKeyCommand::Create {
                consumer,
                expires_at,
            } => call(
                "POST",
                &format!("/admin/consumers/{consumer}/keys"),
                Some(json!({"expires_at": expires_at})),
            )?,
            AdminKeyCommand::List { consumer } => {
                call("GET", &format!("/admin/consumers/{consumer}/keys"), None)?
            }
            AdminKeyCommand::Rotate {
                consumer,
                id,
                grace,
            } => call(
                "POST",
                &format!("/admin/consumers/{consumer}/keys/{id}/rotate"),
                Some(json!({"grace_seconds": grace})),
            )?,
            AdminKeyCommand::Revoke { consumer, id } => call(
                "DELETE",
                &format!("/admin/consumers/{consumer}/keys/{id}"),
                None,
            )?,
        },
    };
    serde_json::to_string_pretty(&out).map_err(|e| e.to_string())
}
