// Elementwise ops on f32 activations: GLUs, add, scale, softcap, get_rows.

struct Ewise {
    n: u32,  // elements (or vec4s where the binding is vec4)
    s: f32,  // scale / cap
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> p: Ewise;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + tanh_safe(0.7978846 * x * (1.0 + 0.044715 * x * x)));
}

// c = silu(a) * b
@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        c[i] = silu(a[i]) * b[i];
    }
}

// c = gelu_tanh(a) * b
@compute @workgroup_size(64)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        c[i] = gelu_tanh(a[i]) * b[i];
    }
}

// a += b
@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        a[i] += b[i];
    }
}

// a *= s
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        a[i] *= p.s;
    }
}

// a = s * tanh(a / s)
@compute @workgroup_size(64)
fn softcap(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < p.n) {
        a[i] = p.s * tanh_safe(a[i] / p.s);
    }
}

struct GetRows {
    n: u32,    // output elements
    cols: u32,
}

@group(0) @binding(4) var<storage, read> sel: array<u32>;
@group(0) @binding(5) var<uniform> pg: GetRows;

// c[i] = a[sel[i]]
@compute @workgroup_size(64)
fn get_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i < pg.n) {
        c[i] = a[sel[i / pg.cols] * pg.cols + i % pg.cols];
    }
}
