//! The tools of a Responses request on chat providers, in every form clients send them:
//!
//! - top-level `tools`, and `additional_tools` input items (Codex sends its tools there,
//!   role `developer`): both become the chat request's one `tools` list;
//! - `function` tools: chat functions;
//! - `custom` (free-form) tools, with a `text` or `grammar` format: a chat function taking
//!   one string argument, `input` (the grammar goes into its description), mapped back to
//!   `custom_tool_call` items;
//! - `namespace` tools: their children flattened to unique chat function names (the bare
//!   name when free, else `namespace__name`), mapped back to items naming the namespace;
//! - built-in tools (every other type: `web_search`, `file_search`, `code_interpreter`,
//!   `local_shell`, `mcp`, …) run on OpenAI's servers and are dropped (the README's table).
//!
//! [`ToolNames`] is the map between the two sides, derived the same way from the request
//! on the way out and for the answer, so a call maps back to what the client defined.

use super::OutputItem;
use crate::canonical::chat_write::{ChatTool, ChatToolChoice};
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use serde::Deserialize;
use serde_json::{json, Value};

/// A tool as a client defines it (only the kinds a chat provider can carry are typed).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tool {
    Function(FunctionTool),
    Custom(CustomTool),
    Namespace(NamespaceTool),
    /// A built-in tool: no chat form.
    #[serde(other)]
    BuiltIn,
}

#[derive(Deserialize)]
struct FunctionTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct CustomTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    format: Option<CustomFormat>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CustomFormat {
    Text,
    Grammar {
        syntax: String,
        definition: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct NamespaceTool {
    name: String,
    tools: Vec<Value>,
}

/// One client tool under its chat name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolName {
    /// The chat function's name.
    pub chat: String,
    /// The namespace the client defined it in.
    pub namespace: Option<String>,
    /// Its name in the client's definition.
    pub name: String,
    /// A custom (free-form) tool: its calls carry one string, `input`.
    pub custom: bool,
}

/// The client's tools under their chat names.
#[derive(Debug, Default, Clone)]
pub struct ToolNames {
    names: Vec<ToolName>,
}

/// A Responses request's tools as the chat request carries them.
pub struct ChatTools {
    /// Chat `tools` entries.
    pub tools: Vec<ChatTool>,
    pub names: ToolNames,
}

/// Most tools one request may define (OpenAI takes 128): a bound on the work of naming
/// them and of every lookup of a call's name.
pub const MAX_TOOLS: usize = 512;

/// A chat function name: the characters chat APIs accept (`[A-Za-z0-9_-]`), at most 64.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

impl ToolNames {
    /// No tools.
    pub const EMPTY: ToolNames = ToolNames { names: Vec::new() };

    /// The client's tool a chat call names.
    pub fn of_chat(&self, chat: &str) -> Option<&ToolName> {
        self.names.iter().find(|n| n.chat == chat)
    }

    /// The prefix of an output item id for a call of chat function `chat`.
    pub fn id_prefix(&self, chat: &Value) -> &'static str {
        match chat.as_str().and_then(|c| self.of_chat(c)) {
            Some(t) if t.custom => "ctc_",
            _ => "fc_",
        }
    }

    /// The chat name of the client's tool `name` (in `namespace`); one the request no
    /// longer defines (a call in the history) gets the name it would have had.
    pub fn chat_name(&self, namespace: Option<&str>, name: &str) -> String {
        match self
            .names
            .iter()
            .find(|n| n.name == name && n.namespace.as_deref() == namespace)
        {
            Some(n) => n.chat.clone(),
            None => match namespace {
                Some(ns) => sanitize(&format!("{ns}__{name}")),
                None => name.to_string(),
            },
        }
    }

    /// The chat name of the first tool called `name` in any namespace (`tool_choice`).
    fn any_named(&self, name: &str) -> String {
        self.names
            .iter()
            .find(|n| n.name == name)
            .map_or_else(|| name.to_string(), |n| n.chat.clone())
    }

