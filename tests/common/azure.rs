//! An Azure OpenAI resource: the classic deployment URLs (`/openai/deployments/{name}/…`
//! with `api-version`) and the `/openai/v1/` API, `api-key` auth, Azure's answer extras
//! (`prompt_filter_results`, a first stream chunk without choices) and its error shapes
//! (`code` only, as a string). Deployment `throttled` answers Azure's 429.

use super::fixture_server::{self, Reply, Request};

pub const API_VERSION: &str = "2024-10-21";

pub struct AzureUpstream {
    pub port: u16,
    pub requests: fixture_server::Recorded,
}

impl AzureUpstream {
    pub fn start(key: &str) -> AzureUpstream {
        let key = key.to_string();
        let (port, requests) = fixture_server::recording(move |req| answer(req, &key));
        AzureUpstream { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn targets(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.target.clone())
            .collect()
    }
}

fn answer(req: &Request, key: &str) -> Reply {
    if req.header("api-key") != Some(key) {
        return Reply::json(
            "401 Unauthorized",
            r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}"#,
        );
    }
    let body = req.json();
    // Classic: the deployment in the path; v1: the deployment in `model`.
    let (deployment, rest) = if let Some(p) = req.target.strip_prefix("/openai/deployments/") {
        let Some((path, query)) = p.split_once('?') else {
            return Reply::json(
                "404 Not Found",
                r#"{"error":{"code":"404","message":"Resource not found"}}"#,
            );
        };
        if query != format!("api-version={API_VERSION}") {
            return Reply::json(
                "400 Bad Request",
                r#"{"error":{"code":"BadRequest","message":"API version not supported"}}"#,
            );
        }
        let (dep, rest) = path.split_once('/').unwrap_or((path, ""));
        (dep.to_string(), format!("/{rest}"))
    } else if let Some(rest) = req.target.strip_prefix("/openai/v1") {
        (
            body["model"].as_str().unwrap_or("").to_string(),
            rest.to_string(),
        )
    } else {
        return Reply::json(
            "404 Not Found",
            r#"{"error":{"code":"404","message":"Resource not found"}}"#,
        );
    };
    match (deployment.as_str(), rest.as_str()) {
        ("throttled", _) => Reply::json(
            "429 Too Many Requests",
            r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 33 seconds."}}"#,
        )
        .with("retry-after", "33"),
        ("gpt-4o-prod", "/chat/completions") if body["stream"] == true => Reply::events(concat!(
            "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0}],\"created\":1,\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi from Azure\"},\"finish_reason\":null,\"index\":0}],\"created\":1,\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}],\"created\":1,\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\"}\n\n",
            "data: {\"choices\":[],\"created\":1,\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o-2024-08-06\",\"object\":\"chat.completion.chunk\",\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
            "data: [DONE]\n\n"
        )),
        ("gpt-4o-prod", "/chat/completions") => Reply::json(
            "200 OK",
            r#"{"id":"chatcmpl-az","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Hi from Azure"},"content_filter_results":{}}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#,
        ),
        ("embed-prod", "/embeddings") => Reply::json(
            "200 OK",
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}"#,
        ),
        _ => Reply::json(
            "404 Not Found",
            r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}"#,
        ),
    }
}
