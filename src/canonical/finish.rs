//! Why a model stopped: each provider's reason read into one [`Finish`], and written in
//! each client API's words — the one mapping every translation uses, in both directions.

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It ended its answer (or hit a stop sequence).
    Stop,
    /// It reached the completion cap (or the context window).
    Length,
    /// It called tools.
    ToolCalls,
    /// A safety system stopped it.
    ContentFilter,
}

impl Finish {
    /// An OpenAI `finish_reason` (`function_call` is the legacy name for tool calls).
    pub fn from_openai(reason: &str) -> Finish {
        match reason {
            "length" => Finish::Length,
            "tool_calls" | "function_call" => Finish::ToolCalls,
            "content_filter" => Finish::ContentFilter,
            _ => Finish::Stop,
        }
    }

    /// An Anthropic `stop_reason` (`end_turn`, `stop_sequence` and `pause_turn` stop).
    pub fn from_anthropic(reason: &str) -> Finish {
        match reason {
            "max_tokens" | "model_context_window_exceeded" => Finish::Length,
            "tool_use" => Finish::ToolCalls,
            "refusal" => Finish::ContentFilter,
            _ => Finish::Stop,
        }
    }

    /// A Bedrock Converse `stopReason`: Anthropic's words plus its guardrails'.
    pub fn from_converse(reason: &str) -> Finish {
        match reason {
            "guardrail_intervened" | "content_filtered" => Finish::ContentFilter,
            "refusal" => Finish::Stop,
            other => Finish::from_anthropic(other),
        }
    }

    /// A Gemini `finishReason`; a function call ends with `STOP`, so `called` says
    /// whether the answer called one.
    pub fn from_gemini(reason: &str, called: bool) -> Finish {
        match reason {
            "MAX_TOKENS" => Finish::Length,
            "SAFETY"
            | "RECITATION"
            | "LANGUAGE"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION" => Finish::ContentFilter,
            _ if called => Finish::ToolCalls,
            _ => Finish::Stop,
        }
    }

    /// In OpenAI's words (`finish_reason`).
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            Finish::ContentFilter => "content_filter",
        }
    }

    /// In Anthropic's words (`stop_reason`).
    pub fn anthropic(self) -> &'static str {
        match self {
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::ToolCalls => "tool_use",
            Finish::ContentFilter => "refusal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_both_ways() {
        for f in [
            Finish::Stop,
            Finish::Length,
            Finish::ToolCalls,
            Finish::ContentFilter,
        ] {
            assert_eq!(Finish::from_openai(f.openai()), f);
            assert_eq!(Finish::from_anthropic(f.anthropic()), f);
        }
        assert_eq!(Finish::from_anthropic("pause_turn"), Finish::Stop);
        assert_eq!(
            Finish::from_anthropic("model_context_window_exceeded"),
            Finish::Length
        );
        assert_eq!(
            Finish::from_converse("guardrail_intervened"),
            Finish::ContentFilter
        );
        assert_eq!(Finish::from_converse("tool_use"), Finish::ToolCalls);
        assert_eq!(Finish::from_gemini("STOP", true), Finish::ToolCalls);
        assert_eq!(Finish::from_gemini("SAFETY", true), Finish::ContentFilter);
        assert_eq!(Finish::from_gemini("STOP", false).openai(), "stop");
    }
}
