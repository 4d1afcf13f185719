//! The chat UI over a stand-in model that echoes you word by word: try the
//! interface without weights (`cargo run --release -p owl-tui --example echo_chat`).
//! Arguments: [N_CTX] [DELAY_MS].

use std::sync::Arc;
use std::time::Duration;

use owl_tui::app::Settings;
use owl_tui::fake::EchoLoader;
use owl_tui::runtime::{run, ChatOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n_ctx = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2048);
    let delay = Duration::from_millis(args.next().map(|a| a.parse()).transpose()?.unwrap_or(60));
    let opts = ChatOptions {
        model: "echo".into(),
        system: None,
        settings: Settings::default(),
    };
    run(opts, Arc::new(EchoLoader { n_ctx, delay }))?;
    Ok(())
}
