//! The chat UI over a stand-in model that echoes you word by word: try the
//! interface without weights (`cargo run --release -p owl-tui --example echo_chat`).
//! Takes `owl chat`'s flags; it uses --model (as the name), --ctx, --system,
//! --max-tokens and its own --delay-ms, and ignores the rest.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use owl_tui::app::Settings;
use owl_tui::fake::EchoLoader;
use owl_tui::runtime::{run, ChatOptions};

fn main() -> anyhow::Result<()> {
    let mut opts = ChatOptions {
        model: "echo".into(),
        system: None,
        settings: Settings::default(),
    };
    let mut loader = EchoLoader {
        n_ctx: 2048,
        delay: Duration::from_millis(60),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .with_context(|| format!("{} needs a value", args[i]))
        };
        match args[i].as_str() {
            "--model" => opts.model = value()?.clone(),
            "--system" => opts.system = Some(value()?.clone()),
            "--ctx" => loader.n_ctx = value()?.parse()?,
            "--max-tokens" => opts.settings.max_tokens = Some(value()?.parse()?),
            "--delay-ms" => loader.delay = Duration::from_millis(value()?.parse()?),
            flag if flag.starts_with("--") => {}
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    run(opts, Arc::new(loader))?;
    Ok(())
}
