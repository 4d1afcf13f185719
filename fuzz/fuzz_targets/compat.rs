//! Arbitrary bodies through the Anthropic Messages, Ollama chat and Responses
//! request translation into an OpenAI chat body, and then the chat handler's
//! checks on that body (first byte: which API). Every input is Ok or a 400; none panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use owl_server::CompatApi;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let api = match which % 3 {
        0 => CompatApi::AnthropicMessages,
        1 => CompatApi::OllamaChat,
        _ => CompatApi::Responses,
    };
    if let Ok(chat) = owl_server::parse_translated(api, body) {
        // What a translation accepts is a chat body the chat handler accepts too.
        let bytes = serde_json::to_vec(&chat).unwrap();
        if let Err(e) = owl_server::parse_request(&bytes, true) {
            panic!("{api:?} translated to a chat body the chat handler refuses: {e:?}");
        }
    }
});
