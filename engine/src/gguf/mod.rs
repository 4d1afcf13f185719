//! GGUF v2/v3 reader and writer.
//!
//! The file is memory-mapped and parsed with a bound on every length it declares:
//! strings, arrays (and their nesting), dimension counts, element counts and every
//! tensor's `offset + size` are checked against what the file holds before anything
//! is allocated or sliced. A truncated, corrupt or hostile file gives one
//! [`GgufError`] and never a panic. Tensor data is never copied: [`Gguf::tensor_data`]
//! is a view into the map and [`Gguf::tensor_owner`] hands out the map itself.
//!
//! Split models (`name-00001-of-00003.gguf`, with `split.count` / `split.no` /
//! `split.tensors.count`) open as one model: [`Gguf::open`] on the first part finds
//! the others beside it.

mod metadata;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use metadata::{FromValue, Metadata, Value, ValueType};
pub use owl_quant::GgmlType;
pub use writer::{GgufWriter, TensorEntry};

/// `"GGUF"` as the first four bytes of the file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are refused (bounds recursion on hostile input).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// The bytes of one GGUF file: a memory map, or any owned buffer (tests).
pub type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error inside a named file (wraps the others with the path).
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<GgufError>,
    },
    #[error("not a GGUF file: starts with {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported GGUF version {0} (owl reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated: {what} at byte {offset} needs {need} bytes, only {available} left")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        available: u64,
    },
    #[error("corrupt GGUF at byte {offset}: {msg}")]
    Corrupt { offset: u64, msg: String },
    #[error("tensor '{tensor}' has unknown tensor type {ty}")]
    UnknownTensorType { tensor: String, ty: u32 },
    #[error("tensor '{tensor}' lies outside the file: bytes {start}..{end}, file has {file_len}")]
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("missing metadata key '{key}'")]
    MissingKey { key: String },
    #[error("metadata key '{key}' is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("split model: {0}")]
    Split(String),
    #[error("cannot write GGUF: {0}")]
    Write(String),
}

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// One tensor of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: `dims[0]` is the row length (ne0), `dims[1]` the number of rows, ...
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset in its file.
    pub offset: usize,
    /// Bytes of data.
    pub size: usize,
    /// Index of the split file that holds it (0 unless the model is split).
    pub file: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (ne0).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of every dimension after the first.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A parsed GGUF model (one file, or every part of a split model).
pub struct Gguf {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    files: Vec<Bytes>,
    paths: Vec<PathBuf>,
    alignment: usize,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("files", &self.paths)
            .finish()
    }
}

impl Gguf {
    /// Maps and parses `path`; if it is the first part of a split model, the other
    /// parts (`<prefix>-0000N-of-0000M.gguf` in the same folder) are opened too.
    pub fn open(path: &Path) -> Result<Gguf> {
        let first = map_file(path)?;
        let head = parse_file(first.as_ref().as_ref()).map_err(|e| in_file(path, e))?;
        let count = split_count(&head.metadata).map_err(|e| in_file(path, e))?;
        if count <= 1 {
            return Gguf::assemble(vec![first], vec![head], vec![path.to_path_buf()]);
        }
        let split_no: u32 = head
            .metadata
            .get("split.no")
            .map_err(|e| in_file(path, e))?;
        let parts = split_paths(path, count)?;
        if split_no != 0 {
            return Err(GgufError::Split(format!(
                "{} is part {} of {count}; open the first part, {}",
                path.display(),
                split_no + 1,
                parts[0].display()
            )));
        }
        let mut files = vec![first];
        let mut parsed = vec![head];
        for p in &parts[1..] {
            if !p.is_file() {
                return Err(GgufError::Split(format!(
                    "{} is part 1 of {count} but part {} is missing (expected it beside the first)",
                    path.display(),
                    p.display()
                )));
            }
            let bytes = map_file(p)?;
            parsed.push(parse_file(bytes.as_ref().as_ref()).map_err(|e| in_file(p, e))?);
            files.push(bytes);
        }
        Gguf::assemble(files, parsed, parts)
    }

