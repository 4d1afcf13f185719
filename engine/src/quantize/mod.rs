//! `owl quantize`: rewrite a GGUF model with its weights in another type, as
//! llama-quantize does without an importance matrix, byte for byte.
//!
//! [`plan`] decides every tensor's output type ([`recipe`]), [`write`] streams the
//! file: metadata copied with `general.quantization_version` and
//! `general.file_type` moved to the end (as `gguf_set_val` re-appends them),
//! tensors in llama.cpp's loader order (by layer, then name), each converted in
//! parallel over its rows and written as it is done, into a temporary file in the
//! output's directory that is renamed over the output only when complete.

pub mod recipe;
mod write;

use std::path::PathBuf;

use owl_quant::{GgmlType, QuantError};
use rayon::prelude::*;

use crate::gguf::{Gguf, GgufError, Metadata};
pub use recipe::ModelFacts;
pub use write::{parse_split_size, split_part_paths, write};

/// `GGML_QNT_VERSION`.
pub const QNT_VERSION: u32 = 2;

/// A llama.cpp file type (`llama_ftype`): the default weight type of a file and,
/// for the K-quant mixes, which tensors get more bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q2KS,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
    IQ4NL,
    IQ4XS,
}

impl FileType {
    pub const ALL: [FileType; 20] = {
        use FileType::*;
        [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q2KS, Q3KS, Q3KM, Q3KL, Q4KS, Q4KM, Q5KS, Q5KM, Q6K,
            IQ4NL, IQ4XS, F16, BF16, F32,
        ]
    };

    /// llama-quantize's name for it (`Q4_K_M`, ...).
    pub fn name(self) -> &'static str {
        use FileType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q2K => "Q2_K",
            Q2KS => "Q2_K_S",
            Q3KS => "Q3_K_S",
            Q3KM => "Q3_K_M",
            Q3KL => "Q3_K_L",
            Q4KS => "Q4_K_S",
            Q4KM => "Q4_K_M",
            Q5KS => "Q5_K_S",
            Q5KM => "Q5_K_M",
            Q6K => "Q6_K",
            IQ4NL => "IQ4_NL",
            IQ4XS => "IQ4_XS",
        }
    }

    /// The `general.file_type` value (`llama_ftype`).
    pub fn id(self) -> u32 {
        use FileType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2K => 10,
            Q3KS => 11,
            Q3KM => 12,
            Q3KL => 13,
            Q4KS => 14,
            Q4KM => 15,
            Q5KS => 16,
            Q5KM => 17,
            Q6K => 18,
            Q2KS => 21,
            IQ4NL => 25,
            IQ4XS => 30,
            BF16 => 32,
        }
    }

    /// The type most weights get.
    pub fn default_type(self) -> GgmlType {
        use FileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2K | Q2KS => GgmlType::Q2_K,
            Q3KS | Q3KM | Q3KL => GgmlType::Q3_K,
            Q4KS | Q4KM => GgmlType::Q4_K,
            Q5KS | Q5KM => GgmlType::Q5_K,
            Q6K => GgmlType::Q6_K,
            IQ4NL => GgmlType::IQ4_NL,
            IQ4XS => GgmlType::IQ4_XS,
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to make: a file type, or `COPY` (every tensor as it is, metadata rewritten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    File(FileType),
    Copy,
}

impl Target {
    /// Parses a type name as llama-quantize takes it (case-insensitive).
    pub fn parse(s: &str) -> Result<Target, QuantizeError> {
        if s.eq_ignore_ascii_case("COPY") {
            return Ok(Target::Copy);
        }
        FileType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .map(Target::File)
            .ok_or_else(|| QuantizeError::BadType(s.to_string()))
    }
}

/// The names [`Target::parse`] accepts, for help and error text.
pub fn type_names() -> String {
    let mut v: Vec<&str> = FileType::ALL.iter().map(|t| t.name()).collect();
    v.push("COPY");
    v.join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("unknown quantization type `{0}`; use one of {names}", names = type_names())]
    BadType(String),
    #[error("tensor '{tensor}' is already quantized ({ty}); quantizing it again loses quality, pass --allow-requantize to do it anyway")]
    Requantize { tensor: String, ty: GgmlType },
    #[error("tensor '{tensor}': Q2_K_S writes Q2_K tensors that need an importance matrix (llama-quantize refuses it without one), and owl quantize takes none; use Q2_K or Q3_K_S")]
    NeedsImatrix { tensor: String },
    #[error("tensor '{tensor}' needs type {ty}, which owl cannot write yet")]
    Unsupported { tensor: String, ty: GgmlType },
    #[error("{0}")]
    Recipe(String),
    #[error("output directory {} does not exist", .0.display())]
    NoOutputDir(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("tensor '{tensor}': {source}")]
    Quant {
        tensor: String,
        #[source]
        source: QuantError,
    },
}

