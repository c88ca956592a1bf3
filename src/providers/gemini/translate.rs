//! Pure translations between OpenAI chat and Gemini's `generateContent` (shared by the
//! Gemini API and Vertex AI, which take the same body): the mapping of
//! `shared/reference/gemini-bedrock-vertex.md` §d.1–d.2.

use super::wire::{
    Blob, EmbedContent, EmbedRequest, FileData, FunctionCall, FunctionCallingConfig,
    FunctionDeclaration, FunctionResponse, GenerationConfig, Part, RequestTail, SystemInstruction,
    ThinkingConfig, ToolConfig, ToolOutput, Tools,
};
use crate::canonical::chat::{for_each_turn, ChatHead, Choice, Turn};
use crate::canonical::finish::Finish;
use crate::canonical::parts::{self, Content, Image, Part as ContentPart};
use crate::canonical::write::{ArrayOut, Turns};
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use crate::providers::chat_wire::{ChatUsage, ReasoningTokens};
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// OpenAI content parts → Gemini parts.
fn parts_of(content: &Value) -> Result<Vec<Part<'_>>, GatewayError> {
    let parts = match parts::content(content)? {
        Content::None => return Ok(Vec::new()),
        Content::Text("") => return Ok(Vec::new()),
        Content::Text(s) => return Ok(vec![Part::Text(s.into())]),
        Content::Parts(p) => p,
    };
    parts
        .iter()
        .map(|p| match *p {
            ContentPart::Text(t) => Ok(Part::Text(t.unwrap_or_default().into())),
            ContentPart::Image(Image::Inline { media_type, data }) => Ok(Part::InlineData(Blob {
                mime_type: media_type,
                data,
            })),
            ContentPart::Image(Image::Url(url))
                if url.starts_with("gs://") || url.starts_with("https://") =>
            {
                Ok(Part::FileData(FileData {
                    mime_type: mime_of(url),
                    file_uri: url,
                }))
            }
            ContentPart::Image(Image::Url(_)) => Err(GatewayError::invalid(
                "image URLs must be data: URLs, https:// or gs://",
                "messages",
            )),
        })
        .collect()
}

fn mime_of(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// An OpenAI chat request → a `generateContent` body. The messages are read and written
/// one at a time, consecutive turns of one role merged (Gemini wants alternation) except
/// that function responses keep a turn of their own ([`Turns`]).
pub fn request(req: &AiRequest) -> Result<Vec<u8>, GatewayError> {
    let head = ChatHead::read(req)?;
    let mut system = Vec::new();
    let mut contents = Turns::new(ArrayOut::field(&Map::new(), "contents"), "parts");
    // Tool results carry only the call id; Gemini wants the function's name.
    let mut names: Vec<(String, String)> = Vec::new();
    for_each_turn(req, |turn| {
        match turn {
            Turn::System(text) => system.push(text),
            Turn::User(content) => push(&mut contents, "user", &parts_of(&content)?),
            Turn::Assistant { content, calls } => {
                let mut parts = parts_of(&content)?;
                for c in calls {
                    let id = c.id.as_str().unwrap_or_default().to_string();
                    names.push((id, c.name.clone()));
                    parts.push(Part::FunctionCall(FunctionCall {
                        name: c.name,
                        args: c.input,
                    }));
                }
                push(&mut contents, "model", &parts);
            }
            Turn::Tool { call_id, text } => {
                let id = call_id.as_str().unwrap_or_default();
                let name = names
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| {
                        GatewayError::invalid(
                            format!("tool message for unknown call {id:?}"),
                            "messages",
                        )
                    })?;
                let part = Part::FunctionResponse(FunctionResponse {
                    name,
                    response: ToolOutput { content: text },
                });
                push(&mut contents, "user", &[part]);
            }
        }
        Ok(())
    })?;
    head.one_choice()?;
    let number = |v: &Value| v.is_number().then(|| v.clone());
    let mut gen = GenerationConfig {
        candidate_count: number(&head.n),
        frequency_penalty: number(&head.frequency_penalty),
        max_output_tokens: head.completion_cap(),
        presence_penalty: number(&head.presence_penalty),
        seed: number(&head.seed),
        stop_sequences: head.stops(),
        temperature: number(&head.temperature),
        top_p: number(&head.top_p),
        ..GenerationConfig::default()
    };
    let format = &head.response_format;
    match format["type"].as_str() {
        Some("json_schema") => {
            gen.response_mime_type = Some("application/json");
            gen.response_json_schema = Some(format["json_schema"]["schema"].clone());
        }
        Some("json_object") => gen.response_mime_type = Some("application/json"),
        _ => {}
    }
    if let Some(effort) = head.reasoning_effort.as_str() {
        let budget = match effort {
            "none" | "minimal" => 0,
            "low" => 1024,
            "medium" => 8192,
            _ => 24576,
        };
        gen.thinking_config = Some(ThinkingConfig {
            include_thoughts: budget > 0,
            thinking_budget: budget,
        });
    }
    let decls: Vec<FunctionDeclaration> = head
        .functions()
        .into_iter()
        .map(|f| FunctionDeclaration {
            description: f.description,
            name: f.name,
            parameters_json_schema: f.parameters.is_object().then_some(f.parameters),
        })
        .collect();
    let mut tail = RequestTail {
        generation_config: (gen != GenerationConfig::default()).then_some(gen),
        system_instruction: (!system.is_empty()).then(|| SystemInstruction {
            parts: [Part::Text(system.join("\n").into())],
        }),
        ..RequestTail::default()
    };
    if !decls.is_empty() {
        let config = |mode, name: Option<Value>| {
            Some(ToolConfig {
                function_calling_config: FunctionCallingConfig {
                    allowed_function_names: name.map(|n| [n]),
                    mode,
                },
            })
        };
        tail.tool_config = match head.choice() {
            Choice::None => config("NONE", None),
            Choice::Required => config("ANY", None),
            Choice::Auto => config("AUTO", None),
            Choice::Named(n) => config("ANY", Some(n)),
            Choice::Unset => None,
        };
        tail.tools = Some([Tools {
            function_declarations: decls,
        }]);
    }
    Ok(contents.finish_with(&tail))
}

