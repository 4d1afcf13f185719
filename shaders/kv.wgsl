// Stores rows of k and v (f32) into the f16 KV cache (two values per u32).

struct KvStore {
    n: u32,     // rows of k and v
    cols2: u32, // cache row length / 2
}

@group(0) @binding(0) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(1) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(2) var<storage, read_write> k_new: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> v_new: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> cells: array<u32>;
@group(0) @binding(5) var<uniform> ps: KvStore;

// One thread per pair of values: row r of k and v goes to cache row cells[r].
@compute @workgroup_size(64)
fn kv_store(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= ps.n * ps.cols2) {
        return;
    }
    let r = idx / ps.cols2;
    let c = idx % ps.cols2;
    let dst = cells[r] * ps.cols2 + c;
    k_cache[dst] = pack2x16float(k_new[idx]);
    v_cache[dst] = pack2x16float(v_new[idx]);
}