/// Whether GGML counts `ty` as quantized (`ggml_is_quantized`).
pub fn is_quantized(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// One tensor of the output.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    /// Index into the input's tensor table.
    pub index: usize,
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// Bytes of the output tensor.
    pub bytes: u64,
}

impl PlanEntry {
    /// Whether the data is converted (otherwise it is copied as it is).
    pub fn converts(&self) -> bool {
        self.from != self.to
    }
}

/// The whole output: metadata and tensors in file order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub metadata: Metadata,
    pub file_type: u32,
    pub tensors: Vec<PlanEntry>,
    /// Tensors converted from a quantized type (they lose quality twice).
    pub requantized: Vec<String>,
    /// Tensors that got a fallback type because their rows do not divide into blocks.
    pub n_fallback: usize,
}

impl Plan {
    pub fn bytes_in(&self, g: &Gguf) -> u64 {
        self.tensors
            .iter()
            .map(|e| g.tensors()[e.index].size as u64)
            .sum()
    }

    pub fn bytes_out(&self) -> u64 {
        self.tensors.iter().map(|e| e.bytes).sum()
    }
}

/// llama.cpp's loader order: tensors outside the layers first, then by layer,
/// by name within each (`weight_name_comparer`: the number `sscanf("blk.%d.")` reads).
fn loader_key(name: &str) -> (i64, &str) {
    let layer = name
        .strip_prefix("blk.")
        .and_then(|r| {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            r[..digits].parse::<i64>().ok()
        })
        .unwrap_or(-1);
    (layer, name)
}

/// Decides every tensor's output type and the output metadata.
pub fn plan(g: &Gguf, target: Target, allow_requantize: bool) -> Result<Plan, QuantizeError> {
    let opts = PlanOptions {
        allow_requantize,
        ..PlanOptions::default()
    };
    plan_with(g, target, &opts)
}

/// llama-quantize's options beyond the file type.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Dequantize and quantize again tensors that are already quantized.
    pub allow_requantize: bool,
    /// `--pure`: every quantized tensor gets the file type's default type (no
    /// mixes, no output/embedding rule, no fallbacks).
    pub pure: bool,
    /// `--leave-output-tensor`: `output.weight` stays as it is.
    pub leave_output: bool,
    /// `--output-tensor-type`.
    pub output_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embd_type: Option<GgmlType>,
}

