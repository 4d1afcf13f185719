//! Every kernel table this CPU supports against owl-quant's scalar reference:
//! activation quantizers bit-exact, dots within GGML's ref-vs-fast budget.

use owl_quant::*;

use super::Kernels;
use crate::cpu::repack::{pack, GROUP, UNIT};

/// test-quantize-fns.cpp MAX_QUANTIZATION_REFERENCE_ERROR (|fast - ref| / n).
const MAX_REF_ERROR: f32 = 0.0001;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn signed(&mut self, lo: f32, hi: f32) -> f32 {
        let v = self.f(lo, hi);
        if self.next() & 1 == 0 {
            v
        } else {
            -v
        }
    }
}

/// Random quant bits with well-scaled block scales (dequantized values O(1)).
fn random_weights(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut q: Vec<u8> = (0..ty.row_bytes(n).unwrap())
        .map(|_| rng.next() as u8)
        .collect();
    macro_rules! fix {
        ($B:ty, |$b:ident| $body:expr) => {
            for $b in as_blocks_mut::<$B>(&mut q).unwrap() {
                $body;
            }
        };
    }
    match ty {
        GgmlType::Q4_0 => fix!(BlockQ4_0, |b| b.d = f32_to_f16(rng.signed(0.1, 0.3))),
        GgmlType::Q4_1 => fix!(BlockQ4_1, |b| {
            b.d = f32_to_f16(rng.f(0.05, 0.2));
            b.m = f32_to_f16(rng.signed(0.0, 1.5))
        }),
        GgmlType::Q5_0 => fix!(BlockQ5_0, |b| b.d = f32_to_f16(rng.signed(0.05, 0.12))),
        GgmlType::Q5_1 => fix!(BlockQ5_1, |b| {
            b.d = f32_to_f16(rng.f(0.03, 0.1));
            b.m = f32_to_f16(rng.signed(0.0, 1.5))
        }),
        GgmlType::Q8_0 => fix!(BlockQ8_0, |b| b.d = f32_to_f16(rng.signed(0.005, 0.02))),
        GgmlType::Q2_K => fix!(BlockQ2K, |b| {
            b.d = f32_to_f16(rng.f(0.02, 0.06));
            b.dmin = f32_to_f16(rng.f(0.02, 0.06))
        }),
        GgmlType::Q3_K => fix!(BlockQ3K, |b| b.d = f32_to_f16(rng.signed(0.01, 0.03))),
        GgmlType::Q4_K => fix!(BlockQ4K, |b| {
            b.d = f32_to_f16(rng.f(0.002, 0.005));
            b.dmin = f32_to_f16(rng.f(0.002, 0.005))
        }),
        GgmlType::Q5_K => fix!(BlockQ5K, |b| {
            b.d = f32_to_f16(rng.f(0.001, 0.003));
            b.dmin = f32_to_f16(rng.f(0.002, 0.005))
        }),
        GgmlType::Q6_K => fix!(BlockQ6K, |b| b.d = f32_to_f16(rng.signed(0.0002, 0.0006))),
        GgmlType::IQ4_NL => fix!(BlockIQ4NL, |b| b.d = f32_to_f16(rng.signed(0.005, 0.015))),
        GgmlType::IQ4_XS => fix!(BlockIQ4XS, |b| b.d = f32_to_f16(rng.signed(0.0003, 0.0006))),
        _ => {
            let x: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 1.5)).collect();
            quantize(ty, &x, &mut q).unwrap();
        }
    }
    q
}

/// Activation rows: smooth, noisy, with ties at rounding points and zero blocks.
fn activations(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows = vec![
        (0..n)
            .map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos())
            .collect::<Vec<_>>(),
        (0..n).map(|_| rng.signed(0.0, 3.0)).collect(),
        (0..n).map(|i| ((i % 64) as f32 - 31.5) * 0.5).collect(),
        (0..n)
            .map(|i| {
                if i % 97 < 40 {
                    0.0
                } else {
                    rng.signed(0.0, 1e-3)
                }
            })
            .collect(),
    ];
    // An exact-tie row: values k + 0.5 scaled so that x * id lands on halves.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    (i % 7) as f32 - 2.5
                }
            })
            .collect(),
    );
    // A zero row and one with a +/- tie for the largest magnitude.
    rows.push(vec![0.0; n]);
    rows.push(
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    -4.0
                } else if i % 3 == 1 {
                    4.0
                } else {
                    1.25
                }
            })
            .collect(),
    );
    rows
}

