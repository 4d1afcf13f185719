// Rotary position embedding in place, as ggml_rope_ext computes it (no YaRN).

struct Rope {
    pairs: u32,     // rows * heads * n_rot/2
    cols: u32,
    head_dim: u32,
    n_rot: u32,
    theta_scale: f32, // base^(-2/n_rot)
    freq_scale: f32,
    neox: u32,      // 0: adjacent pairs (llama); 1: halves (GPT-NeoX)
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<uniform> p: Rope;

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.pairs) {
        return;
    }
    let half = p.n_rot / 2u;
    let heads = p.cols / p.head_dim;
    let i = idx % half;
    let h = (idx / half) % heads;
    let r = idx / (half * heads);
    let theta = f32(pos[r]) * pow(p.theta_scale, f32(i)) * p.freq_scale;
    let c = cos(theta);
    let s = sin(theta);
    let base = r * p.cols + h * p.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + i;
        b = a + half;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