    /// A unique chat name for `name` in `namespace`: the bare name when free, else
    /// `namespace__name`, else with a number.
    fn claim(&mut self, namespace: Option<&str>, name: &str, custom: bool) -> String {
        // Every name claimed so far, once per claim: at most MAX_TOOLS² steps in all.
        let claimed: std::collections::HashSet<&str> =
            self.names.iter().map(|n| n.chat.as_str()).collect();
        let taken = |_: &[ToolName], c: &str| claimed.contains(c);
        let chat = match namespace {
            // A top-level tool keeps its name as the client wrote it.
            None => name.to_string(),
            Some(ns) => {
                let bare = sanitize(name);
                let joined = sanitize(&format!("{ns}__{name}"));
                let mut pick = if taken(&self.names, &bare) {
                    joined
                } else {
                    bare
                };
                let stem: String = pick.chars().take(60).collect();
                let mut n = 2;
                while taken(&self.names, &pick) {
                    pick = format!("{stem}_{n}");
                    n += 1;
                }
                pick
            }
        };
        drop(claimed);
        self.names.push(ToolName {
            chat: chat.clone(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            custom,
        });
        chat
    }
}

/// Where a tool definition sits, for errors.
fn bad_tool(at: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::invalid(format!("Invalid tool at {at}: {e}"), "tools")
}

/// The parameters a function's schema gives chat providers (an object schema always).
fn object_schema(parameters: Option<Value>) -> Value {
    match parameters {
        Some(Value::Object(mut o)) => {
            o.entry("type").or_insert_with(|| json!("object"));
            Value::Object(o)
        }
        _ => json!({"type": "object", "properties": {}}),
    }
}

/// A custom tool as a chat function: one string argument, `input`, described by its
/// format (a grammar goes into the description: chat has no constrained decoding).
fn custom_function(chat: &str, t: CustomTool) -> ChatTool {
    let note = match t.format {
        Some(CustomFormat::Grammar { syntax, definition }) => format!(
            "Pass the raw input as `input` (free-form text, not JSON). It must match this \
             {syntax} grammar:\n{definition}"
        ),
        _ => "Pass the raw input as `input` (free-form text, not JSON).".to_string(),
    };
    let description = match t.description {
        Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
        _ => note,
    };
    let parameters = json!({"type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's raw input."}},
        "required": ["input"], "additionalProperties": false});
    ChatTool::function(chat, Some(description), parameters, None)
}

impl ChatTools {
    /// Collect the tools of `req` (top-level `tools`, then each `additional_tools` input
    /// item's, in order).
    pub fn of(req: &AiRequest) -> Result<ChatTools, GatewayError> {
        let mut out = ChatTools {
            tools: Vec::new(),
            names: ToolNames::default(),
        };
        if let Some(raw) = req.field("tools").filter(|r| r.get() != "null") {
            let list: Vec<Value> = serde_json::from_str(raw.get())
                .map_err(|_| GatewayError::invalid("'tools' must be an array.", "tools"))?;
            out.add_all(list, None, "tools")?;
        }
        let finder = memchr::memmem::Finder::new(b"\"additional_tools\"");
        for (i, item) in req.items("input").into_iter().flatten().enumerate() {
            if finder.find(item.get().as_bytes()).is_none() {
                continue;
            }
            #[derive(Deserialize)]
            struct Carrier {
                #[serde(rename = "type")]
                kind: Option<String>,
                #[serde(default)]
                tools: Vec<Value>,
            }
            let at = format!("input[{i}].tools");
            let c: Carrier = serde_json::from_str(item.get()).map_err(|e| bad_tool(&at, e))?;
            if c.kind.as_deref() == Some("additional_tools") {
                out.add_all(c.tools, None, &at)?;
            }
        }
        Ok(out)
    }