/// Row lengths for the dot tests: the 32-element formats also get block
/// counts that are not a multiple of 4 (1, 3, 25, 35 blocks), which kernels
/// working on groups of blocks handle as a tail.
fn row_lengths(ty: GgmlType) -> &'static [usize] {
    if ty.block_len() == 32 {
        &[256, 768, 4096, 32, 96, 800, 1120]
    } else {
        &[256, 768, 4096]
    }
}

const DOT_TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

#[test]
fn this_cpu_gets_its_simd_paths() {
    let names: Vec<&str> = Kernels::available().iter().map(|k| k.name).collect();
    assert_eq!(names[0], "scalar");
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            assert!(names.contains(&"avx2"), "{names:?}");
        }
        if is_x86_feature_detected!("avxvnni") {
            assert!(names.contains(&"avxvnni"), "{names:?}");
        }
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            assert!(names.contains(&"avx512vnni"), "{names:?}");
        }
        let best = Kernels::detect();
        if std::env::var_os("OWL_KERNELS").is_none() {
            assert_eq!(best.name, *names.last().unwrap());
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert!(names.contains(&"neon"), "{names:?}");
        assert_eq!(
            names.contains(&"dotprod"),
            std::arch::is_aarch64_feature_detected!("dotprod"),
            "{names:?}"
        );
        assert_eq!(
            names.contains(&"i8mm"),
            std::arch::is_aarch64_feature_detected!("dotprod")
                && std::arch::is_aarch64_feature_detected!("i8mm"),
            "{names:?}"
        );
        let best = Kernels::detect();
        match std::env::var("OWL_KERNELS").ok().as_deref() {
            None => assert_eq!(best.name, *names.last().unwrap()),
            Some(forced) if names.contains(&forced) => assert_eq!(best.name, forced),
            Some(_) => {}
        }
    }
    eprintln!("kernel paths on this CPU: {names:?}");
}

/// The aarch64 tables differ only in how they form exact integer sums (the
/// float steps are shared), so they agree bit for bit: a model gives the same
/// logits with and without dotprod.
#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_tables_agree_bit_for_bit() {
    let mut rng = Rng(0xa64);
    let tables: Vec<Kernels> = Kernels::available().into_iter().filter(|k| k.name != "scalar").collect();
    assert!(!tables.is_empty());
    for ty in DOT_TYPES {
        let aty = ty.vec_dot_type();
        for n in [256, 768, 4096] {
            let w = random_weights(ty, n, &mut rng);
            for x in activations(n, &mut rng) {
                let mut a = vec![0u8; aty.row_bytes(n).unwrap()];
                owl_quant::quantize_act(aty, &x, &mut a).unwrap();
                let want = tables[0].vec_dot(ty, &w, &a, n);
                for k in &tables[1..] {
                    let got = k.vec_dot(ty, &w, &a, n);
                    assert_eq!(got.to_bits(), want.to_bits(), "{ty} n={n}: {} {got} vs {} {want}", k.name, tables[0].name);
                }
            }
        }
    }
}

