//! A DeepSeek-shaped upstream: OpenAI-compatible, with DeepSeek's quirks. Under load it
//! holds the connection with `: keep-alive` comments (streams) or blank lines before the
//! JSON (non-stream); answers carry `reasoning_content` and cache-hit usage fields. Key
//! `sk-ds-broke` has no credit (402); model `bad` fails validation (422).

use super::fixture_server::{self, Reply, Request};

pub struct DeepSeekUpstream {
    pub port: u16,
    pub requests: fixture_server::Recorded,
}

impl DeepSeekUpstream {
    pub fn start() -> DeepSeekUpstream {
        let (port, requests) = fixture_server::recording(answer);
        DeepSeekUpstream { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The `Authorization` headers received, in order.
    pub fn keys(&self) -> Vec<String> {
        let r = self.requests.lock().unwrap();
        r.iter()
            .filter_map(|q| q.header("authorization").map(str::to_string))
            .collect()
    }
}

fn answer(req: &Request) -> Reply {
    let body = req.json();
    if req.header("authorization") == Some("Bearer sk-ds-broke") {
        return Reply::json(
            "402 Payment Required",
            r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#,
        );
    }
    if body["model"] == "bad" {
        return Reply::json(
            "422 Unprocessable Entity",
            r#"{"error":{"message":"Failed to deserialize the JSON body into the target type: messages[0]: unknown variant `robot`","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
        );
    }
    if body["stream"] == true {
        return Reply::events(concat!(
            ": keep-alive\n\n",
            ": keep-alive\n\n",
            "data: {\"id\":\"ds-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"deepseek-v4-flash\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"Thinking.\"},\"finish_reason\":null}]}\n\n",
            ": keep-alive\n\n",
            "data: {\"id\":\"ds-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"deepseek-v4-flash\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello from DeepSeek\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"ds-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"deepseek-v4-flash\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"ds-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"deepseek-v4-flash\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5,\"total_tokens\":16,\"prompt_cache_hit_tokens\":0,\"prompt_cache_miss_tokens\":11}}\n\n",
            "data: [DONE]\n\n"
        ));
    }
    Reply::json(
        "200 OK",
        concat!(
            "\n\n\n",
            r#"{"id":"ds-2","object":"chat.completion","created":1,"model":"deepseek-v4-flash","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from DeepSeek","reasoning_content":"Thinking."},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":5,"total_tokens":16,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":11}}"#
        ),
    )
}
