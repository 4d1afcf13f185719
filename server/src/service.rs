//! The part of the Engine service the HTTP layer uses, as a trait, so the
//! handlers can be tested in process with a fake engine and no model.

use owl_engine::service::{
    ChatMessage, Engine, MetricsSnapshot, ModelInfo, Request, RequestHandle, SubmitError,
};
use owl_engine::tools::Family;

/// What the engine could not do for a request (tokenize, render a template).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

/// The engine as seen by the server. `owl_engine::service::Engine` implements it.
pub trait LlmService: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;
    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, ServiceError>;
    fn detokenize(&self, ids: &[u32]) -> String;
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ServiceError>;
    /// Renders OpenAI-shaped JSON messages with `tools` in the template's context.
    fn apply_chat_template_tools(
        &self,
        _messages: &[serde_json::Value],
        _tools: &[serde_json::Value],
    ) -> Result<String, ServiceError> {
        Err(ServiceError("this engine does not render tools".into()))
    }
    /// How the model writes tool calls.
    fn tool_family(&self) -> Family {
        Family::Generic
    }
    /// The chat template's source (llama-server's `/props` shows it).
    fn chat_template(&self) -> String {
        String::new()
    }
    fn submit(&self, req: Request) -> Result<RequestHandle, SubmitError>;
    fn metrics(&self) -> MetricsSnapshot;
}

impl LlmService for Engine {
    fn info(&self) -> &ModelInfo {
        Engine::info(self)
    }
    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, ServiceError> {
        Engine::tokenize(self, text, add_special, parse_special)
            .map_err(|e| ServiceError(e.to_string()))
    }
    fn detokenize(&self, ids: &[u32]) -> String {
        Engine::detokenize(self, ids)
    }
    fn chat_template(&self) -> String {
        Engine::chat_template(self).to_string()
    }
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ServiceError> {
        Engine::apply_chat_template(self, messages, add_generation_prompt)
            .map_err(|e| ServiceError(e.to_string()))
    }
    fn apply_chat_template_tools(
        &self,
        messages: &[serde_json::Value],
        tools: &[serde_json::Value],
    ) -> Result<String, ServiceError> {
        Engine::apply_chat_template_tools(self, messages, tools)
            .map_err(|e| ServiceError(e.to_string()))
    }
    fn tool_family(&self) -> Family {
        Engine::tool_family(self)
    }
    fn submit(&self, req: Request) -> Result<RequestHandle, SubmitError> {
        Engine::submit(self, req)
    }
    fn metrics(&self) -> MetricsSnapshot {
        Engine::metrics(self)
    }
}
