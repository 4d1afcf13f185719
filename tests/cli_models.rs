//! The `owl` binary's model commands (list, pull, rm, inspect) against a temp
//! cache, a temp models.lock and a local HTTP server on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[path = "../engine/tests/common/fixtures.rs"]
mod fixtures;

use owl_engine::gguf::{GgmlType, GgufWriter};

/// What the test server saw, and a switch to cut its next response mid-way.
struct Server {
    url: String,
    /// The Range header of each request ("" when none).
    requests: Arc<Mutex<Vec<String>>>,
    cut_next: Arc<AtomicBool>,
}

/// Serves `body`, honouring `Range: bytes=N-`; when `cut_next` is set, the next
/// response is cut after half the body.
fn serve(body: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tiny.gguf", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    let cut_next = Arc::new(AtomicBool::new(false));
    let cut2 = Arc::clone(&cut_next);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(stream) = stream else { break };
            let _ = answer(stream, &body, &cut2, &log2);
        }
    });
    Server {
        url,
        requests: log,
        cut_next,
    }
}

fn answer(
    mut s: TcpStream,
    body: &[u8],
    cut_next: &AtomicBool,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut start = 0usize;
    let mut range = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = v.trim().to_string();
            start = range
                .trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap_or(0);
        }
    }
    log.lock().unwrap().push(range);
    let len = body.len();
    if cut_next.swap(false, Ordering::SeqCst) {
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )?;
        s.write_all(&body[..len / 2])?;
    } else if start > 0 && start < len {
        write!(
            s,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nConnection: close\r\n\r\n",
            len - start,
            len - 1
        )?;
        s.write_all(&body[start..])?;
    } else {
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )?;
        s.write_all(body)?;
    }
    s.flush()
}

/// A small valid GGUF to serve, so `inspect` works on the pulled file.
fn tiny_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("general.name", "tiny served model")
        .set("llama.block_count", 1u32)
        .set(
            "tokenizer.ggml.tokens",
            (0..100).map(|i| format!("tok{i}")).collect::<Vec<_>>(),
        );
    let data: Vec<u8> = (0..34 * 2048).map(|i| (i * 31 % 251) as u8).collect();
    w.add_tensor("blk.0.ffn_up.weight", &[256, 256], GgmlType::Q8_0, data)
        .unwrap();
    w.to_bytes().unwrap()
}

struct Env {
    home: tempfile::TempDir,
    lock: PathBuf,
}

