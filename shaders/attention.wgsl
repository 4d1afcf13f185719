// Causal grouped-query attention over the f16 KV cache (two values per u32).

struct Attention {
    rows: u32,
    n_head: u32,
    group: u32,    // query heads per kv head
    head_dim: u32,
    q_cols: u32,
    kv_cols: u32,
    scale: f32,
    softcap: f32,  // 0: none
    window: u32,   // 0: none
}

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read> kc: array<u32>;
@group(0) @binding(2) var<storage, read> vc: array<u32>;
// All sequences' cells, flattened; row_info[r] = (offset of r's sequence in seq_cells, position).
@group(0) @binding(3) var<storage, read> seq_cells: array<u32>;
@group(0) @binding(4) var<storage, read> row_info: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> pa: Attention;

const WG: u32 = 64u;
const MAX_HD: u32 = 256u;
const NEG: f32 = -1.0e30;
var<workgroup> qs: array<f32, MAX_HD>;
var<workgroup> scores: array<f32, WG>;

// Element e of the v cache.
fn v_at(e: u32) -> f32 {
    let v = unpack2x16float(vc[e >> 1u]);
    return select(v.x, v.y, (e & 1u) == 1u);
}

fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// One workgroup per (query row, head). Keys in tiles of 64: each thread scores
// one key, then each thread accumulates its own dims of v with an online softmax.
@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let task = wg.x + wg.y * nwg.x;
    let valid = task < pa.rows * pa.n_head;
    let r = min(task / pa.n_head, pa.rows - 1u);
    let h = task % pa.n_head;
    let hd = pa.head_dim;
    let info = row_info[r];
    let pos = info.y;
    var start = 0u;
    if (pa.window > 0u && pos + 1u > pa.window) {
        start = pos + 1u - pa.window;
    }
    let end = pos + 1u;
    let kv_base = (h / pa.group) * hd;
    for (var d = t; d < hd; d += WG) {
        qs[d] = q[r * pa.q_cols + h * hd + d];
    }
    workgroupBarrier();
    var m = NEG;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0); // dims t, t+64, t+128, t+192
    for (var tile = start; tile < end; tile += WG) {
        let j = tile + t;
        var s = NEG;
        if (j < end) {
            let e0 = seq_cells[info.x + j] * pa.kv_cols + kv_base;
            var d = 0.0;
            for (var i = 0u; i < hd; i += 2u) {
                let kv = unpack2x16float(kc[(e0 + i) >> 1u]);
                d += qs[i] * kv.x + qs[i + 1u] * kv.y;
            }
            s = d * pa.scale;
            if (pa.softcap > 0.0) {
                s = pa.softcap * tanh_safe(s / pa.softcap);
            }
        }
        scores[t] = s;
        workgroupBarrier();
        let n = min(WG, end - tile);
        var tm = NEG;
        for (var i = 0u; i < n; i++) {
            tm = max(tm, scores[i]);
        }
        let m_new = max(m, tm);
        let corr = exp(m - m_new);
        l *= corr;
        for (var u = 0u; u < 4u; u++) {
            acc[u] *= corr;
        }
        for (var i = 0u; i < n; i++) {
            let pj = exp(scores[i] - m_new);
            l += pj;
            let e0 = seq_cells[info.x + tile + i] * pa.kv_cols + kv_base;
            for (var u = 0u; u < 4u; u++) {
                let d = t + u * WG;
                if (d < hd) {
                    acc[u] += pj * v_at(e0 + d);
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    if (valid) {
        for (var u = 0u; u < 4u; u++) {
            let d = t + u * WG;
            if (d < hd) {
                out[r * pa.q_cols + h * hd + d] = acc[u] / l;
            }
        }
    }
}