    /// Parses one in-memory GGUF file (split metadata is not followed).
    pub fn from_bytes(bytes: Bytes) -> Result<Gguf> {
        Gguf::from_parts(vec![bytes])
    }

    /// Parses the parts of a split model, in order (a single part is a plain file).
    pub fn from_parts(parts: Vec<Bytes>) -> Result<Gguf> {
        let parsed = parts
            .iter()
            .map(|b| parse_file(b.as_ref().as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let paths = (0..parts.len())
            .map(|i| PathBuf::from(format!("<memory part {}>", i + 1)))
            .collect();
        Gguf::assemble(parts, parsed, paths)
    }

    fn assemble(files: Vec<Bytes>, parsed: Vec<ParsedFile>, paths: Vec<PathBuf>) -> Result<Gguf> {
        let n = parsed.len();
        if n > 1 {
            check_split(&parsed, &paths)?;
        }
        let mut parsed = parsed.into_iter();
        let first = parsed
            .next()
            .ok_or_else(|| GgufError::Split("no parts given".into()))?;
        let (version, alignment, metadata) = (first.version, first.alignment, first.metadata);
        let mut tensors = first.tensors;
        for (i, part) in parsed.enumerate() {
            tensors.extend(part.tensors.into_iter().map(|mut t| {
                t.file = i + 1;
                t
            }));
        }
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(GgufError::Split(format!(
                    "tensor '{}' appears in more than one part ({})",
                    t.name,
                    paths[t.file].display()
                )));
            }
        }
        if n > 1 {
            if let Some(total) = metadata.get_opt::<u64>("split.tensors.count")? {
                if total != tensors.len() as u64 {
                    return Err(GgufError::Split(format!(
                        "split.tensors.count says {total} tensors, the {n} parts hold {}",
                        tensors.len()
                    )));
                }
            }
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            by_name,
            files,
            paths,
            alignment,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `general.architecture` (required).
    pub fn arch(&self) -> Result<&str> {
        self.metadata.get("general.architecture")
    }

    /// Tensor data alignment of the (first) file.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// The files the model was read from (one per split part).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's bytes, a view into the map.
    ///
    /// # Panics
    /// If `t` does not come from this `Gguf` (its range was checked at parse time).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let file: &[u8] = self.files[t.file].as_ref().as_ref();
        &file[t.offset..t.offset + t.size]
    }

    /// The mapping that holds `t`: `owner[t.offset .. t.offset + t.size]` is its data.
    /// Lets a backend keep weights alive without copying them.
    pub fn tensor_owner(&self, t: &TensorInfo) -> Bytes {
        Arc::clone(&self.files[t.file])
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size as u64).sum()
    }
}

