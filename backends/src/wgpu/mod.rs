//! The wgpu backend: WGSL compute shaders on Vulkan, Metal or DX12 (and on
//! Mesa's lavapipe where no GPU is).
//!
//! Weights are uploaded once in their GGML block layout and dequantized inside
//! the kernels (decode: a matvec fused with dequantization; prefill: a tiled
//! matmul). A weight larger than the device's storage binding limit is split by
//! rows into chunks, one dispatch each. The KV cache lives on the device. Ops
//! are recorded into one command encoder; `read` submits it and is the only
//! wait. Per-op metadata (one uniform struct per op) and small host arrays
//! (tokens, positions, cells) go through one staging ring written once per
//! submission.

mod kernels;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use half::f16;

use crate::{shape_err, AttnBatch, AttnParams, Backend, BackendError, GgmlType, Result, RopeMode, RopeParams, Tensor, TensorKind, WeightData};
use kernels::{Kernel, Shader};

/// Decode-sized batches (up to this many activation rows) use the matvec kernel.
const MATVEC_MAX_ROWS: usize = 8;
/// Initial size of the staging ring for metadata and host arrays.
const RING_BYTES: u64 = 1 << 20;

const DEVICE: &str = "wgpu";

/// What `owl devices` shows for one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Index for `--device wgpu:N` (best adapter first).
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_buffer_size: u64,
    pub max_storage_binding: u64,
    pub max_workgroup_storage: u32,
    /// The features owl's shaders could use (shader-f16, subgroup, ...).
    pub features: Vec<&'static str>,
}

fn instance() -> ::wgpu::Instance {
    let mut desc = ::wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = ::wgpu::Backends::VULKAN | ::wgpu::Backends::METAL | ::wgpu::Backends::DX12;
    ::wgpu::Instance::new(desc)
}

fn type_rank(t: ::wgpu::DeviceType) -> u8 {
    match t {
        ::wgpu::DeviceType::DiscreteGpu => 0,
        ::wgpu::DeviceType::IntegratedGpu => 1,
        ::wgpu::DeviceType::VirtualGpu => 2,
        ::wgpu::DeviceType::Cpu => 3,
        ::wgpu::DeviceType::Other => 4,
    }
}

/// Every adapter, best first (discrete, integrated, virtual, CPU emulation).
fn ranked_adapters(inst: &::wgpu::Instance) -> Vec<::wgpu::Adapter> {
    let mut v = pollster::block_on(inst.enumerate_adapters(::wgpu::Backends::all()));
    v.sort_by_key(|a| type_rank(a.get_info().device_type));
    v
}

/// The adapters `--device wgpu[:N]` can choose from.
pub fn adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    ranked_adapters(&inst)
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            let limits = a.limits();
            let f = a.features();
            let features = [
                (::wgpu::Features::SHADER_F16, "shader-f16"),
                (::wgpu::Features::SUBGROUP, "subgroup"),
                (::wgpu::Features::SHADER_INT64, "shader-int64"),
                (::wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
            ]
            .into_iter()
            .filter(|(bit, _)| f.contains(*bit))
            .map(|(_, n)| n)
            .collect();
            AdapterSummary {
                index,
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                max_buffer_size: limits.max_buffer_size,
                max_storage_binding: limits.max_storage_buffer_binding_size,
                max_workgroup_storage: limits.max_compute_workgroup_storage_size,
                features,
            }
        })
        .collect()
}

/// A weight chunk: rows `row0..row0+rows` of the weight in one buffer.
struct Chunk {
    buf: ::wgpu::Buffer,
    row0: usize,
    rows: usize,
}

/// A chunk as ops use it: (buffer, first row, rows).
type ChunkRef = (::wgpu::Buffer, usize, usize);

enum Slot {
    /// f32 activations.
    Act(::wgpu::Buffer),
    /// f16 KV cache, two values per u32.
    Kv(::wgpu::Buffer),
    Weight { ty: GgmlType, row_bytes: usize, chunks: Vec<Chunk> },
    Free,
}

