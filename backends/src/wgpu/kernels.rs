//! Shader sources and the pipeline cache.
//!
//! One scheme for every kernel: the WGSL in `shaders/` is compiled in with
//! `include_str!`; an op that reads a weight gets `quant.wgsl` in front of its
//! file plus a one-line `deq4` naming the weight's type, so there is one
//! module per (file, weight type) and one pipeline per (file, entry, type).

use std::collections::HashMap;

use crate::{BackendError, GgmlType, Result};

const QUANT: &str = include_str!("../../../shaders/quant.wgsl");

/// The op families, one WGSL file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Matmul,
    Embed,
    Norm,
    Rope,
    Kv,
    Attention,
    Ewise,
}

impl Shader {
    fn source(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Shader::Embed => include_str!("../../../shaders/embed.wgsl"),
            Shader::Norm => include_str!("../../../shaders/norm.wgsl"),
            Shader::Rope => include_str!("../../../shaders/rope.wgsl"),
            Shader::Kv => include_str!("../../../shaders/kv.wgsl"),
            Shader::Attention => include_str!("../../../shaders/attention.wgsl"),
            Shader::Ewise => include_str!("../../../shaders/ewise.wgsl"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul.wgsl",
            Shader::Embed => "embed.wgsl",
            Shader::Norm => "norm.wgsl",
            Shader::Rope => "rope.wgsl",
            Shader::Kv => "kv.wgsl",
            Shader::Attention => "attention.wgsl",
            Shader::Ewise => "ewise.wgsl",
        }
    }
}

/// The pipeline cache key: file, entry point, and the weight type it decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub ty: Option<GgmlType>,
}

impl Kernel {
    pub fn new(shader: Shader, entry: &'static str, ty: Option<GgmlType>) -> Self {
        Kernel { shader, entry, ty }
    }
}

/// The WGSL of one module.
pub fn module_source(shader: Shader, ty: Option<GgmlType>) -> String {
    match ty {
        None => shader.source().to_string(),
        Some(ty) => format!(
            "{QUANT}\nfn deq4(row: u32, i: u32) -> vec4<f32> {{\n    return deq4_{}(row, i);\n}}\n\n{}",
            ty.name().to_lowercase(),
            shader.source()
        ),
    }
}

#[derive(Default)]
pub struct Cache {
    modules: HashMap<(Shader, Option<GgmlType>), ::wgpu::ShaderModule>,
    pipelines: HashMap<Kernel, ::wgpu::ComputePipeline>,
}

impl Cache {
    /// The pipeline for `k`, compiled on first use; a shader the device rejects is an error, not a panic.
    pub fn pipeline(&mut self, device: &::wgpu::Device, k: Kernel) -> Result<::wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.get(&k) {
            return Ok(p.clone());
        }
        let ty = k.ty.map(|t| t.name()).unwrap_or("");
        let fail = |e: ::wgpu::Error| BackendError::Invalid { op: "pipeline", detail: format!("{} {} {ty}: {e}", k.shader.name(), k.entry) };
        let module = match self.modules.get(&(k.shader, k.ty)) {
            Some(m) => m.clone(),
            None => {
                let label = format!("{} {ty}", k.shader.name());
                let scope = device.push_error_scope(::wgpu::ErrorFilter::Validation);
                let m = device.create_shader_module(::wgpu::ShaderModuleDescriptor {
                    label: Some(&label),
                    source: ::wgpu::ShaderSource::Wgsl(module_source(k.shader, k.ty).into()),
                });
                if let Some(e) = pollster::block_on(scope.pop()) {
                    return Err(fail(e));
                }
                self.modules.insert((k.shader, k.ty), m.clone());
                m
            }
        };
        let label = format!("{} {ty}", k.entry);
        let scope = device.push_error_scope(::wgpu::ErrorFilter::Validation);
        let p = device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(fail(e));
        }
        self.pipelines.insert(k, p.clone());
        Ok(p)
    }
}