fn in_file(path: &Path, e: GgufError) -> GgufError {
    GgufError::File {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

fn map_file(path: &Path) -> Result<Bytes> {
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only. As with every mmap-based loader (llama.cpp
    // included), a file truncated by another process while mapped is outside what
    // we can defend against; files in the owl cache are only ever replaced by rename.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Arc::new(map))
}

fn split_count(md: &Metadata) -> Result<u32> {
    md.get_or("split.count", 1u32)
}

/// `dir/prefix-00001-of-00003.gguf` -> the paths of all `count` parts.
fn split_paths(first: &Path, count: u32) -> Result<Vec<PathBuf>> {
    let name = first.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parsed = name.strip_suffix(".gguf").and_then(|stem| {
        let (rest, total) = stem.rsplit_once("-of-")?;
        let (prefix, no) = rest.rsplit_once('-')?;
        let ok = no.len() == 5
            && total.len() == 5
            && no.bytes().all(|b| b.is_ascii_digit())
            && total.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| (prefix.to_string(), total.parse::<u32>().ok()))
    });
    match parsed {
        Some((prefix, Some(total))) if total == count => {
            let dir = first.parent().unwrap_or(Path::new(""));
            Ok((1..=count)
                .map(|i| dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf")))
                .collect())
        }
        _ => Err(GgufError::Split(format!(
            "{} says split.count = {count}, but its name does not follow \
             <name>-00001-of-{count:05}.gguf, so the other parts cannot be found",
            first.display()
        ))),
    }
}

fn check_split(parsed: &[ParsedFile], paths: &[PathBuf]) -> Result<()> {
    let n = parsed.len() as u32;
    for (i, (p, path)) in parsed.iter().zip(paths).enumerate() {
        let ctx = |e| in_file(path, e);
        let count: u32 = p.metadata.get("split.count").map_err(ctx)?;
        let no: u32 = p.metadata.get("split.no").map_err(ctx)?;
        if count != n || no != i as u32 {
            return Err(GgufError::Split(format!(
                "{} says it is part {} of {count}, expected part {} of {n}",
                path.display(),
                no + 1,
                i + 1
            )));
        }
    }
    Ok(())
}

/// One file's header, metadata and tensor table.
struct ParsedFile {
    version: u32,
    alignment: usize,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, what: &str, need: u64) -> GgufError {
        GgufError::Truncated {
            what: what.to_string(),
            offset: self.pos as u64,
            need,
            available: self.remaining() as u64,
        }
    }

    fn corrupt(&self, msg: String) -> GgufError {
        GgufError::Corrupt {
            offset: self.pos as u64,
            msg,
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(self.truncated(what, n));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            // Token texts are not always valid UTF-8 in the wild; keep the value.
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::Corrupt {
            offset: self.pos as u64 - 4,
            msg: format!("{what}: unknown metadata value type {id}"),
        })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        const W: &str = "metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(W)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(W)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(W)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(W)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(W)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(W)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(W)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(W)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(W)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(W)?)),
            ValueType::Bool => match self.array::<1>(W)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    self.pos -= 1;
                    return Err(self.corrupt(format!("bool value {b} is neither 0 nor 1")));
                }
            },
            ValueType::String => Value::String(self.string("metadata string")?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(format!(
                        "arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                    )));
                }
                let elem = self.value_type("array element type")?;
                let n = self.u64("array length")?;
                // Every element takes at least min_size bytes: bound n before allocating.
                let need = n.saturating_mul(elem.min_size());
                if need > self.remaining() as u64 {
                    return Err(self.truncated(&format!("array of {n} {}", elem.name()), need));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
        })
    }
}

fn parse_file(buf: &[u8]) -> Result<ParsedFile> {
    let mut r = Reader { buf, pos: 0 };
    if buf.len() < 4 || buf[..4] != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            found: buf[..buf.len().min(4)].to_vec(),
        });
    }
    r.pos = 4;
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;

    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    if n_kv
        .checked_mul(13)
        .is_none_or(|b| b > r.remaining() as u64)
    {
        return Err(r.corrupt(format!(
            "{n_kv} metadata entries cannot fit in the {} bytes left",
            r.remaining()
        )));
    }
    let mut metadata = Metadata::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key_at = r.pos;
        let key = r.string("metadata key")?;
        let ty = r
            .value_type("metadata value type")
            .map_err(|e| with_key(e, &key))?;
        let value = r.value(ty, 0).map_err(|e| with_key(e, &key))?;
        if metadata.contains_key(&key) {
            return Err(GgufError::Corrupt {
                offset: key_at as u64,
                msg: format!("duplicate metadata key '{key}'"),
            });
        }
        metadata.insert(key, value);
    }

    let alignment: u64 = metadata.get_or("general.alignment", DEFAULT_ALIGNMENT as u64)?;
    if alignment == 0 || !alignment.is_power_of_two() || alignment > 1 << 30 {
        return Err(r.corrupt(format!(
            "general.alignment = {alignment} is not a power of two up to 2^30"
        )));
    }
    let alignment = alignment as usize;

    // A tensor info takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    if n_tensors
        .checked_mul(24)
        .is_none_or(|b| b > r.remaining() as u64)
    {
        return Err(r.corrupt(format!(
            "{n_tensors} tensor infos cannot fit in the {} bytes left",
            r.remaining()
        )));
    }
    struct Raw {
        name: String,
        dims: Vec<u64>,
        ty: GgmlType,
        size: u64,
        rel: u64,
    }
    let mut raw = Vec::with_capacity(n_tensors as usize);
    let mut seen = HashMap::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let at = r.pos;
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(r.corrupt(format!(
                "tensor '{name}' has {n_dims} dimensions, at most {MAX_DIMS} are allowed"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64("tensor dimension")?);
        }
        let ty_id = r.u32("tensor type")?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.clone(),
            ty: ty_id,
        })?;
        let rel = r.u64("tensor offset")?;
        let size = tensor_size(&name, &dims, ty).map_err(|msg| GgufError::Corrupt {
            offset: at as u64,
            msg,
        })?;
        if !rel.is_multiple_of(alignment as u64) {
            return Err(GgufError::Corrupt {
                offset: at as u64,
                msg: format!(
                    "tensor '{name}' offset {rel} is not a multiple of the alignment {alignment}"
                ),
            });
        }
        if seen.insert(name.clone(), ()).is_some() {
            return Err(GgufError::Corrupt {
                offset: at as u64,
                msg: format!("duplicate tensor name '{name}'"),
            });
        }
        raw.push(Raw {
            name,
            dims,
            ty,
            size,
            rel,
        });
    }

    let data_start = (r.pos as u64).next_multiple_of(alignment as u64);
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    for t in raw {
        let start = data_start.checked_add(t.rel);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                name: t.name,
                dims: t.dims,
                ty: t.ty,
                offset: start as usize,
                size: t.size as usize,
                file: 0,
            }),
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name,
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                });
            }
        }
    }
    Ok(ParsedFile {
        version,
        alignment,
        metadata,
        tensors,
    })
}

