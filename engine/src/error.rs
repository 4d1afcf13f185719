//! The engine's error type: one variant per thing that can go wrong, each
//! message saying what to do.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),
    #[error(transparent)]
    Backend(#[from] owl_backends::BackendError),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("the model file lacks tensor `{0}`; is it a complete GGUF of a supported architecture?")]
    MissingTensor(String),
    #[error("malformed model: {0}")]
    BadModel(String),
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}