/// [`plan`] with llama-quantize's other options.
pub fn plan_with(g: &Gguf, target: Target, opts: &PlanOptions) -> Result<Plan, QuantizeError> {
    let allow_requantize = opts.allow_requantize;
    let facts = ModelFacts::of(g);
    let mut order: Vec<usize> = (0..g.tensors().len()).collect();
    order.sort_by(|&a, &b| loader_key(&g.tensors()[a].name).cmp(&loader_key(&g.tensors()[b].name)));

    let mut st = recipe::RecipeState::default();
    let mut tensors = Vec::with_capacity(order.len());
    let mut requantized = Vec::new();
    for index in order {
        let t = &g.tensors()[index];
        let quantizable =
            recipe::is_quantizable(t) && !(opts.leave_output && t.name == "output.weight");
        let to = match target {
            Target::File(ft) if quantizable => {
                let mut to = if opts.pure || !is_quantized(ft.default_type()) {
                    ft.default_type()
                } else {
                    recipe::tensor_type(&facts, &mut st, ft, t).map_err(QuantizeError::Recipe)?
                };
                match t.name.as_str() {
                    "token_embd.weight" => to = opts.token_embd_type.unwrap_or(to),
                    "output.weight" => to = opts.output_type.unwrap_or(to),
                    _ => {}
                }
                to
            }
            _ => t.ty,
        };
        // llama-quantize's tensor_requires_imatrix: in a Q2_K_S file, Q2_K tensors other than
        // the token embedding and the output need an importance matrix.
        if matches!(target, Target::File(FileType::Q2KS))
            && to == GgmlType::Q2_K
            && !matches!(t.name.as_str(), "token_embd.weight" | "output.weight")
        {
            return Err(QuantizeError::NeedsImatrix {
                tensor: t.name.clone(),
            });
        }
        if to != t.ty {
            if is_quantized(t.ty) {
                if !allow_requantize {
                    return Err(QuantizeError::Requantize {
                        tensor: t.name.clone(),
                        ty: t.ty,
                    });
                }
                requantized.push(t.name.clone());
            }
            if !to.can_quantize() {
                return Err(QuantizeError::Unsupported {
                    tensor: t.name.clone(),
                    ty: to,
                });
            }
        }
        let bytes =
            crate::gguf::tensor_size(&t.name, &t.dims, to).map_err(QuantizeError::Recipe)?;
        tensors.push(PlanEntry {
            index,
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.ty,
            to,
            bytes,
        });
    }

    let file_type = match target {
        Target::File(ft) => ft.id(),
        Target::Copy => match g.metadata().get_opt::<u32>("general.file_type")? {
            Some(v) => v,
            None => guess_file_type(g),
        },
    };
    let mut metadata = g.metadata().clone();
    for key in ["general.quantization_version", "general.file_type"] {
        metadata.remove(key);
    }
    metadata.insert("general.quantization_version", QNT_VERSION);
    metadata.insert("general.file_type", file_type);
    for key in ["split.no", "split.count", "split.tensors.count"] {
        metadata.remove(key);
    }
    Ok(Plan {
        metadata,
        file_type,
        tensors,
        requantized,
        n_fallback: st.n_fallback,
    })
}

/// llama_model_loader's guess when a file has no `general.file_type`: the file
/// type of its most common tensor type.
fn guess_file_type(g: &Gguf) -> u32 {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in g.tensors() {
        match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some(c) => c.1 += 1,
            None => counts.push((t.ty, 1)),
        }
    }
    let most = counts
        .iter()
        .max_by_key(|c| c.1)
        .map_or(GgmlType::F32, |c| c.0);
    FileType::ALL
        .iter()
        .find(|f| f.default_type() == most)
        .map_or(0, |f| f.id())
}

/// Elements a parallel work item covers at least.
const CHUNK_ELEMENTS: usize = 64 * 1024;

/// Converts one tensor's data from `from` to `to`, in parallel over rows.
pub(crate) fn convert(e: &PlanEntry, data: &[u8]) -> Result<Vec<u8>, QuantizeError> {
    let qerr = |source| QuantizeError::Quant {
        tensor: e.name.clone(),
        source,
    };
    let row = e.dims.first().copied().unwrap_or(1) as usize;
    let n: usize = e.dims.iter().product::<u64>() as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    let rows_per_chunk = (CHUNK_ELEMENTS / row.max(1)).max(1);
    let in_row = e
        .from
        .row_bytes(row)
        .ok_or_else(|| QuantizeError::Recipe(format!("tensor '{}': bad row", e.name)))?;
    let out_row =
        e.to.row_bytes(row)
            .ok_or_else(|| QuantizeError::Recipe(format!("tensor '{}': bad row", e.name)))?;

    let owned;
    let f32s: &[f32] = match (e.from, bytemuck::try_cast_slice::<u8, f32>(data)) {
        (GgmlType::F32, Ok(v)) => v,
        _ => {
            let mut v = vec![0f32; n];
            v.par_chunks_mut(rows_per_chunk * row)
                .zip(data.par_chunks(rows_per_chunk * in_row))
                .try_for_each(|(dst, src)| owl_quant::dequantize(e.from, src, dst))
                .map_err(qerr)?;
            owned = v;
            &owned
        }
    };
    let mut out = vec![0u8; e.bytes as usize];
    out.par_chunks_mut(rows_per_chunk * out_row)
        .zip(f32s.par_chunks(rows_per_chunk * row))
        .try_for_each(|(dst, src)| owl_quant::quantize(e.to, src, dst))
        .map_err(qerr)?;
    Ok(out)
}