/// Append a turn (none for no parts): function responses keep a turn of their own.
fn push(contents: &mut Turns, role: &str, parts: &[Part<'_>]) {
    if let Some(first) = parts.first() {
        let responses = matches!(first, Part::FunctionResponse(_));
        contents.push(role, if responses { "responses" } else { role }, parts);
    }
}

/// OpenAI embeddings input → a `batchEmbedContents` body for `model` (`models/…`),
/// written one input at a time.
pub fn embeddings_request(req: &AiRequest, model: &str) -> Result<Vec<u8>, GatewayError> {
    let dimensions = req
        .field("dimensions")
        .and_then(|d| d.get().parse::<u64>().ok());
    let text_only = || GatewayError::invalid("this model embeds text inputs only", "input");
    let one = req
        .field("input")
        .and_then(|i| serde_json::from_str::<String>(i.get()).ok());
    let inputs: Vec<&RawValue> = match &one {
        Some(_) => Vec::new(),
        None => req.items("input").ok_or_else(text_only)?,
    };
    let mut out = ArrayOut::field(&Map::new(), "requests");
    let mut push = |text: &str| {
        out.push(&EmbedRequest {
            content: EmbedContent {
                parts: [Part::Text(text.into())],
            },
            model,
            output_dimensionality: dimensions,
        });
    };
    match &one {
        Some(text) => push(text),
        None => {
            for raw in inputs {
                let text: String = serde_json::from_str(raw.get()).map_err(|_| text_only())?;
                push(&text);
            }
        }
    }
    Ok(out.finish())
}

/// Gemini `finishReason` → OpenAI `finish_reason` (a function call ends with `STOP`).
pub fn finish_reason(reason: &str, called: bool) -> &'static str {
    Finish::from_gemini(reason, called).openai()
}

/// Gemini `usageMetadata` → OpenAI usage (thinking tokens count as completion tokens).
pub fn usage(u: &Value) -> ChatUsage {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    let completion = n("candidatesTokenCount").saturating_add(thoughts);
    let cached = n("cachedContentTokenCount");
    let total = u["totalTokenCount"].as_u64();
    ChatUsage {
        completion_tokens_details: Some(ReasoningTokens {
            reasoning_tokens: thoughts,
        }),
        ..ChatUsage::new(n("promptTokenCount"), completion, cached, total)
    }
}

/// A call id for the `index`-th function call of response `id`.
pub fn call_id(id: &str, index: usize) -> String {
    format!(
        "call_{}_{index}",
        id.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
    )
}

/// A `batchEmbedContents` answer, its vectors as they came.
#[derive(serde::Deserialize)]
pub struct BatchEmbeddings<'a> {
    #[serde(borrow)]
    embeddings: Vec<Values<'a>>,
}

#[derive(serde::Deserialize)]
struct Values<'a> {
    #[serde(default, borrow)]
    values: Option<&'a RawValue>,
}

/// An OpenAI embeddings list.
#[derive(serde::Serialize)]
pub struct EmbeddingList<'a> {
    data: Vec<EmbeddingItem<'a>>,
    model: &'a str,
    object: &'static str,
    usage: EmbeddingUsage,
}