    fn add_all(
        &mut self,
        list: Vec<Value>,
        ns: Option<&str>,
        at: &str,
    ) -> Result<(), GatewayError> {
        for (i, t) in list.into_iter().enumerate() {
            let at = format!("{at}[{i}]");
            if self.names.names.len() >= MAX_TOOLS {
                return Err(bad_tool(&at, format!("at most {MAX_TOOLS} tools in all")));
            }
            match serde_json::from_value::<Tool>(t).map_err(|e| bad_tool(&at, e))? {
                Tool::Function(f) => {
                    let chat = self.names.claim(ns, &f.name, false);
                    let params = object_schema(f.parameters);
                    self.tools
                        .push(ChatTool::function(chat, f.description, params, f.strict));
                }
                Tool::Custom(c) => {
                    let chat = self.names.claim(ns, &c.name, true);
                    self.tools.push(custom_function(&chat, c));
                }
                Tool::Namespace(n) if ns.is_none() => {
                    self.add_all(n.tools, Some(&n.name), &format!("{at}.tools"))?;
                }
                Tool::Namespace(_) => return Err(bad_tool(&at, "namespaces do not nest")),
                Tool::BuiltIn => {}
            }
        }
        Ok(())
    }

    /// The chat `tool_choice` for a Responses one (`None`: leave it out).
    pub fn choice(&self, choice: &Value) -> Option<ChatToolChoice> {
        match choice {
            Value::String(_) => Some(ChatToolChoice::Mode(choice.clone())),
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("function" | "custom") => {
                    let name = o.get("name").and_then(Value::as_str)?;
                    Some(ChatToolChoice::function(self.names.any_named(name).into()))
                }
                Some("allowed_tools") => o.get("mode").cloned().map(ChatToolChoice::Mode),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The chat arguments of a custom tool call's `input`.
pub fn custom_arguments(input: &str) -> String {
    json!({ "input": input }).to_string()
}

/// A custom tool call's `input` from the chat arguments a model wrote: the `input` string
/// of an object, a bare JSON string, or the text as it is.
pub fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut o)) => match o.remove("input") {
            Some(Value::String(s)) => s,
            _ => arguments.to_string(),
        },
        Ok(Value::String(s)) => s,
        _ => arguments.to_string(),
    }
}

