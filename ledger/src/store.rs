//! The ledger on disk: JSON Lines under `$OWL_HOME/ledger/`, one record a line.
//!
//! JSON Lines rather than SQLite: an append is one `write` of one line, a crash can
//! only tear the last line (skipped with a warning, nothing before it lost), the
//! files read with `jq`/`grep`, and no C library is compiled into owl.
//!
//! Appends go to one writer thread that writes whatever has queued up, fsyncs once
//! (a batch), then acknowledges each record: a record is *acknowledged* once it is
//! fsynced. Front ends wait for the acknowledgement before they answer, so an answer
//! a client received is on disk. `ledger.jsonl` rotates to `ledger.<unix-ms>.jsonl`
//! when it passes [`Options::max_bytes`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::Record;

/// The file records are appended to; older ones are `ledger.<unix-ms>.jsonl`.
pub const CURRENT: &str = "ledger.jsonl";
/// Default rotation size.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// `$OWL_HOME/ledger`.
pub fn default_dir(owl_home: &Path) -> PathBuf {
    owl_home.join("ledger")
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Rotate `ledger.jsonl` once it is this big.
    pub max_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Called once a record is fsynced (Ok) or could not be written (Err, the reason).
pub type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;

enum Msg {
    Append(Box<Record>, Option<Ack>),
    Stop,
}

/// The writer: cheap to share (appends take `&self`).
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    dir: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("dir", &self.dir).finish()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> crate::Error {
    crate::Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

impl Ledger {
    /// Opens (creating) the ledger in `dir`. A torn last line, left by a crash in
    /// the middle of a write, is cut off; the returned warnings say so.
    pub fn open(dir: &Path, opts: Options) -> crate::Result<(Ledger, Vec<String>)> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join(CURRENT);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut warnings = Vec::new();
        if let Some(cut) = torn_tail(&mut file).map_err(|e| io_err(&path, e))? {
            file.set_len(cut.keep).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
            warnings.push(format!(
                "ledger {}: dropped a torn last line of {} bytes (a write cut short by a crash); every record before it is kept",
                path.display(),
                cut.dropped
            ));
        }
        let (tx, rx) = mpsc::channel();
        let d = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("owl-ledger".into())
            .spawn(move || writer(rx, file, d, opts))
            .map_err(|e| io_err(dir, e))?;
        Ok((
            Ledger {
                tx,
                dir: dir.to_path_buf(),
                thread: Some(thread),
            },
            warnings,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a record; `ack` runs once it is fsynced (or failed).
    pub fn append(&self, rec: Record, ack: Option<Ack>) {
        if let Err(mpsc::SendError(Msg::Append(_, Some(ack)))) =
            self.tx.send(Msg::Append(Box::new(rec), ack))
        {
            ack(Err("the ledger writer has stopped".into()));
        }
    }

    /// Appends and waits until the record is fsynced.
    pub fn append_sync(&self, rec: Record) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.append(rec, Some(Box::new(move |r| drop(tx.send(r)))));
        rx.recv()
            .unwrap_or_else(|_| Err("the ledger writer has stopped".into()))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Cut {
    keep: u64,
    dropped: u64,
}

/// Where a file's last complete line ends, when bytes follow it.
fn torn_tail(f: &mut File) -> std::io::Result<Option<Cut>> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    // Read backwards in blocks until a newline is found.
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if end == len && buf[n - 1] == b'\n' {
            return Ok(None);
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            return Ok(Some(Cut {
                keep,
                dropped: len - keep,
            }));
        }
        if start == 0 {
            return Ok(Some(Cut {
                keep: 0,
                dropped: len,
            }));
        }
        end = start;
    }
}

/// Records that failed to reach the disk (a full disk, an I/O error) are held in
/// memory and written before the next batch, up to this many bytes; past it the
/// oldest are dropped, each drop said once on stderr.
const HELD_MAX_BYTES: usize = 16 << 20;

/// The writer's view of the file: the length that ends its last good line, and the
/// lines still owed to it.
struct Tail {
    path: PathBuf,
    /// Bytes up to the end of the last fsynced line.
    good: u64,
    /// A failed write may have left part of a line past `good`: cut it before writing.
    dirty: bool,
    /// Lines not yet on disk, oldest first (each ends in a newline).
    held: Vec<Vec<u8>>,
    held_bytes: usize,
}

impl Tail {
    /// Writes the held lines and then `lines`, fsyncs, and says whether they are on disk.
    /// On failure the file is cut back to its last good length (so it stays valid JSON
    /// Lines) and every line is held for the next call.
    fn write(&mut self, file: &mut File, lines: Vec<Vec<u8>>) -> Result<(), String> {
        let retried = self.held.len();
        for l in lines {
            self.held_bytes += l.len();
            self.held.push(l);
        }
        let mut dropped = 0;
        while self.held_bytes > HELD_MAX_BYTES && self.held.len() > 1 {
            self.held_bytes -= self.held.remove(0).len();
            dropped += 1;
        }
        if dropped > 0 {
            eprintln!(
                "owl: ledger {}: dropped the {dropped} oldest records held in memory (more than {} MiB waiting for the disk)",
                self.path.display(),
                HELD_MAX_BYTES >> 20
            );
        }
        if self.held.is_empty() {
            return Ok(());
        }
        let bytes = self.held.concat();
        let attempt = (|| {
            if self.dirty {
                file.set_len(self.good)?;
            }
            // From here until the fsync returns, the file may hold part of a line.
            self.dirty = true;
            file.write_all(&bytes)?;
            file.sync_data()
        })();
        match attempt {
            Ok(()) => {
                self.good += bytes.len() as u64;
                self.dirty = false;
                if retried > 0 {
                    eprintln!(
                        "owl: ledger {}: writing works again; {retried} held records written",
                        self.path.display()
                    );
                }
                self.held.clear();
                self.held_bytes = 0;
                Ok(())
            }
            Err(e) => {
                // Cut a torn line off now, so the file reads back whole even if owl stops here.
                if file.set_len(self.good).and_then(|()| file.sync_data()).is_ok() {
                    self.dirty = false;
                }
                let n = self.held.len();
                let msg = format!(
                    "cannot write the ledger {}: {e}; {n} record{} held in memory and retried with the next write (free space, or fix the disk, before owl stops)",
                    self.path.display(),
                    if n == 1 { "" } else { "s" }
                );
                // One line a failure streak, not one a request.
                if retried == 0 {
                    eprintln!("owl: {msg}");
                }
                Err(msg)
            }
        }
    }
}

fn writer(rx: mpsc::Receiver<Msg>, mut file: File, dir: PathBuf, opts: Options) {
    let mut tail = Tail {
        path: dir.join(CURRENT),
        good: file.metadata().map(|m| m.len()).unwrap_or(0),
        dirty: false,
        held: Vec::new(),
        held_bytes: 0,
    };
    loop {
        let Ok(first) = rx.recv() else { return };
        // A batch: everything queued by now, written together and fsynced once.
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let mut stop = false;
        let mut acks = Vec::new();
        let mut lines = Vec::new();
        for m in batch {
            match m {
                Msg::Append(rec, ack) => {
                    // Serializing plain numbers and strings cannot fail.
                    if let Ok(mut line) = serde_json::to_vec(&rec) {
                        line.push(b'\n');
                        lines.push(line);
                    }
                    acks.extend(ack);
                }
                Msg::Stop => stop = true,
            }
        }
        let result = tail.write(&mut file, lines);
        for ack in acks {
            ack(result.clone());
        }
        if tail.good >= opts.max_bytes && !tail.dirty {
            match rotate(&dir) {
                Ok(f) => {
                    file = f;
                    tail.good = 0;
                }
                Err(e) => eprintln!("owl: cannot rotate the ledger {}: {e}", tail.path.display()),
            }
        }
        if stop {
            if !tail.held.is_empty() {
                eprintln!(
                    "owl: ledger {}: {} records could not be written before owl stopped and are lost",
                    tail.path.display(),
                    tail.held.len()
                );
            }
            return;
        }
    }
}

/// Renames `ledger.jsonl` to `ledger.<unix-ms>.jsonl` and opens a fresh one.
fn rotate(dir: &Path) -> std::io::Result<File> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut target = dir.join(format!("ledger.{ms}.jsonl"));
    let mut n = ms;
    while target.exists() {
        n += 1;
        target = dir.join(format!("ledger.{n}.jsonl"));
    }
    std::fs::rename(dir.join(CURRENT), &target)?;
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(dir.join(CURRENT))?;
    // The rename and the new file survive a crash only once the folder is synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(f)
}

/// The ledger's files, oldest first: rotated ones by their time, then `ledger.jsonl`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u128, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix("ledger.")?
                .strip_suffix(".jsonl")?
                .parse::<u128>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort();
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let cur = dir.join(CURRENT);
    if cur.exists() {
        out.push(cur);
    }
    out
}

/// Every record in `dir` (none when it does not exist), oldest first, and a warning
/// for each line that is not a record (a torn last line, a damaged one): those are
/// skipped, never fatal.
pub fn read_all(dir: &Path) -> (Vec<Record>, Vec<String>) {
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for path in files(dir) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                warnings.push(format!("ledger {}: cannot read it: {e}", path.display()));
                continue;
            }
        };
        let torn = !bytes.is_empty() && bytes.last() != Some(&b'\n');
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let n = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => records.push(r),
                Err(_) if torn && i + 1 == n => warnings.push(format!(
                    "ledger {}: skipped a torn last line of {} bytes (a write cut short by a crash)",
                    path.display(),
                    line.len()
                )),
                Err(e) => warnings.push(format!("ledger {}:{}: skipped a line that is not a record: {e}", path.display(), i + 1)),
            }
        }
    }
    (records, warnings)
}
