// Ops that broadcast a small weight over activation rows: RMS norm and bias.
// Follows quant.wgsl (binding 0 = the weight, `deq4`).

struct RmsNorm {
    groups: u32, // groups in all rows (rows * cols / group)
    group: u32,  // elements per group (= the weight's length)
    eps: f32,
}

@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: RmsNorm;

var<workgroup> part: array<f32, 64>;

// One workgroup per group; x and out may be the same tensor (each thread
// reads its elements before it writes them).
@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let g = wg.x + wg.y * nwg.x;
    let g4 = p.group / 4u;
    let base = g * g4;
    var acc = 0.0;
    if (g < p.groups) {
        for (var i = t; i < g4; i += 64u) {
            let v = x[base + i];
            acc += dot(v, v);
        }
    }
    part[t] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            part[t] += part[t + s];
        }
        workgroupBarrier();
    }
    if (g < p.groups) {
        let scale = 1.0 / sqrt(part[0] / f32(p.group) + p.eps);
        for (var i = t; i < g4; i += 64u) {
            out[base + i] = x[base + i] * scale * deq4(0u, i * 4u);
        }
    }
}

struct AddBias {
    n4: u32,   // vec4s in x
    cols4: u32,
}

// x (binding 1) += the weight, row by row.
@group(0) @binding(4) var<uniform> pb: AddBias;

@compute @workgroup_size(64)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i < pb.n4) {
        x[i] += deq4(0u, (i % pb.cols4) * 4u);
    }
}