#[test]
fn activation_quantizers_are_bit_exact_on_every_path() {
    let mut rng = Rng(7);
    for k in Kernels::available() {
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q8_1,
            GgmlType::Q8_K,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::F32,
        ] {
            for n in [256, 512, 2048] {
                for x in activations(n, &mut rng) {
                    let mut want = vec![0u8; ty.row_bytes(n).unwrap()];
                    owl_quant::quantize_act(ty, &x, &mut want).unwrap();
                    let mut got = vec![0x55u8; want.len()];
                    k.quantize_act(ty, &x, &mut got);
                    if got != want {
                        let bb = ty.block_bytes();
                        let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap() / bb;
                        panic!(
                            "{} {ty} n={n}: block {i} differs:\n got {:?}\nwant {:?}",
                            k.name,
                            &got[i * bb..(i + 1) * bb],
                            &want[i * bb..(i + 1) * bb]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dots_match_the_scalar_reference_on_every_path() {
    let mut rng = Rng(0xfeed);
    let mut worst = Vec::new();
    for k in Kernels::available() {
        for ty in DOT_TYPES {
            if k.name != "scalar" {
                assert!(k.has_fast_dot(ty), "{}: no fast {ty} dot", k.name);
            }
            let aty = ty.vec_dot_type();
            let mut max_err = 0f32;
            for &n in row_lengths(ty) {
                let w = random_weights(ty, n, &mut rng);
                for x in activations(n, &mut rng) {
                    let mut a = vec![0u8; aty.row_bytes(n).unwrap()];
                    quantize(aty, &x, &mut a).unwrap();
                    let want = vec_dot_ref(ty, &w, &a, n).unwrap();
                    let mut got = vec![k.vec_dot(ty, &w, &a, n)];
                    if k.has_packed(ty) {
                        // The repacked layout's tile, one row, as decode runs it
                        // (32-element types pack whole 64-element units only).
                        match pack(ty, &w, 1, n) {
                            Some(p) => {
                                let mut o = [f32::NAN];
                                // SAFETY: one activation row, one weight row, one element.
                                unsafe { k.packed_tile(&p, 0, 1, &a, n, o.as_mut_ptr(), 1) };
                                got.push(o[0]);
                            }
                            None => assert!(
                                ty.block_len() == 32 && !n.is_multiple_of(UNIT),
                                "{ty} n={n}: no packed layout"
                            ),
                        }
                    }
                    for got in got {
                        let err = (got - want).abs() / n as f32;
                        assert!(
                            err < MAX_REF_ERROR && err <= 1e-5 * want.abs().max(1.0),
                            "{} {ty} n={n}: fast {got} vs reference {want}",
                            k.name
                        );
                        max_err = max_err.max(err);
                    }
                }
            }
            worst.push(format!("{} {ty}: max |fast-ref|/n {max_err:.1e}", k.name));
        }
    }
    eprintln!("{}", worst.join("\n"));
}

#[test]
fn vec_dot_rows_equals_single_dots() {
    let mut rng = Rng(99);
    let k = Kernels::detect();
    for ty in
        DOT_TYPES
            .into_iter()
            .chain([GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_K])
    {
        let n = 512;
        let rows = 5;
        let w: Vec<u8> = (0..rows)
            .flat_map(|_| random_weights(ty, n, &mut rng))
            .collect();
        let x: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 1.0)).collect();
        let aty = ty.vec_dot_type();
        let mut a = vec![0u8; aty.row_bytes(n).unwrap()];
        k.quantize_act(aty, &x, &mut a);
        let mut out = vec![0f32; rows];
        k.vec_dot_rows(ty, &w, &a, n, &mut out);
        let rb = ty.row_bytes(n).unwrap();
        for r in 0..rows {
            assert_eq!(
                out[r],
                k.vec_dot(ty, &w[r * rb..(r + 1) * rb], &a, n),
                "{ty} row {r}"
            );
        }
    }
}

#[test]
fn bad_lengths_give_nan_not_ub() {
    // Release builds (the test profile) have no debug assertions: lengths must be checked.
    if cfg!(debug_assertions) {
        return;
    }
    for k in Kernels::available() {
        let w = vec![0u8; 18 * 2];
        let a = vec![0u8; 34];
        assert!(k.vec_dot(GgmlType::Q4_0, &w, &a, 64).is_nan(), "{}", k.name);
        assert!(k.vec_dot(GgmlType::Q4_0, &w, &a, 63).is_nan(), "{}", k.name);
    }
}

/// The matmul tile on every path: each element bit-equal to the one-row dot of
/// the same table, whatever the number of activation rows in the call (this is
/// what makes a batched row equal its solo run).
#[test]
fn dot_tile_equals_single_dots_for_any_batch() {
    let mut rng = Rng(4242);
    for k in Kernels::available() {
        if k.name != "scalar" && cfg!(target_arch = "x86_64") {
            // Every x86 table tiles every block type (decode's four-row kernels
            // live behind the tile), so the loop below checks each one.
            for ty in DOT_TYPES {
                assert!(k.has_tile(ty), "{}: no {ty} tile", k.name);
            }
        }
        for ty in DOT_TYPES.into_iter().chain([GgmlType::F16, GgmlType::F32]) {
            // 608: 19 blocks of 32, a tail after groups of four.
            for n in if ty.block_len() == 32 { [512, 608] } else { [512, 768] } {
                // Seven weight rows: decode runs four at a time, then the remainder;
                // the 512-bit prefill tiles run pairs, then the odd row.
                let nw = 7;
                let aty = ty.vec_dot_type();
                let (wr, ar) = (ty.row_bytes(n).unwrap(), aty.row_bytes(n).unwrap());
                let w: Vec<u8> = (0..nw).flat_map(|_| random_weights(ty, n, &mut rng)).collect();
                for na in 1..=9 {
                    let mut a = vec![0u8; ar * na];
                    for q in a.chunks_exact_mut(ar) {
                        let x: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 2.0)).collect();
                        k.quantize_act(aty, &x, q);
                    }
                    let ostride = nw + 2;
                    let mut out = vec![f32::NAN; na * ostride];
                    // SAFETY: out holds na rows of ostride >= nw elements.
                    unsafe { k.dot_tile(ty, &w, &a, n, out.as_mut_ptr(), ostride) };
                    for i in 0..na {
                        for j in 0..nw {
                            let want = k.vec_dot(ty, &w[j * wr..][..wr], &a[i * ar..][..ar], n);
                            let got = out[i * ostride + j];
                            assert_eq!(got.to_bits(), want.to_bits(), "{} {ty} na={na} ({i},{j}): {got} vs {want}", k.name);
                        }
                    }
                }
            }
        }
    }
}

/// The tiles over repacked weights on every path that has them: each element
/// bit-equal to the one-row dot of the same table on the mapped bytes, whatever
/// the number of activation rows, the number of weight rows (odd, a partial
/// last group) or the group a call starts at (tasks start mid-weight).
#[test]
fn packed_tile_equals_single_dots_for_any_batch() {
    let mut rng = Rng(0x9ac4);
    let mut covered = Vec::new();
    for k in Kernels::available() {
        for ty in DOT_TYPES {
            if !k.has_packed(ty) {
                continue;
            }
            covered.push(format!("{} {ty}", k.name));
            let aty = ty.vec_dot_type();
            // 32-element types also at 64 and 320 elements (one and five
            // packed blocks: odd numbers of them).
            let ns: &[usize] = if ty.block_len() == 32 { &[256, 768, 64, 320] } else { &[256, 768] };
            for &n in ns {
                let (wr, ar) = (ty.row_bytes(n).unwrap(), aty.row_bytes(n).unwrap());
                for nw in [1, 7, 8, 13, 20, 27] {
                    let w: Vec<u8> = (0..nw).flat_map(|_| random_weights(ty, n, &mut rng)).collect();
                    let p = pack(ty, &w, nw, n).expect("packs");
                    for na in [1, 2, 3, 4, 5, 7, 8, 9, 17] {
                        let mut a = vec![0u8; ar * na];
                        for q in a.chunks_exact_mut(ar) {
                            let x: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 2.0)).collect();
                            k.quantize_act(aty, &x, q);
                        }
                        // The whole weight, then from its second group on.
                        for g0 in [0, 1] {
                            let j0 = g0 * GROUP;
                            if j0 >= nw {
                                continue;
                            }
                            let ostride = nw + 3;
                            let mut out = vec![f32::NAN; na * ostride];
                            // SAFETY: out holds na rows of ostride >= nw - j0 elements.
                            unsafe { k.packed_tile(&p, g0, nw - j0, &a, n, out.as_mut_ptr(), ostride) };
                            for i in 0..na {
                                for j in 0..ostride {
                                    let got = out[i * ostride + j];
                                    if j0 + j >= nw {
                                        assert!(got.is_nan(), "{} {ty}: wrote past the rows at ({i},{j})", k.name);
                                        continue;
                                    }
                                    let want = k.vec_dot(ty, &w[(j0 + j) * wr..][..wr], &a[i * ar..][..ar], n);
                                    assert_eq!(
                                        got.to_bits(),
                                        want.to_bits(),
                                        "{} {ty} n={n} nw={nw} na={na} g0={g0} ({i},{j}): {got} vs {want}",
                                        k.name
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        for name in Kernels::available().iter().map(|k| k.name).filter(|&n| n != "scalar") {
            for ty in ["Q4_K", "Q5_K", "Q6_K"] {
                assert!(covered.contains(&format!("{name} {ty}")), "{name}: no packed {ty} tile ({covered:?})");
            }
            // The 32-element types are packed on the 256-bit tables.
            for ty in ["Q8_0", "Q4_0", "Q4_1", "Q5_0"].iter().filter(|_| name != "avx512vnni") {
                assert!(covered.contains(&format!("{name} {ty}")), "{name}: no packed {ty} tile ({covered:?})");
            }
        }
    }
    eprintln!("packed tiles checked: {}", covered.join(", "));
}

#[test]
fn f16_dots_match_the_scalar_reference() {
    // Encoders (nomic-embed) ship F16 weight rows; every x86 table dots them with F16C + FMA.
    let mut rng = Rng(0xf16);
    let mut checked = 0;
    for k in Kernels::available() {
        #[cfg(target_arch = "x86_64")]
        if k.name != "scalar" {
            assert!(k.has_fast_dot(GgmlType::F16), "{}: no fast F16 dot", k.name);
        }
        if !k.has_fast_dot(GgmlType::F16) {
            continue;
        }
        for n in [256, 768, 4096, 100, 7, 1] {
            let w: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 0.2)).collect();
            let mut wb = vec![0u8; 2 * n];
            quantize(GgmlType::F16, &w, &mut wb).unwrap();
            for x in activations(n, &mut rng) {
                let mut a = vec![0u8; 2 * n];
                quantize(GgmlType::F16, &x, &mut a).unwrap();
                let want = vec_dot_ref(GgmlType::F16, &wb, &a, n).unwrap();
                let got = k.vec_dot(GgmlType::F16, &wb, &a, n);
                let mut rows = [f32::NAN; 1];
                k.vec_dot_rows(GgmlType::F16, &wb, &a, n, &mut rows);
                assert_eq!(rows[0].to_bits(), got.to_bits(), "{} n={n}: rows and one dot differ", k.name);
                let err = (got - want).abs() / n as f32;
                assert!(
                    err < MAX_REF_ERROR && err <= 1e-5 * want.abs().max(1.0),
                    "{} F16 n={n}: fast {got} vs reference {want}",
                    k.name
                );
                checked += 1;
            }
            // The tile (prefill): 7 weight rows x 9 activation rows (full 3 x 4 blocks and
            // every edge block), each element bit-equal to its one-row dot.
            let (nw, na) = (7, 9);
            let ws: Vec<u8> = (0..nw).flat_map(|_| {
                let w: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 0.2)).collect();
                let mut b = vec![0u8; 2 * n];
                quantize(GgmlType::F16, &w, &mut b).unwrap();
                b
            }).collect();
            let acts: Vec<u8> = (0..na).flat_map(|_| {
                let x: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 3.0)).collect();
                let mut b = vec![0u8; 2 * n];
                quantize(GgmlType::F16, &x, &mut b).unwrap();
                b
            }).collect();
            let mut out = vec![f32::NAN; na * nw];
            // SAFETY: out holds na rows of stride nw.
            unsafe { k.dot_tile(GgmlType::F16, &ws, &acts, n, out.as_mut_ptr(), nw) };
            for i in 0..na {
                for j in 0..nw {
                    let one = k.vec_dot(GgmlType::F16, &ws[j * 2 * n..(j + 1) * 2 * n], &acts[i * 2 * n..(i + 1) * 2 * n], n);
                    assert_eq!(out[i * nw + j].to_bits(), one.to_bits(), "{} F16 tile n={n} ({i}, {j})", k.name);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    assert!(checked > 0 || !is_x86_feature_detected!("f16c"));
}