#[derive(serde::Serialize)]
struct EmbeddingItem<'a> {
    embedding: Option<&'a RawValue>,
    index: usize,
    object: &'static str,
}

#[derive(serde::Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A `batchEmbedContents` answer → an OpenAI embeddings list (Gemini reports no usage:
/// the gateway's estimate of the inputs is used by the caller).
pub fn embeddings_response<'a>(g: BatchEmbeddings<'a>, model: &'a str) -> EmbeddingList<'a> {
    EmbeddingList {
        data: (g.embeddings.into_iter().enumerate())
            .map(|(index, e)| EmbeddingItem {
                embedding: e.values,
                index,
                object: "embedding",
            })
            .collect(),
        model,
        object: "list",
        usage: EmbeddingUsage {
            prompt_tokens: 0,
            total_tokens: 0,
        },
    }
}

/// The retry delay of a Google error (`RetryInfo.retryDelay`, a duration string), in
/// whole seconds rounded up.
pub fn retry_delay(error: &Value) -> Option<u64> {
    error["details"]
        .as_array()?
        .iter()
        .find_map(|d| d["retryDelay"].as_str())
        .and_then(|s| s.trim().strip_suffix('s')?.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s.ceil() as u64)
}

/// Whether a Google error says the API key is invalid (a 400, not a 401).
pub fn key_invalid(error: &Value) -> bool {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| d["reason"] == "API_KEY_INVALID")
}

/// A Google error answer (`{"error":{code,message,status,details}}`, possibly wrapped in
/// an array) → the status and OpenAI error body the client gets.
pub fn error(status: u16, body: &[u8]) -> (u16, Bytes) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = if v.is_array() {
        &v[0]["error"]
    } else {
        &v["error"]
    };
    // An invalid key is Google's 400; to the client it is what it means, a 401.
    let status = if key_invalid(e) { 401 } else { status };
    let a = crate::providers::api::error_answer(status, e["message"].as_str(), body);
    (a.status, a.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;
    use bytes::Bytes;
    use serde_json::json;

    fn gemini(body: Value) -> Result<Value, GatewayError> {
        let req = AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body.to_string()))?;
        request(&req).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_conversation_with_a_tool_round_trip() {
        let g = gemini(
            json!({"model": "g", "max_tokens": 50, "temperature": 0.2, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": "Thanks"}]}),
        )
        .unwrap();
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(g["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(g["generationConfig"]["temperature"], 0.2);
        let c = g["contents"].as_array().unwrap();
        assert_eq!(c[0]["role"], "user");
        assert_eq!(c[0]["parts"][1]["inlineData"]["mimeType"], "image/png");
        assert_eq!(c[1]["role"], "model");
        assert_eq!(
            c[1]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Rome"}})
        );
        // The tool result is named after its call, in a user turn of its own.
        assert_eq!(c[2]["parts"][0]["functionResponse"]["name"], "get_weather");
        assert_eq!(c[3]["parts"][0]["text"], "Thanks");
    }

    #[test]
    fn what_gemini_cannot_carry_is_refused() {
        let tool_for_nothing = json!({"model": "g", "messages": [
            {"role": "tool", "tool_call_id": "nope", "content": "x"}]});
        assert!(gemini(tool_for_nothing).is_err());
        let two = json!({"model": "g", "n": 2, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(gemini(two).unwrap_err().status(), 400);
        let ftp = json!({"model": "g", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]});
        assert!(gemini(ftp).is_err());
    }

    /// Vectors go through as Gemini wrote them (pretty-printed too) inside a valid list;
    /// an answer without `embeddings` is not read as one.
    #[test]
    fn embeddings_pass_through_as_written() {
        let body = b"{\n  \"embeddings\": [\n    {\"values\": [\n 0.25,\n -1e-05 ]},\n    {\"values\": \"odd\"},\n    {}\n  ]\n}";
        let g: BatchEmbeddings<'_> = serde_json::from_slice(body).unwrap();
        let out = serde_json::to_vec(&embeddings_response(g, "e")).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.25, -1e-05]));
        assert_eq!(v["data"][1]["embedding"], "odd");
        assert_eq!(v["data"][2]["embedding"], Value::Null);
        assert_eq!(v["data"][2]["index"], 2);
        assert_eq!(v["usage"]["total_tokens"], 0);
        assert!(serde_json::from_slice::<BatchEmbeddings<'_>>(b"{\"candidates\": []}").is_err());
        assert!(serde_json::from_slice::<BatchEmbeddings<'_>>(b"{\"embeddings\": 5}").is_err());
    }
}
