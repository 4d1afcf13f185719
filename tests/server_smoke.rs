//! `owl serve` end to end from Rust, without Python: start the built binary on
//! a free loopback port with the default model, wait for /health, then a chat
//! completion and an error over plain HTTP/1.1. The full suite (openai SDK,
//! streaming, concurrency, disconnects) is tests/py/, run by scripts/test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct";

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(["serve", "--model", MODEL, "--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn owl serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[owl serve] {line}");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no listening line from owl serve");
    assert!(
        addr.starts_with("127.0.0.1:"),
        "loopback by default, got {addr}"
    );
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok((200, _)) = http(&server.addr, "GET", "/health", None) {
            return server;
        }
        assert!(Instant::now() < deadline, "owl serve never became healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    Ok((status, payload))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn serve_chat_and_errors() {
    let server = start(&["--ctx", "1024", "--parallel", "2"]);
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12,
        "temperature": 0,
    });
    let (status, text) = http(&server.addr, "POST", "/v1/chat/completions", Some(&body)).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{v}");
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion), "{v}");

    let (status, text) = http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        Some(&json!({"messages": []})),
    )
    .unwrap();
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    assert_eq!(http(&server.addr, "GET", "/health", None).unwrap().0, 200);
}

#[test]
fn serve_unknown_model_fails_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(["serve", "--model", "/nonexistent/model.gguf", "--port", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("run owl serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("nonexistent"), "stderr: {err}");
}
