//! Engine.
pub mod gguf;
pub mod tokenizer;
pub mod registry;
pub mod chat;