/// One binding of a dispatch.
enum Bind<'a> {
    Buf(&'a ::wgpu::Buffer),
    /// Bytes staged in the ring for this dispatch (uniform metadata or a host array).
    Data(&'a [u8]),
}

pub struct WgpuBackend {
    device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    info: ::wgpu::AdapterInfo,
    limits: ::wgpu::Limits,
    /// Largest buffer we bind (the storage binding limit, capped so byte offsets fit in u32).
    max_binding: u64,
    /// Decode with one invocation per weight row (CPU-emulated adapters) rather than a workgroup per row.
    row_per_thread: bool,
    /// Largest weight chunk (max_binding unless a test asks for less).
    weight_chunk: u64,
    /// Offset alignment of ring bindings (uniform and storage).
    align: u64,
    shaders: kernels::Cache,
    slots: Vec<Slot>,
    scratch: Vec<u32>,
    spare: Vec<::wgpu::Buffer>,
    encoder: Option<::wgpu::CommandEncoder>,
    ring: ::wgpu::Buffer,
    ring_data: Vec<u8>,
    staging: Option<::wgpu::Buffer>,
    /// Errors the device reported outside an error scope (validation, out of memory, device lost).
    error: Arc<Mutex<Option<String>>>,
    noticed: HashSet<GgmlType>,
}

fn not_available(reason: impl Into<String>) -> BackendError {
    BackendError::NotAvailable { device: DEVICE.into(), reason: reason.into() }
}

fn device_err(op: &'static str, detail: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid { op, detail: format!("wgpu device error: {detail}") }
}

/// Whether the kernels read this type directly (others are converted at load).
pub fn native(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
}

fn words(v: &[u32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

impl WgpuBackend {
    /// Opens adapter `index` of [`adapters`] (the best one when `None`) with its real limits.
    pub fn new(index: Option<usize>) -> Result<Self> {
        Self::open(index, None)
    }

    /// As `new`, but splits weights into buffers of at most `limit` bytes, so that splitting
    /// large weights can be tested without hundreds of MiB of them.
    pub fn with_binding_limit(index: Option<usize>, limit: u64) -> Result<Self> {
        Self::open(index, Some(limit))
    }

    /// How many buffers weight `t` lies in.
    pub fn chunks(&self, t: &Tensor) -> usize {
        self.weight(t).map(|(_, _, c)| c.len()).unwrap_or(0)
    }

    fn open(index: Option<usize>, limit: Option<u64>) -> Result<Self> {
        let inst = instance();
        let list = ranked_adapters(&inst);
        if list.is_empty() {
            return Err(not_available(
                "no GPU adapter found (Vulkan, Metal or DX12); install a GPU driver, or Mesa's lavapipe (mesa-vulkan-drivers) to emulate one on the CPU",
            ));
        }
        let n = list.len();
        let adapter = match index {
            None => list.into_iter().next().expect("non-empty"),
            Some(i) => list.into_iter().nth(i).ok_or_else(|| not_available(format!("no adapter {i}: this machine has {n} (see `owl devices`)")))?,
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let desc = ::wgpu::DeviceDescriptor {
            label: Some("owl"),
            required_features: ::wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: ::wgpu::ExperimentalFeatures::disabled(),
            memory_hints: ::wgpu::MemoryHints::Performance,
            trace: ::wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| not_available(format!("{}: cannot open the device: {e}", info.name)))?;
        let error = Arc::new(Mutex::new(None::<String>));
        {
            let error = error.clone();
            device.on_uncaptured_error(Arc::new(move |e: ::wgpu::Error| {
                let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| e.to_string());
            }));
        }
        {
            let error = error.clone();
            device.set_device_lost_callback(move |reason, msg| {
                let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
            });
        }
        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size).min(1 << 31) & !15;
        let weight_chunk = max_binding.min(limit.unwrap_or(u64::MAX)) & !15;
        let align = (limits.min_uniform_buffer_offset_alignment.max(limits.min_storage_buffer_offset_alignment) as u64).max(16);
        // OWL_WGPU_MATVEC=rows|workgroup overrides the choice (for measuring).
        let row_per_thread = match std::env::var("OWL_WGPU_MATVEC").as_deref() {
            Ok("rows") => true,
            Ok("workgroup") => false,
            _ => info.device_type == ::wgpu::DeviceType::Cpu,
        };
        let ring = device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some("owl ring (metadata, host arrays)"),
            size: RING_BYTES,
            usage: ::wgpu::BufferUsages::UNIFORM | ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(WgpuBackend {
            device,
            queue,
            info,
            limits,
            max_binding,
            weight_chunk,
            row_per_thread,
            align,
            shaders: kernels::Cache::default(),
            slots: Vec::new(),
            scratch: Vec::new(),
            spare: Vec::new(),
            encoder: None,
            ring,
            ring_data: Vec::new(),
            staging: None,
            error,
            noticed: HashSet::new(),
        })
    }

    fn check_error(&self, op: &'static str) -> Result<()> {
        let e = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match e {
            Some(e) => Err(device_err(op, e)),
            None => Ok(()),
        }
    }

    fn push(&mut self, s: Slot) -> u32 {
        if let Some(i) = self.slots.iter().position(|s| matches!(s, Slot::Free)) {
            self.slots[i] = s;
            i as u32
        } else {
            self.slots.push(s);
            (self.slots.len() - 1) as u32
        }
    }

    fn act(&self, t: &Tensor) -> Result<::wgpu::Buffer> {
        match self.slots.get(t.id as usize) {
            Some(Slot::Act(b)) => Ok(b.clone()),
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not an f32 tensor", t.id) }),
        }
    }

    fn kv(&self, t: &Tensor) -> Result<::wgpu::Buffer> {
        match self.slots.get(t.id as usize) {
            Some(Slot::Kv(b)) => Ok(b.clone()),
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not an f16 tensor", t.id) }),
        }
    }

    /// (type, row bytes, chunks as (buffer, first row, rows)).
    fn weight(&self, t: &Tensor) -> Result<(GgmlType, usize, Vec<ChunkRef>)> {
        match self.slots.get(t.id as usize) {
            Some(Slot::Weight { ty, row_bytes, chunks }) => Ok((*ty, *row_bytes, chunks.iter().map(|c| (c.buf.clone(), c.row0, c.rows)).collect())),
            _ => Err(BackendError::Invalid { op: "tensor", detail: format!("tensor {} is not a weight", t.id) }),
        }
    }

    /// A small weight (norm, bias) that must lie in one chunk.
    fn small_weight(&self, op: &'static str, t: &Tensor) -> Result<(GgmlType, ::wgpu::Buffer)> {
        let (ty, _, chunks) = self.weight(t)?;
        match chunks.as_slice() {
            [(b, _, _)] => Ok((ty, b.clone())),
            _ => Err(BackendError::Invalid { op, detail: format!("weight [{} x {}] is split across buffers", t.rows, t.cols) }),
        }
    }

    fn encoder(&mut self) -> &mut ::wgpu::CommandEncoder {
        let device = &self.device;
        self.encoder.get_or_insert_with(|| device.create_command_encoder(&::wgpu::CommandEncoderDescriptor { label: Some("owl step") }))
    }

    /// Writes the ring and submits everything recorded so far (without waiting).
    fn flush(&mut self) -> Result<()> {
        if let Some(enc) = self.encoder.take() {
            if !self.ring_data.is_empty() {
                self.queue.write_buffer(&self.ring, 0, &self.ring_data);
            }
            self.queue.submit([enc.finish()]);
        }
        self.ring_data.clear();
        self.check_error("submit")
    }

    /// Records one dispatch of `k` over `groups` workgroups (times `z`): past the
    /// per-dimension limit, x is folded into y and the kernel unfolds it with `num_workgroups`.
    fn dispatch(&mut self, k: Kernel, binds: &[(u32, Bind<'_>)], groups: u32, z: u32) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        self.dispatch_grid(k, binds, (groups.min(max), groups.div_ceil(max), z))
    }

    /// Records one dispatch of `k` with `binds` (binding index, resource) over the grid `g`.
    fn dispatch_grid(&mut self, k: Kernel, binds: &[(u32, Bind<'_>)], g: (u32, u32, u32)) -> Result<()> {
        if g.0 == 0 || g.1 == 0 || g.2 == 0 {
            return Ok(());
        }
        let pipeline = self.shaders.pipeline(&self.device, k)?;
        // Stage data bindings in the ring (flush first if they do not fit).
        let align = self.align;
        let up = |n: u64| n.div_ceil(align) * align;
        let need: u64 = binds.iter().map(|(_, b)| if let Bind::Data(d) = b { up(d.len().max(16) as u64) } else { 0 }).sum();
        if up(self.ring_data.len() as u64) + need > self.ring.size() {
            self.flush()?;
            if need > self.ring.size() {
                self.ring = self.device.create_buffer(&::wgpu::BufferDescriptor {
                    label: Some("owl ring (metadata, host arrays)"),
                    size: need.next_power_of_two(),
                    usage: ::wgpu::BufferUsages::UNIFORM | ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
            }
        }
        let mut offsets = Vec::with_capacity(binds.len());
        for (_, b) in binds {
            if let Bind::Data(d) = b {
                let off = up(self.ring_data.len() as u64);
                self.ring_data.resize(off as usize, 0);
                self.ring_data.extend_from_slice(d);
                // Bindings are at least 16 bytes (uniform structs round up; empty arrays still bind).
                let size = (d.len() as u64).max(16).div_ceil(16) * 16;
                self.ring_data.resize((off + size) as usize, 0);
                offsets.push((off, size));
            } else {
                offsets.push((0, 0));
            }
        }
        let ring = self.ring.clone();
        let entries: Vec<::wgpu::BindGroupEntry<'_>> = binds
            .iter()
            .zip(&offsets)
            .map(|((i, b), &(off, size))| ::wgpu::BindGroupEntry {
                binding: *i,
                resource: match b {
                    Bind::Buf(buf) => buf.as_entire_binding(),
                    Bind::Data(_) => ::wgpu::BindingResource::Buffer(::wgpu::BufferBinding { buffer: &ring, offset: off, size: ::wgpu::BufferSize::new(size) }),
                },
            })
            .collect();
        let bg = self.device.create_bind_group(&::wgpu::BindGroupDescriptor { label: Some(k.entry), layout: &pipeline.get_bind_group_layout(0), entries: &entries });
        let enc = self.encoder();
        let mut pass = enc.begin_compute_pass(&::wgpu::ComputePassDescriptor { label: Some(k.entry), timestamp_writes: None });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(g.0, g.1, g.2);
        Ok(())
    }

    fn new_buffer(&self, label: &str, size: u64, usage: ::wgpu::BufferUsages) -> ::wgpu::Buffer {
        self.device.create_buffer(&::wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
    }

    /// Converts a weight of a type the kernels do not read to F16, saying so once per type.
    fn convert(&mut self, w: WeightData) -> Result<WeightData> {
        if self.noticed.insert(w.ty) {
            eprintln!("owl: the wgpu backend has no {} kernels; converting {} weights to F16 at load", w.ty.name(), w.ty.name());
        }
        let mut f = vec![0f32; w.rows * w.cols];
        owl_quant::dequantize(w.ty, w.bytes(), &mut f)?;
        let bytes: Vec<u8> = f.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        let len = bytes.len();
        WeightData::new(w.name, GgmlType::F16, w.rows, w.cols, Arc::new(bytes), 0, len)
    }

    fn elementwise(&mut self, entry: &'static str, binds: &[(u32, Bind<'_>)], n: usize) -> Result<()> {
        self.dispatch(Kernel::new(Shader::Ewise, entry, None), binds, n.div_ceil(64) as u32, 1)
    }
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.rows != b.rows || a.cols != b.cols {
        return Err(shape_err(op, format!("[{} x {}] vs [{} x {}]", a.rows, a.cols, b.rows, b.cols)));
    }
    Ok(())
}

fn vec4_cols(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.cols.is_multiple_of(4) {
        return Err(BackendError::Invalid { op, detail: format!("the wgpu kernels need rows of a multiple of 4 elements, got {}", t.cols) });
    }
    Ok(())
}

fn u32s(v: &[u32]) -> Vec<u8> {
    words(v)
}

impl Backend for WgpuBackend {
    fn name(&self) -> String {
        format!("wgpu ({}, {:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }

    fn upload_weight(&mut self, w: WeightData) -> Result<Tensor> {
        let w = if native(w.ty) { w } else { self.convert(w)? };
        let (rows, cols, ty) = (w.rows, w.cols, w.ty);
        if !cols.is_multiple_of(4) {
            return Err(BackendError::Invalid { op: "upload", detail: format!("{}: rows of {cols} elements (the wgpu kernels need a multiple of 4)", w.name) });
        }
        let row_bytes = w.row_bytes();
        // Chunks of whole rows, each within the binding limit (4 bytes of slack for unaligned reads).
        let per_chunk = ((self.weight_chunk - 16) / row_bytes.max(1) as u64) as usize;
        if per_chunk == 0 {
            return Err(BackendError::Invalid { op: "upload", detail: format!("{}: one row of {row_bytes} bytes exceeds the device's binding limit", w.name) });
        }
        let bytes = w.bytes();
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < rows.max(1) {
            let n = per_chunk.min(rows - row0);
            let src = &bytes[row0 * row_bytes..(row0 + n) * row_bytes];
            let size = (src.len() as u64 + 4).div_ceil(16) * 16;
            let label = format!("{} rows {}..{}", w.name, row0, row0 + n);
            let buf = self.device.create_buffer(&::wgpu::BufferDescriptor { label: Some(&label), size, usage: ::wgpu::BufferUsages::STORAGE, mapped_at_creation: true });
            {
                let mut view = buf.slice(..).get_mapped_range_mut().map_err(|e| device_err("upload", e))?;
                view.slice(..src.len()).copy_from_slice(src);
            }
            buf.unmap();
            chunks.push(Chunk { buf, row0, rows: n });
            row0 += n;
            if rows == 0 {
                break;
            }
        }
        self.check_error("upload")?;
        let id = self.push(Slot::Weight { ty, row_bytes, chunks });
        Ok(Tensor { id, rows, cols, kind: TensorKind::Weight(ty) })
    }

    fn alloc_kv(&mut self, rows: usize, cols: usize) -> Result<Tensor> {
        if !cols.is_multiple_of(2) {
            return Err(shape_err("alloc_kv", format!("rows of {cols} (the wgpu cache packs pairs of f16)")));
        }
        let bytes = rows.checked_mul(cols).and_then(|n| n.checked_mul(2)).ok_or_else(|| shape_err("alloc_kv", format!("{rows} x {cols} overflows")))? as u64;
        if bytes > self.max_binding {
            return Err(BackendError::Invalid { op: "alloc_kv", detail: format!("a KV cache of {bytes} bytes per layer exceeds this device's binding limit of {} bytes; use a smaller --ctx", self.max_binding) });
        }
        let buf = self.new_buffer("kv cache", bytes.max(16).div_ceil(16) * 16, ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_DST);
        let id = self.push(Slot::Kv(buf));
        Ok(Tensor { id, rows, cols, kind: TensorKind::F16 })
    }

    fn alloc(&mut self, rows: usize, cols: usize) -> Result<Tensor> {
        let bytes = rows.checked_mul(cols).and_then(|n| n.checked_mul(4)).ok_or_else(|| shape_err("alloc", format!("{rows} x {cols} overflows")))? as u64;
        if bytes > self.max_binding {
            return Err(BackendError::Invalid { op: "alloc", detail: format!("[{rows} x {cols}] f32 is {bytes} bytes, over this device's binding limit of {} bytes", self.max_binding) });
        }
        let size = bytes.max(16).div_ceil(256) * 256;
        let best = self.spare.iter().enumerate().filter(|(_, b)| b.size() >= size).min_by_key(|(_, b)| b.size()).map(|(i, _)| i);
        let buf = match best {
            Some(i) => self.spare.swap_remove(i),
            None => self.new_buffer("scratch", size, ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_SRC | ::wgpu::BufferUsages::COPY_DST),
        };
        let id = self.push(Slot::Act(buf));
        self.scratch.push(id);
        Ok(Tensor { id, rows, cols, kind: TensorKind::F32 })
    }

    fn reset_scratch(&mut self) {
        for id in std::mem::take(&mut self.scratch) {
            if let Slot::Act(b) = std::mem::replace(&mut self.slots[id as usize], Slot::Free) {
                self.spare.push(b);
            }
        }
    }

    fn write(&mut self, t: &Tensor, data: &[f32]) -> Result<()> {
        if data.len() != t.rows * t.cols {
            return Err(shape_err("write", format!("{} values for [{} x {}]", data.len(), t.rows, t.cols)));
        }
        let buf = self.act(t)?;
        // Queue writes land before the next submission: submit what was recorded first.
        self.flush()?;
        if !data.is_empty() {
            self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    fn read(&mut self, t: &Tensor, out: &mut [f32]) -> Result<()> {
        if out.len() != t.rows * t.cols {
            return Err(shape_err("read", format!("{} values for [{} x {}]", out.len(), t.rows, t.cols)));
        }
        let src = self.act(t)?;
        let bytes = (out.len() * 4) as u64;
        if bytes == 0 {
            return Ok(());
        }
        if self.staging.as_ref().is_none_or(|s| s.size() < bytes) {
            self.staging = Some(self.new_buffer("read staging", bytes.div_ceil(256) * 256, ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST));
        }
        let staging = self.staging.clone().expect("set above");
        self.encoder().copy_buffer_to_buffer(&src, 0, &staging, 0, bytes);
        self.flush()?;
        let slice = staging.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(::wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(::wgpu::PollType::wait_indefinitely()).map_err(|e| device_err("read", e))?;
        self.check_error("read")?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(device_err("read", e)),
            Err(_) => return Err(device_err("read", "the map callback never ran")),
        }
        {
            let view = slice.get_mapped_range().map_err(|e| device_err("read", e))?;
            out.copy_from_slice(bytemuck::cast_slice(&view[..]));
        }
        staging.unmap();
        Ok(())
    }

    fn embed(&mut self, table: &Tensor, tokens: &[u32], scale: f32, out: &Tensor) -> Result<()> {
        if out.rows != tokens.len() || out.cols != table.cols {
            return Err(shape_err("embed", format!("{} tokens of {} into [{} x {}]", tokens.len(), table.cols, out.rows, out.cols)));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= table.rows) {
            return Err(shape_err("embed", format!("token {t} outside the table of {}", table.rows)));
        }
        let (ty, row_bytes, chunks) = self.weight(table)?;
        let ob = self.act(out)?;
        let toks = u32s(tokens);
        for (cb, row0, rows) in &chunks {
            let p = words(&[tokens.len() as u32, table.cols as u32, row_bytes as u32, *row0 as u32, *rows as u32, scale.to_bits()]);
            self.dispatch(
                Kernel::new(Shader::Embed, "embed", Some(ty)),
                &[(0, Bind::Buf(cb)), (1, Bind::Data(&toks)), (2, Bind::Buf(&ob)), (3, Bind::Data(&p))],
                tokens.len() as u32,
                1,
            )?;
        }
        Ok(())
    }

    fn matmul(&mut self, x: &Tensor, w: &Tensor, out: &Tensor) -> Result<()> {
        if x.cols != w.cols || out.rows != x.rows || out.cols != w.rows {
            return Err(shape_err(
                "matmul",
                format!("x [{} x {}] · wᵀ [{} x {}] -> out [{} x {}]", x.rows, x.cols, w.rows, w.cols, out.rows, out.cols),
            ));
        }
        if x.id == out.id {
            return Err(shape_err("matmul", "out must not be x".into()));
        }
        let (ty, row_bytes, chunks) = self.weight(w)?;
        let (xb, ob) = (self.act(x)?, self.act(out)?);
        for (cb, row0, rows) in &chunks {
            let p = words(&[x.rows as u32, x.cols as u32, row_bytes as u32, *rows as u32, *row0 as u32, w.rows as u32]);
            let binds = [(0, Bind::Buf(cb)), (1, Bind::Buf(&xb)), (2, Bind::Buf(&ob)), (3, Bind::Data(&p))];
            if x.rows <= MATVEC_MAX_ROWS && self.row_per_thread {
                self.dispatch(Kernel::new(Shader::Matmul, "matvec_rows", Some(ty)), &binds, rows.div_ceil(64) as u32, x.rows as u32)?;
            } else if x.rows <= MATVEC_MAX_ROWS {
                self.dispatch(Kernel::new(Shader::Matmul, "matvec", Some(ty)), &binds, *rows as u32, x.rows as u32)?;
            } else {
                let (gx, gy) = (rows.div_ceil(32) as u32, x.rows.div_ceil(32) as u32);
                let max = self.limits.max_compute_workgroups_per_dimension;
                if gx > max || gy > max {
                    return Err(BackendError::Invalid { op: "matmul", detail: format!("[{} x {}] · [{rows} rows] needs more workgroups than the device allows", x.rows, x.cols) });
                }
                // Tiles: x over weight rows, y over activation rows (the kernel reads wg.x, wg.y).
                self.dispatch_grid(Kernel::new(Shader::Matmul, "matmul_tiled", Some(ty)), &binds, (gx, gy, 1))?;
            }
        }
        Ok(())
    }

    fn add_bias(&mut self, x: &Tensor, b: &Tensor) -> Result<()> {
        if b.cols != x.cols || b.rows != 1 {
            return Err(shape_err("add_bias", format!("bias [{} x {}] for rows of {}", b.rows, b.cols, x.cols)));
        }
        vec4_cols("add_bias", x)?;
        let (ty, wb) = self.small_weight("add_bias", b)?;
        let xb = self.act(x)?;
        let n4 = x.rows * x.cols / 4;
        let p = words(&[n4 as u32, (x.cols / 4) as u32]);
        self.dispatch(Kernel::new(Shader::Norm, "add_bias", Some(ty)), &[(0, Bind::Buf(&wb)), (1, Bind::Buf(&xb)), (4, Bind::Data(&p))], n4.div_ceil(64) as u32, 1)
    }

    fn rms_norm(&mut self, x: &Tensor, w: &Tensor, eps: f32, out: &Tensor) -> Result<()> {
        same_shape("rms_norm", x, out)?;
        if w.cols == 0 || !x.cols.is_multiple_of(w.cols) {
            return Err(shape_err("rms_norm", format!("weight of {} for rows of {}", w.cols, x.cols)));
        }
        if !w.cols.is_multiple_of(4) {
            return Err(BackendError::Invalid { op: "rms_norm", detail: format!("groups of {} (the wgpu kernel needs a multiple of 4)", w.cols) });
        }
        let (ty, wb) = self.small_weight("rms_norm", w)?;
        let (xb, ob) = (self.act(x)?, self.act(out)?);
        let groups = x.rows * x.cols / w.cols;
        let p = words(&[groups as u32, w.cols as u32, eps.to_bits()]);
        self.dispatch(
            Kernel::new(Shader::Norm, "rms_norm", Some(ty)),
            &[(0, Bind::Buf(&wb)), (1, Bind::Buf(&xb)), (2, Bind::Buf(&ob)), (3, Bind::Data(&p))],
            groups as u32,
            1,
        )
    }

    fn rope(&mut self, x: &Tensor, pos: &[u32], p: &RopeParams) -> Result<()> {
        if pos.len() != x.rows || p.head_dim == 0 || !x.cols.is_multiple_of(p.head_dim) || p.n_rot > p.head_dim || !p.n_rot.is_multiple_of(2) {
            return Err(shape_err("rope", format!("[{} x {}] with {} positions, head_dim {}, n_rot {}", x.rows, x.cols, pos.len(), p.head_dim, p.n_rot)));
        }
        if p.n_rot == 0 {
            return Ok(());
        }
        let xb = self.act(x)?;
        let pairs = x.rows * (x.cols / p.head_dim) * (p.n_rot / 2);
        let theta_scale = p.base.powf(-2.0 / p.n_rot as f32);
        let neox = matches!(p.mode, RopeMode::Neox) as u32;
        let params = words(&[pairs as u32, x.cols as u32, p.head_dim as u32, p.n_rot as u32, theta_scale.to_bits(), p.freq_scale.to_bits(), neox]);
        let posb = u32s(pos);
        self.dispatch(Kernel::new(Shader::Rope, "rope", None), &[(0, Bind::Buf(&xb)), (1, Bind::Data(&posb)), (2, Bind::Data(&params))], pairs.div_ceil(64) as u32, 1)
    }

    fn kv_store(&mut self, k_cache: &Tensor, v_cache: &Tensor, k: &Tensor, v: &Tensor, cells: &[u32]) -> Result<()> {
        same_shape("kv_store", k, v)?;
        if k.cols != k_cache.cols || v.cols != v_cache.cols || cells.len() != k.rows {
            return Err(shape_err("kv_store", format!("{} rows of {} into cache rows of {}", k.rows, k.cols, k_cache.cols)));
        }
        if let Some(&c) = cells.iter().find(|&&c| c as usize >= k_cache.rows || c as usize >= v_cache.rows) {
            return Err(shape_err("kv_store", format!("cell {c} outside the cache of {}", k_cache.rows)));
        }
        let (kc, vc) = (self.kv(k_cache)?, self.kv(v_cache)?);
        let (kb, vb) = (self.act(k)?, self.act(v)?);
        let n = k.rows * k.cols / 2;
        let p = words(&[k.rows as u32, (k.cols / 2) as u32]);
        let cb = u32s(cells);
        self.dispatch(
            Kernel::new(Shader::Kv, "kv_store", None),
            &[(0, Bind::Buf(&kc)), (1, Bind::Buf(&vc)), (2, Bind::Buf(&kb)), (3, Bind::Buf(&vb)), (4, Bind::Data(&cb)), (5, Bind::Data(&p))],
            n.div_ceil(64) as u32,
            1,
        )
    }

    fn attention(&mut self, q: &Tensor, k_cache: &Tensor, v_cache: &Tensor, batch: &AttnBatch<'_>, p: &AttnParams, out: &Tensor) -> Result<()> {
        same_shape("attention", q, out)?;
        if q.cols != p.n_head * p.head_dim || k_cache.cols != p.n_head_kv * p.head_dim || p.n_head_kv == 0 || !p.n_head.is_multiple_of(p.n_head_kv) {
            return Err(shape_err("attention", format!("q cols {} for {} heads of {}, cache cols {} for {} kv heads", q.cols, p.n_head, p.head_dim, k_cache.cols, p.n_head_kv)));
        }
        if batch.rows.len() != q.rows {
            return Err(shape_err("attention", format!("{} batch rows for {} query rows", batch.rows.len(), q.rows)));
        }
        if p.head_dim > 256 || !p.head_dim.is_multiple_of(2) {
            return Err(BackendError::Invalid { op: "attention", detail: format!("head_dim {} (the wgpu kernel takes even head_dim up to 256)", p.head_dim) });
        }
        for &(s, pos) in batch.rows {
            let cells = batch.seq_cells.get(s as usize).ok_or_else(|| shape_err("attention", format!("sequence {s} not in batch")))?;
            if cells.len() <= pos as usize {
                return Err(shape_err("attention", format!("position {pos} but sequence {s} holds {} cells", cells.len())));
            }
            if let Some(&c) = cells[..=pos as usize].iter().find(|&&c| c as usize >= k_cache.rows) {
                return Err(shape_err("attention", format!("cell {c} outside the cache of {}", k_cache.rows)));
            }
        }
        if q.rows == 0 {
            return Ok(());
        }
        let (qb, ob) = (self.act(q)?, self.act(out)?);
        let (kc, vc) = (self.kv(k_cache)?, self.kv(v_cache)?);
        // Only the sequences the rows name, flattened; each row carries its sequence's offset.
        let mut flat: Vec<u32> = Vec::new();
        let mut seq_off: HashMap<u32, u32> = HashMap::new();
        let mut info: Vec<u32> = Vec::with_capacity(q.rows * 2);
        for &(s, pos) in batch.rows {
            let off = *seq_off.entry(s).or_insert_with(|| {
                let o = flat.len() as u32;
                flat.extend_from_slice(batch.seq_cells[s as usize]);
                o
            });
            info.extend_from_slice(&[off, pos]);
        }
        let params = words(&[
            q.rows as u32,
            p.n_head as u32,
            (p.n_head / p.n_head_kv) as u32,
            p.head_dim as u32,
            q.cols as u32,
            k_cache.cols as u32,
            p.scale.to_bits(),
            p.softcap.unwrap_or(0.0).to_bits(),
            p.window.unwrap_or(0) as u32,
        ]);
        let (flat, info) = (u32s(&flat), u32s(&info));
        self.dispatch(
            Kernel::new(Shader::Attention, "attention", None),
            &[
                (0, Bind::Buf(&qb)),
                (1, Bind::Buf(&kc)),
                (2, Bind::Buf(&vc)),
                (3, Bind::Data(&flat)),
                (4, Bind::Data(&info)),
                (5, Bind::Buf(&ob)),
                (6, Bind::Data(&params)),
            ],
            (q.rows * p.n_head) as u32,
            1,
        )
    }

    fn swiglu(&mut self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()> {
        self.glu("swiglu", gate, up, out)
    }

    fn geglu(&mut self, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()> {
        self.glu("geglu", gate, up, out)
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<()> {
        same_shape("add", a, b)?;
        let (ab, bb) = (self.act(a)?, self.act(b)?);
        let n = a.rows * a.cols;
        let p = words(&[n as u32, 0]);
        self.elementwise("add", &[(0, Bind::Buf(&ab)), (1, Bind::Buf(&bb)), (3, Bind::Data(&p))], n)
    }

    fn scale(&mut self, x: &Tensor, s: f32) -> Result<()> {
        let xb = self.act(x)?;
        let n = x.rows * x.cols;
        let p = words(&[n as u32, s.to_bits()]);
        self.elementwise("scale", &[(0, Bind::Buf(&xb)), (3, Bind::Data(&p))], n)
    }

    fn softcap(&mut self, x: &Tensor, cap: f32) -> Result<()> {
        let xb = self.act(x)?;
        let n = x.rows * x.cols;
        let p = words(&[n as u32, cap.to_bits()]);
        self.elementwise("softcap", &[(0, Bind::Buf(&xb)), (3, Bind::Data(&p))], n)
    }

    fn get_rows(&mut self, x: &Tensor, rows: &[u32], out: &Tensor) -> Result<()> {
        if out.rows != rows.len() || out.cols != x.cols || rows.iter().any(|&r| r as usize >= x.rows) {
            return Err(shape_err("get_rows", format!("rows {rows:?} of [{} x {}] into [{} x {}]", x.rows, x.cols, out.rows, out.cols)));
        }
        let (xb, ob) = (self.act(x)?, self.act(out)?);
        let n = out.rows * out.cols;
        let p = words(&[n as u32, x.cols as u32]);
        let sel = u32s(rows);
        self.elementwise("get_rows", &[(0, Bind::Buf(&xb)), (2, Bind::Buf(&ob)), (4, Bind::Data(&sel)), (5, Bind::Data(&p))], n)
    }
}

impl WgpuBackend {
    fn glu(&mut self, entry: &'static str, gate: &Tensor, up: &Tensor, out: &Tensor) -> Result<()> {
        let op = if entry == "swiglu" { "swiglu" } else { "geglu" };
        same_shape(op, gate, up)?;
        same_shape(op, gate, out)?;
        let (gb, ub, ob) = (self.act(gate)?, self.act(up)?, self.act(out)?);
        let n = gate.rows * gate.cols;
        let p = words(&[n as u32, 0]);
        self.elementwise(entry, &[(0, Bind::Buf(&gb)), (1, Bind::Buf(&ub)), (2, Bind::Buf(&ob)), (3, Bind::Data(&p))], n)
    }

}
