//! owl-engine: GGUF, tokenizer, chat templates, model architectures, KV cache,
//! sampler, scheduler and the Engine service that front ends talk to.
pub mod chat;
pub mod constrain;
mod error;
pub mod gguf;
pub mod kv;
pub mod models;
pub mod perplexity;
pub mod quantize;
pub mod registry;
pub mod sampler;
pub mod service;
pub mod synth;
pub mod tokenizer;
pub mod tools;

pub use error::EngineError;
pub use service::*;
