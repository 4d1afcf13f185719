// out = x · wᵀ over one chunk of weight rows (a weight larger than the
// device's storage binding limit is split by rows; each chunk is one dispatch).
// Follows quant.wgsl (binding 0 = the weight, `deq4`).

struct Matmul {
    n: u32,         // activation rows
    k: u32,         // elements per row
    row_bytes: u32, // bytes per weight row
    rows: u32,      // weight rows in this chunk
    row0: u32,      // first output column of this chunk
    ldo: u32,       // output row stride (all weight rows)
}

@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Matmul;

const MV_WG: u32 = 64u;
var<workgroup> part: array<f32, MV_WG>;

// Decode: one workgroup per (weight row, activation row); the weight is
// dequantized on the fly and dotted with x, never written out.
@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let j = wg.x + wg.y * nwg.x;
    let r = wg.z;
    let k4 = p.k / 4u;
    var acc = 0.0;
    if (j < p.rows) {
        let rb = j * p.row_bytes;
        let xr = r * k4;
        for (var i = t; i < k4; i += MV_WG) {
            acc += dot(deq4(rb, i * 4u), x[xr + i]);
        }
    }
    part[t] = acc;
    workgroupBarrier();
    for (var s = MV_WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            part[t] += part[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u && j < p.rows) {
        out[r * p.ldo + p.row0 + j] = part[0];
    }
}

// Decode on CPU-emulated adapters (lavapipe): one invocation per weight row,
// no workgroup memory and no barriers, which such drivers run far faster.
@compute @workgroup_size(64)
fn matvec_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * 64u;
    let r = wg.z;
    if (j >= p.rows) {
        return;
    }
    let k4 = p.k / 4u;
    let rb = j * p.row_bytes;
    let xr = r * k4;
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < k4; i++) {
        acc += deq4(rb, i * 4u) * x[xr + i];
    }
    out[r * p.ldo + p.row0 + j] = acc.x + acc.y + acc.z + acc.w;
}

// Prefill: 32x32 output tiles, 16x16 threads with 2x2 outputs each; x and the
// dequantized weight pass through workgroup memory 32 elements of k at a time.
const T: u32 = 32u;
const TK: u32 = 32u;
var<workgroup> xs: array<vec4<f32>, 256>; // [T rows][TK/4]
var<workgroup> ws: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let j0 = wg.x * T; // weight rows (output columns)
    let r0 = wg.y * T; // activation rows
    let k4 = p.k / 4u;
    // Loader: thread t fills row t/8, vec4 t%8 of both tiles.
    let lr = t / 8u;
    let lc = t % 8u;
    var a00 = 0.0; var a01 = 0.0; var a10 = 0.0; var a11 = 0.0;
    let ty = lid.y * 2u;
    let tx = lid.x * 2u;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        let kk = k0 / 4u + lc;
        var xv = vec4<f32>(0.0);
        if (r0 + lr < p.n && kk < k4) {
            xv = x[(r0 + lr) * k4 + kk];
        }
        xs[t] = xv;
        var wv = vec4<f32>(0.0);
        if (j0 + lr < p.rows && kk < k4) {
            wv = deq4((j0 + lr) * p.row_bytes, kk * 4u);
        }
        ws[t] = wv;
        workgroupBarrier();
        for (var c = 0u; c < TK / 4u; c++) {
            let x0 = xs[ty * 8u + c];
            let x1 = xs[(ty + 1u) * 8u + c];
            let w0 = ws[tx * 8u + c];
            let w1 = ws[(tx + 1u) * 8u + c];
            a00 += dot(x0, w0);
            a01 += dot(x0, w1);
            a10 += dot(x1, w0);
            a11 += dot(x1, w1);
        }
        workgroupBarrier();
    }
    let r = r0 + ty;
    let j = j0 + tx;
    if (r < p.n && j < p.rows) { out[r * p.ldo + p.row0 + j] = a00; }
    if (r < p.n && j + 1u < p.rows) { out[r * p.ldo + p.row0 + j + 1u] = a01; }
    if (r + 1u < p.n && j < p.rows) { out[(r + 1u) * p.ldo + p.row0 + j] = a10; }
    if (r + 1u < p.n && j + 1u < p.rows) { out[(r + 1u) * p.ldo + p.row0 + j + 1u] = a11; }
}
