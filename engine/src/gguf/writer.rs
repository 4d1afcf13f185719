//! GGUF writer: metadata and tensors, with the tensor data aligned.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use super::{tensor_size, GgmlType, GgufError, Metadata, Value, ValueType, DEFAULT_ALIGNMENT};

struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF file. Tensor data may be borrowed (e.g. from another map) or owned.
///
/// ```no_run
/// # use owl_engine::gguf::{GgmlType, GgufWriter};
/// # fn main() -> Result<(), owl_engine::gguf::GgufError> {
/// # let bytes = vec![0u8; 256 * 608 * 4];
/// # let path = std::path::Path::new("tiny.gguf");
/// let mut w = GgufWriter::new();
/// w.set("general.architecture", "llama");
/// w.add_tensor("token_embd.weight", &[256, 608], GgmlType::F32, bytes)?;
/// w.write_file(path)?;
/// # Ok(())
/// # }
/// ```
pub struct GgufWriter<'a> {
    version: u32,
    metadata: Metadata,
    tensors: Vec<PendingTensor<'a>>,
}

impl std::fmt::Debug for GgufWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// A GGUF v3 writer.
    pub fn new() -> GgufWriter<'a> {
        GgufWriter {
            version: 3,
            metadata: Metadata::new(),
            tensors: Vec::new(),
        }
    }

    /// Writes GGUF `version` (2 or 3; both share one layout).
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Starts from existing metadata (e.g. another file's, to rewrite it).
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets a metadata key. Arrays must hold values of one type.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata.insert(key, value);
        self
    }

    /// Sets `general.alignment` (a power of two).
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.set("general.alignment", alignment)
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a tensor; `data` must be exactly the size `dims` and `ty` imply.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let data = data.into();
        if dims.len() > super::MAX_DIMS {
            return Err(GgufError::Write(format!(
                "tensor '{name}' has {} dimensions, at most {}",
                dims.len(),
                super::MAX_DIMS
            )));
        }
        let size = tensor_size(&name, dims, ty).map_err(GgufError::Write)?;
        if size != data.len() as u64 {
            return Err(GgufError::Write(format!(
                "tensor '{name}' {} {dims:?} needs {size} bytes, got {}",
                ty.name(),
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::Write(format!("duplicate tensor name '{name}'")));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// The tensor data alignment: `general.alignment`, or GGUF's default.
    pub fn alignment(&self) -> Result<u64, GgufError> {
        let a: u64 = self
            .metadata
            .get_or("general.alignment", DEFAULT_ALIGNMENT as u64)?;
        if a == 0 || !a.is_power_of_two() {
            return Err(GgufError::Write(format!(
                "general.alignment = {a} is not a power of two"
            )));
        }
        Ok(a)
    }

    /// Serialises the whole file into memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the file to `path` (through a buffer).
    pub fn write_file(&self, path: &Path) -> Result<u64, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        let n = self.write_to(&mut w)?;
        w.flush().map_err(io)?;
        Ok(n)
    }

    /// Writes the file; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<u64, GgufError> {
        let entries: Vec<TensorEntry> = self
            .tensors
            .iter()
            .map(|t| TensorEntry {
                name: &t.name,
                dims: &t.dims,
                ty: t.ty,
            })
            .collect();
        let align = self.alignment()?;
        let mut n = self.write_header(w, &entries)?;
        let mut w = Counting { inner: w, n };
        for t in &self.tensors {
            w.put(&t.data)?;
            w.pad(align)?;
        }
        n = w.n;
        Ok(n)
    }

    /// Writes the header, the metadata and a tensor table of `tensors` (which
    /// replace any added with [`add_tensor`](Self::add_tensor)), padded to the
    /// alignment; the caller streams each tensor's data after it, padded the same
    /// way. Returns the bytes written.
    pub fn write_header<W: Write>(
        &self,
        w: &mut W,
        tensors: &[TensorEntry],
    ) -> Result<u64, GgufError> {
        if !(2..=3).contains(&self.version) {
            return Err(GgufError::UnsupportedVersion(self.version));
        }
        let align = self.alignment()?;
        let mut w = Counting { inner: w, n: 0 };
        w.put(&super::GGUF_MAGIC)?;
        w.put(&self.version.to_le_bytes())?;
        w.put(&(tensors.len() as u64).to_le_bytes())?;
        w.put(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in self.metadata.iter() {
            w.string(key)?;
            let ty = value.value_type();
            w.put(&(ty as u32).to_le_bytes())?;
            write_value(&mut w, key, value)?;
        }
        let mut offset = 0u64;
        for t in tensors {
            let size = tensor_size(t.name, t.dims, t.ty).map_err(GgufError::Write)?;
            w.string(t.name)?;
            w.put(&(t.dims.len() as u32).to_le_bytes())?;
            for d in t.dims {
                w.put(&d.to_le_bytes())?;
            }
            w.put(&t.ty.id().to_le_bytes())?;
            w.put(&offset.to_le_bytes())?;
            offset = (offset + size).next_multiple_of(align);
        }
        w.pad(align)?;
        Ok(w.n)
    }
}

/// One entry of a tensor table written by [`GgufWriter::write_header`].
#[derive(Debug, Clone, Copy)]
pub struct TensorEntry<'a> {
    pub name: &'a str,
    pub dims: &'a [u64],
    pub ty: GgmlType,
}

struct Counting<'w, W: Write> {
    inner: &'w mut W,
    n: u64,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, b: &[u8]) -> Result<(), GgufError> {
        self.inner
            .write_all(b)
            .map_err(|e| GgufError::Write(e.to_string()))?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), GgufError> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    fn pad(&mut self, align: u64) -> Result<(), GgufError> {
        let pad = self.n.next_multiple_of(align) - self.n;
        const ZEROS: [u8; 64] = [0; 64];
        let mut left = pad;
        while left > 0 {
            let k = left.min(64) as usize;
            self.put(&ZEROS[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
}

fn write_value<W: Write>(w: &mut Counting<'_, W>, key: &str, v: &Value) -> Result<(), GgufError> {
    match v {
        Value::U8(x) => w.put(&x.to_le_bytes()),
        Value::I8(x) => w.put(&x.to_le_bytes()),
        Value::U16(x) => w.put(&x.to_le_bytes()),
        Value::I16(x) => w.put(&x.to_le_bytes()),
        Value::U32(x) => w.put(&x.to_le_bytes()),
        Value::I32(x) => w.put(&x.to_le_bytes()),
        Value::F32(x) => w.put(&x.to_le_bytes()),
        Value::Bool(x) => w.put(&[*x as u8]),
        Value::String(s) => w.string(s),
        Value::U64(x) => w.put(&x.to_le_bytes()),
        Value::I64(x) => w.put(&x.to_le_bytes()),
        Value::F64(x) => w.put(&x.to_le_bytes()),
        Value::Array(items) => {
            // An empty array has no element to take the type from; u8 is as good as any.
            let elem = items.first().map_or(ValueType::U8, Value::value_type);
            if let Some(bad) = items.iter().find(|i| i.value_type() != elem) {
                return Err(GgufError::Write(format!(
                    "metadata key '{key}': array mixes {} and {}",
                    elem.name(),
                    bad.value_type().name()
                )));
            }
            w.put(&(elem as u32).to_le_bytes())?;
            w.put(&(items.len() as u64).to_le_bytes())?;
            for item in items {
                write_value(w, key, item)?;
            }
            Ok(())
        }
    }
}