/// The output item for a chat tool call `chat` (`name`) with its whole `arguments`: a
/// `function_call` (naming its namespace) or a `custom_tool_call`.
pub fn call_item(
    names: &ToolNames,
    id: &str,
    call_id: &Value,
    chat: &Value,
    arguments: &str,
    status: &'static str,
) -> OutputItem {
    let tool = chat.as_str().and_then(|c| names.of_chat(c));
    let name = tool.map_or_else(|| chat.clone(), |t| json!(t.name));
    let namespace = tool.and_then(|t| t.namespace.clone());
    let (id, call_id) = (id.to_string(), call_id.clone());
    match tool {
        Some(t) if t.custom => OutputItem::CustomToolCall {
            id,
            status,
            call_id,
            name,
            input: custom_input(arguments),
            namespace,
        },
        _ => OutputItem::FunctionCall {
            id,
            status,
            call_id,
            name,
            arguments: arguments.to_string(),
            namespace,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;
    use bytes::Bytes;

    fn tools(body: Value) -> Result<ChatTools, GatewayError> {
        let req = AiRequest::parse(Endpoint::Responses, Bytes::from(body.to_string()))?;
        ChatTools::of(&req)
    }

    fn codex_body() -> Value {
        let exec = json!({"type": "custom", "name": "exec", "description": "Run code",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}});
        json!({"model": "m",
            "tools": [{"type": "function", "name": "wait", "parameters": null, "strict": false},
                      {"type": "web_search"}],
            "input": [
                {"type": "additional_tools", "role": "developer", "tools": [
                    {"type": "namespace", "name": "functions", "description": "Local",
                     "tools": [exec, {"type": "function", "name": "wait",
                                      "parameters": {"properties": {}}}]},
                    {"type": "namespace", "name": "clock", "tools": [
                        {"type": "function", "name": "now"}]}]},
                {"role": "user", "content": "hi"}]})
    }

    #[test]
    fn every_form_becomes_one_chat_tool_list_with_unique_names() {
        let t = tools(codex_body()).unwrap();
        let written = serde_json::to_value(&t.tools).unwrap();
        let chat: Vec<&str> = t
            .tools
            .iter()
            .map(|f| f.function.name.as_str().unwrap())
            .collect();
        // The built-in is dropped; the clashing child gets its namespace.
        assert_eq!(chat, ["wait", "exec", "functions__wait", "now"]);
        assert_eq!(written[0]["function"]["parameters"]["type"], "object");
        let exec = &written[1]["function"];
        assert_eq!(exec["parameters"]["required"], json!(["input"]));
        assert!(exec["description"]
            .as_str()
            .unwrap()
            .contains("start: /.+/"));
        assert_eq!(written[2]["function"]["parameters"]["type"], "object");
        let n = t.names.of_chat("functions__wait").unwrap();
        assert_eq!(
            (n.namespace.as_deref(), n.name.as_str()),
            (Some("functions"), "wait")
        );
        assert!(t.names.of_chat("exec").unwrap().custom);
        assert_eq!(t.names.chat_name(Some("clock"), "now"), "now");
        assert_eq!(t.names.chat_name(Some("gone"), "x.y"), "gone__x_y");
        assert_eq!(t.names.chat_name(None, "wait"), "wait");
    }

    #[test]
    fn calls_map_back_to_what_the_client_defined() {
        let item = |i: OutputItem| serde_json::to_value(i).unwrap();
        let t = tools(codex_body()).unwrap();
        let c = item(call_item(
            &t.names,
            "ctc_1",
            &json!("call_1"),
            &json!("exec"),
            "{\"input\":\"ls -la\"}",
            "completed",
        ));
        assert_eq!(c["type"], "custom_tool_call");
        assert_eq!(c["input"], "ls -la");
        assert_eq!(c["namespace"], "functions");
        let f = item(call_item(
            &t.names,
            "fc_1",
            &json!("call_2"),
            &json!("functions__wait"),
            "{}",
            "completed",
        ));
        assert_eq!(
            (f["type"].as_str(), f["name"].as_str()),
            (Some("function_call"), Some("wait"))
        );
        assert_eq!(f["namespace"], "functions");
        let plain = item(call_item(
            &t.names,
            "fc_2",
            &json!("call_3"),
            &json!("wait"),
            "{}",
            "completed",
        ));
        assert!(plain.get("namespace").is_none());
        assert_eq!(custom_input("\"raw\""), "raw");
        assert_eq!(custom_input("not json"), "not json");
        assert_eq!(custom_input(&custom_arguments("a\"b")), "a\"b");
    }

    #[test]
    fn tool_choice_names_the_chat_function() {
        let t = tools(codex_body()).unwrap();
        let choice = |v: Value| t.choice(&v).map(|c| serde_json::to_value(c).unwrap());
        assert_eq!(
            choice(json!({"type": "custom", "name": "exec"})),
            Some(json!({"type": "function", "function": {"name": "exec"}}))
        );
        assert_eq!(choice(json!("required")), Some(json!("required")));
        assert_eq!(choice(json!({"type": "web_search_preview"})), None);
    }

    #[test]
    fn many_tools_of_one_name_are_named_quickly_and_too_many_refused() {
        let children: Vec<Value> = (0..MAX_TOOLS - 1)
            .map(|_| json!({"type": "function", "name": "x"}))
            .collect();
        let body = |children: &[Value]| {
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "x"},
                {"type": "namespace", "name": "a", "tools": children}]})
        };
        let start = std::time::Instant::now();
        let t = tools(body(&children)).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        let mut names: Vec<&str> = t
            .tools
            .iter()
            .map(|f| f.function.name.as_str().unwrap())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MAX_TOOLS, "every chat name unique");
        let mut over = children.clone();
        over.push(json!({"type": "function", "name": "x"}));
        let e = tools(body(&over)).err().unwrap();
        assert!(e.to_string().contains("at most 512 tools"), "{e}");
    }

    #[test]
    fn malformed_tools_are_refused_naming_where() {
        let e =
            tools(json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": 5}]}))
                .err()
                .unwrap();
        assert!(e.to_string().contains("tools[0]"), "{e}");
        let nested = json!({"model": "m", "input": [{"type": "additional_tools", "tools": [
            {"type": "namespace", "name": "a", "tools": [{"type": "namespace", "name": "b", "tools": []}]}]}]});
        let e = tools(nested).err().unwrap();
        assert!(e.to_string().contains("input[0].tools[0].tools[0]"), "{e}");
        assert!(tools(json!({"model": "m", "input": "x", "tools": 3})).is_err());
    }
}
