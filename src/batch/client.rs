//! The `ai-rate-limiter batch …` commands: a small client of a running gateway's Files and
//! Batches API. Uploads are streamed from disk; downloads are streamed to disk.

use crate::cli::BatchCommand;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

type Result<T> = std::result::Result<T, String>;

struct Client {
    base: String,
    key: String,
    agent: ureq::Agent,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }

    fn call(&self, req: ureq::Request, body: Option<&str>) -> Result<ureq::Response> {
        let req = req.set("authorization", &format!("Bearer {}", self.key));
        let sent = match body {
            Some(b) => req.set("content-type", "application/json").send_string(b),
            None => req.call(),
        };
        match sent {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or(text);
                Err(format!("the gateway answered {code}: {message}"))
            }
            Err(e) => Err(format!("cannot reach the gateway: {e}")),
        }
    }

    fn json(&self, req: ureq::Request, body: Option<&str>) -> Result<Value> {
        let r = self.call(req, body)?;
        serde_json::from_reader(r.into_reader()).map_err(|e| format!("unexpected answer: {e}"))
    }

    fn batch(&self, id: &str) -> Result<Value> {
        self.json(
            self.agent.get(&self.url(&format!("/v1/batches/{id}"))),
            None,
        )
    }

    /// Upload `file` as a batch input (multipart, streamed from disk).
    fn upload(&self, file: &Path) -> Result<Value> {
        let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let boundary = format!("airl{}", hex::encode(rand::random::<[u8; 12]>()));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("input.jsonl");
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/jsonl\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let body = std::io::Cursor::new(head.into_bytes())
            .chain(f)
            .chain(std::io::Cursor::new(tail.into_bytes()));
        let sent = self
            .agent
            .post(&self.url("/v1/files"))
            .set("authorization", &format!("Bearer {}", self.key))
            .set(
                "content-type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send(body);
        match sent {
            Ok(r) => serde_json::from_reader(r.into_reader()).map_err(|e| e.to_string()),
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "upload refused ({code}): {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("cannot reach the gateway: {e}")),
        }
    }

    /// Stream a response to `out`.
    fn download(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let r = self.call(self.agent.get(&self.url(path)), None)?;
        std::io::copy(&mut r.into_reader(), out).map_err(|e| e.to_string())
    }
}

const TERMINAL: [&str; 4] = ["completed", "failed", "cancelled", "expired"];

fn progress_line(b: &Value) -> String {
    let c = &b["request_counts"];
    let (total, done, failed) = (
        c["total"].as_u64().unwrap_or(0),
        c["completed"].as_u64().unwrap_or(0),
        c["failed"].as_u64().unwrap_or(0),
    );
    let ended = done + failed;
    let pct = (ended * 100).checked_div(total).unwrap_or(0);
    let filled = (pct / 5) as usize;
    format!(
        "\r[{}{}] {pct:>3}% {ended}/{total} ({failed} failed) {:<12}",
        "#".repeat(filled),
        "-".repeat(20 - filled),
        b["status"].as_str().unwrap_or("?")
    )
}

/// Run a `batch` subcommand; the text for stdout.
pub fn run(command: BatchCommand, url: &str, key: &str) -> Result<()> {
    let client = Client {
        base: url.to_string(),
        key: key.to_string(),
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(300))
            .build(),
    };
    let mut stdout = std::io::stdout().lock();
    match command {
        BatchCommand::Status { id } => {
            let b = client.batch(&id)?;
            writeln!(
                stdout,
                "{}",
                serde_json::to_string_pretty(&b).unwrap_or_default()
            )
            .map_err(|e| e.to_string())
        }
        BatchCommand::Results { id, format } => client
            .download(
                &format!("/v1/batches/{id}/results?format={format}"),
                &mut stdout,
            )
            .map(|_| ()),
        BatchCommand::Submit {
            file,
            endpoint,
            wait,
            out,
        } => {
            let f = client.upload(&file)?;
            let fid = f["id"].as_str().ok_or("upload answered no file id")?;
            let body = serde_json::json!({"input_file_id": fid, "endpoint": endpoint, "completion_window": "24h"});
            let b = client.json(
                client.agent.post(&client.url("/v1/batches")),
                Some(&body.to_string()),
            )?;
            let id = b["id"]
                .as_str()
                .ok_or("create answered no batch id")?
                .to_string();
            writeln!(stdout, "{id}").map_err(|e| e.to_string())?;
            if !wait {
                return Ok(());
            }
            let mut err = std::io::stderr();
            let b = loop {
                let b = client.batch(&id)?;
                let _ = write!(err, "{}", progress_line(&b));
                if TERMINAL.contains(&b["status"].as_str().unwrap_or("")) {
                    let _ = writeln!(err);
                    break b;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            for (field, suffix) in [("output_file_id", "output"), ("error_file_id", "errors")] {
                if let Some(fid) = b[field].as_str() {
                    let path = out.join(format!("{id}_{suffix}.jsonl"));
                    let mut f = std::fs::File::create(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    client.download(&format!("/v1/files/{fid}/content"), &mut f)?;
                    let _ = writeln!(err, "wrote {}", path.display());
                }
            }
            if b["status"] == "completed" {
                Ok(())
            } else {
                Err(format!("batch {id} ended {}", b["status"]))
            }
        }
    }
}