impl Env {
    fn owl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_owl"))
            .args(args)
            .env("OWL_HOME", self.home.path())
            .env("OWL_MODELS_LOCK", &self.lock)
            .env_remove("OWL_PYTHON")
            .output()
            .unwrap()
    }
    fn models(&self) -> PathBuf {
        self.home.path().join("models")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn list_pull_inspect_rm() {
    let body = tiny_gguf();
    let server = serve(body.clone());
    let (url, requests) = (&server.url, &server.requests);
    let home = tempfile::tempdir().unwrap();
    let body_path = home.path().join("expected.bin");
    std::fs::write(&body_path, &body).unwrap();
    let sha = owl_engine::registry::sha256_file_hex(&body_path).unwrap();
    std::fs::remove_file(&body_path).unwrap();
    let entry = |name: &str, file: &str, sha: &str| {
        format!(
            "[[model]]\nname = \"{name}\"\nfile = \"{file}\"\narch = \"llama\"\nquant = \"Q8_0\"\n\
             size = {}\nsha256 = \"{sha}\"\n[[model.source]]\ntype = \"url\"\nurl = \"{url}\"\n",
            body.len()
        )
    };
    let lock = home.path().join("models.lock");
    std::fs::write(
        &lock,
        format!(
            "default = \"good\"\n{}{}",
            entry("good", "good.gguf", &sha),
            entry("bad", "bad.gguf", &"0".repeat(64))
        ),
    )
    .unwrap();
    let env = Env { home, lock };

    // list: both, none pulled.
    let out = env.owl(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NAME"), "{text}");
    let good_line = text.lines().find(|l| l.starts_with("good")).unwrap();
    assert!(
        good_line.contains("(default)") && good_line.contains(" no "),
        "{good_line}"
    );
    assert!(text.lines().any(|l| l.starts_with("bad ")), "{text}");

    // pull with a wrong sha256: one clear line, nothing left behind.
    let out = env.owl(&["pull", "bad"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: sha256 mismatch for bad: expected 0000"),
        "{err}"
    );
    assert!(err.contains(&format!("got {sha}")), "{err}");
    assert!(err.contains("run `owl pull bad` again"), "{err}");
    assert!(
        files_in(&env.models()).is_empty(),
        "{:?}",
        files_in(&env.models())
    );

    // pull the default: the first connection is cut, the download resumes.
    requests.lock().unwrap().clear();
    server.cut_next.store(true, Ordering::SeqCst);
    let out = env.owl(&["pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("pulled good"), "{}", stdout(&out));
    assert_eq!(std::fs::read(env.models().join("good.gguf")).unwrap(), body);
    let reqs = requests.lock().unwrap().clone();
    assert_eq!(
        reqs,
        vec![String::new(), format!("bytes={}-", body.len() / 2)]
    );

    // Again: a no-op without any request.
    let out = env.owl(&["pull", "good"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("good is up to date"),
        "{}",
        stdout(&out)
    );
    assert_eq!(requests.lock().unwrap().len(), 2);

    let out = env.owl(&["list"]);
    let text = stdout(&out);
    let good_line = text.lines().find(|l| l.starts_with("good")).unwrap();
    assert!(
        good_line.contains(" yes ") && good_line.ends_with("good.gguf"),
        "{good_line}"
    );

    // inspect by name resolves to the pulled file.
    let out = env.owl(&["inspect", "good"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("general.name") && text.contains("\"tiny served model\""),
        "{text}"
    );
    assert!(
        text.contains("... 92 more]"),
        "long arrays are abbreviated: {text}"
    );
    assert!(
        text.contains("blk.0.ffn_up.weight") && text.contains("256 x 256"),
        "{text}"
    );
    let out = env.owl(&["inspect", "bad"]);
    assert!(
        stderr(&out).contains("not pulled yet; run `owl pull bad`"),
        "{}",
        stderr(&out)
    );
    let out = env.owl(&["inspect", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("known models: good, bad"),
        "{}",
        stderr(&out)
    );

    // rm
    let out = env.owl(&["rm", "good"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("removed good"), "{}", stdout(&out));
    assert!(
        files_in(&env.models()).is_empty(),
        "{:?}",
        files_in(&env.models())
    );
    let out = env.owl(&["rm", "good"]);
    assert!(out.status.success() && stdout(&out).contains("not in the cache"));
    let out = env.owl(&["rm", "nosuch"]);
    assert!(!out.status.success() && stderr(&out).contains("unknown model 'nosuch'"));
}

#[test]
fn built_in_lock_and_inspect_by_path() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_owl"))
            .args(args)
            .env("OWL_HOME", home.path())
            .env_remove("OWL_MODELS_LOCK")
            .output()
            .unwrap()
    };
    let out = run(&["list"]);
    let text = stdout(&out);
    assert!(
        text.contains("qwen2.5-coder-0.5b-instruct (default)")
            && text.contains("smollm2-135m-instruct")
            && text.contains("qwen2.5-coder-1.5b-instruct")
            && text.contains("gemma3-270m"),
        "{text}"
    );
    assert!(text.contains("93.8 MiB"), "{text}");

    let synthetic = fixtures::synthetic("tiny-llama-Q4_K_M.gguf");
    let out = run(&["inspect", synthetic.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("arch:      llama"), "{text}");
    assert!(
        text.contains("token_embd.weight") && text.contains("Q4_K"),
        "{text}"
    );

    let out = run(&["inspect", "/nonexistent/model.gguf"]);
    assert!(
        stderr(&out).contains("no such file: /nonexistent/model.gguf"),
        "{}",
        stderr(&out)
    );
}
