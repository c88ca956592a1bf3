//! A batch's results exported as JSONL, JSON or CSV, streamed page by page.

use super::*;

/// One CSV field, quoted when it needs to be.
pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A result line as a CSV row: custom_id, status, content, tokens, error.
pub(super) fn csv_row(line: &Value) -> String {
    let resp = &line["response"];
    let body = &resp["body"];
    let status = resp["status_code"]
        .as_u64()
        .map(|s| s.to_string())
        .or_else(|| line["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    let choice = &body["choices"][0];
    let content = choice["message"]["content"]
        .as_str()
        .or(choice["text"].as_str())
        .map(str::to_string)
        .or_else(|| {
            let e = body["data"][0]["embedding"].as_array()?;
            Some(format!("[{} floats]", e.len()))
        })
        .unwrap_or_default();
    let tokens = |k: &str| {
        body["usage"][k]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_default()
    };
    let error = body["error"]["message"]
        .as_str()
        .or(line["error"]["message"].as_str())
        .unwrap_or("");
    [
        csv_field(line["custom_id"].as_str().unwrap_or("")),
        csv_field(&status),
        csv_field(&content),
        tokens("prompt_tokens"),
        tokens("completion_tokens"),
        tokens("total_tokens"),
        line["cost_usd"]
            .as_f64()
            .map(|c| format!("{c:.6}"))
            .unwrap_or_default(),
        csv_field(error),
    ]
    .join(",")
}

/// Send every result of a batch, page by page from the store (never all in memory).
pub(super) async fn send_results(
    store: &dyn Backend,
    session: &mut Session,
    ctx: &mut RequestCtx,
    who: Option<&str>,
    id: &str,
    format: &str,
) -> Result<(), GatewayError> {
    let content_type = match format {
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        _ => "application/jsonl",
    };
    let mut h = respond::header(200, content_type, ctx);
    respond::open_ended(session, &mut h);
    ctx.status = 200;
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_err()
    {
        ctx.status = 499;
        return Ok(());
    }
    let mut chunk = String::new();
    match format {
        "csv" => chunk.push_str(
            "custom_id,status,content,prompt_tokens,completion_tokens,total_tokens,cost_usd,error\n",
        ),
        "json" => chunk.push_str("{\"object\":\"list\",\"data\":["),
        _ => {}
    }
    let (mut after, mut first) = (0, true);
    loop {
        let page = store
            .results(who, id, after, 1000)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        for (line, text) in &page {
            after = *line;
            match format {
                "csv" => {
                    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                    chunk.push_str(&csv_row(&v));
                    chunk.push('\n');
                }
                "json" => {
                    if !first {
                        chunk.push(',');
                    }
                    chunk.push_str(text);
                }
                _ => {
                    chunk.push_str(text);
                    chunk.push('\n');
                }
            }
            first = false;
        }
        let last = page.len() < 1000;
        if last && format == "json" {
            chunk.push_str("]}");
        }
        let bytes = Bytes::from(std::mem::take(&mut chunk));
        if !bytes.is_empty()
            && session
                .write_response_body(Some(bytes), false)
                .await
                .is_err()
        {
            ctx.status = 499;
            return Ok(());
        }
        if last {
            break;
        }
    }
    let _ = session.write_response_body(None, true).await;
    Ok(())
}