fn with_key(e: GgufError, key: &str) -> GgufError {
    match e {
        GgufError::Corrupt { offset, msg } => GgufError::Corrupt {
            offset,
            msg: format!("metadata key '{key}': {msg}"),
        },
        GgufError::Truncated {
            what,
            offset,
            need,
            available,
        } => GgufError::Truncated {
            what: format!("{what} of metadata key '{key}'"),
            offset,
            need,
            available,
        },
        e => e,
    }
}

/// Bytes of a tensor with these dims and type, overflow-checked.
pub(crate) fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, String> {
    let mut n_elements: u64 = 1;
    for &d in dims {
        if d > i64::MAX as u64 {
            return Err(format!("tensor '{name}' has dimension {d}, above 2^63"));
        }
        n_elements = n_elements
            .checked_mul(d)
            .ok_or_else(|| format!("tensor '{name}' dims {dims:?}: element count overflows"))?;
    }
    let row_len = dims.first().copied().unwrap_or(1);
    let row_bytes = usize::try_from(row_len)
        .ok()
        .and_then(|n| ty.row_bytes(n))
        .ok_or_else(|| {
            format!(
                "tensor '{name}': row length {row_len} is not a whole number of {} blocks of {}",
                ty.name(),
                ty.block_len()
            )
        })?;
    if n_elements == 0 {
        return Ok(0);
    }
    let n_rows: u64 = dims.iter().skip(1).product(); // cannot overflow: divides n_elements
    (row_bytes as u64)
        .checked_mul(n_rows)
        .filter(|&b| b <= isize::MAX as u64)
        .ok_or_else(|| format!("tensor '{name}' dims {dims:?}: byte size overflows"))
}
