// out[r] = table[tokens[r]] * scale, over one chunk of table rows.
// Follows quant.wgsl (binding 0 = the table, `deq4`).

struct Embed {
    n: u32,         // tokens
    cols: u32,
    row_bytes: u32,
    row0: u32,      // first table row in this chunk
    rows: u32,      // table rows in this chunk
    scale: f32,
}

@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: Embed;

// One workgroup per token; tokens outside this chunk are left to another dispatch.
@compute @workgroup_size(64)
fn embed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let r = wg.x + wg.y * nwg.x;
    if (r >= p.n) {
        return;
    }
    let tok = tokens[r];
    if (tok < p.row0 || tok >= p.row0 + p.rows) {
        return;
    }
    let c4 = p.cols / 4u;
    let rb = (tok - p.row0) * p.row_bytes;
    for (var i = t; i < c4; i += 64u) {
        out[r * c4 + i] = deq4(rb, i * 4u) * p.scale;
    }
}
