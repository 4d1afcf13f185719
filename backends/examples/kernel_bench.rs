//! Micro benchmark of the CPU dot kernels (single thread, std::time; not a test).
//!
//!     cargo run --release -p owl-backends --example kernel_bench [rows] [cols]
//!
//! For each kernel path this CPU has and each weight type: a matvec of
//! `rows` x `cols` weights (default 2048 x 2048) against one quantized
//! activation row, reported as weight GB/s and ns per row; plus activation
//! quantization and scalar dequantization throughput.
//!
//! `OWL_KB_TYPES=Q5_0,Q4_K` limits the weight types; each figure is the best
//! of `OWL_KB_REPS` runs (default 5; more settles a noisy machine).

use std::hint::black_box;
use std::time::Instant;

use owl_backends::cpu::kernels::Kernels;
use owl_quant::GgmlType;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f(); // warm up
    let reps: usize = std::env::var("OWL_KB_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = *args.first().unwrap_or(&2048);
    let cols = *args.get(1).unwrap_or(&2048);
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.3)
        .collect();
    let types = [
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
    let only = std::env::var("OWL_KB_TYPES").ok();
    let types: Vec<GgmlType> = types
        .into_iter()
        .filter(|t| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n.eq_ignore_ascii_case(t.name())))
        })
        .collect();
    println!("matvec {rows} x {cols}, one thread; weight GB/s (ns per row)");
    let paths = Kernels::available();
    print!("{:8}", "type");
    for k in &paths {
        print!("{:>22}", k.name);
    }
    println!();
    for &ty in &types {
        let rb = ty.row_bytes(cols).expect("cols must be a multiple of 256");
        // Pseudo-random bytes with small, finite f16 scales everywhere.
        let mut w: Vec<u8> = (0..rb * rows)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            sanitize(ty, b);
        }
        let aty = ty.vec_dot_type();
        let mut a = vec![0u8; aty.row_bytes(cols).unwrap()];
        let mut out = vec![0f32; rows];
        print!("{:8}", ty.name());
        for k in &paths {
            k.quantize_act(aty, &x, &mut a);
            let s = time(|| {
                k.vec_dot_rows(ty, black_box(&w), black_box(&a), cols, &mut out);
                black_box(&out);
            });
            print!(
                "{:>12.2} ({:>6.0})",
                (rb * rows) as f64 / s / 1e9,
                s / rows as f64 * 1e9
            );
        }
        println!();
    }
    // Decode: the matmul tile over one activation row (the four-row decode
    // kernels), in runs of 256 weight rows as the matmul's decode tasks take them.
    println!("\ndecode tile, 1 activation row x {rows} x {cols}, one thread; weight GB/s");
    print!("{:8}", "type");
    for k in &paths {
        print!("{:>22}", k.name);
    }
    println!();
    for &ty in &types {
        let rb = ty.row_bytes(cols).unwrap();
        let mut w: Vec<u8> = (0..rb * rows)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            sanitize(ty, b);
        }
        let aty = ty.vec_dot_type();
        let mut a = vec![0u8; aty.row_bytes(cols).unwrap()];
        let mut out = vec![0f32; rows];
        print!("{:8}", ty.name());
        for k in &paths {
            k.quantize_act(aty, &x, &mut a);
            let s = time(|| {
                for j0 in (0..rows).step_by(256) {
                    let j1 = (j0 + 256).min(rows);
                    // SAFETY: out holds `rows` elements; j0..j1 are written.
                    unsafe {
                        k.dot_tile(
                            ty,
                            black_box(&w[j0 * rb..j1 * rb]),
                            black_box(&a),
                            cols,
                            out.as_mut_ptr().add(j0),
                            rows,
                        )
                    };
                }
                black_box(&out);
            });
            print!("{:>22.2}", (rb * rows) as f64 / s / 1e9);
        }
        println!();
    }
    // The same decode matvec over repacked weights, where a path packs the type
    // (runs of 256 rows = 32 groups; `-` where the path keeps the mapped layout).
    println!("\npacked decode tile, 1 activation row x {rows} x {cols}, one thread; weight GB/s");
    for &ty in &types {
        let rb = ty.row_bytes(cols).unwrap();
        let mut w: Vec<u8> = (0..rb * rows)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            sanitize(ty, b);
        }
        let Some(p) = owl_backends::cpu::repack::pack(ty, &w, rows, cols) else {
            continue;
        };
        let aty = ty.vec_dot_type();
        let mut a = vec![0u8; aty.row_bytes(cols).unwrap()];
        let mut out = vec![0f32; rows];
        print!("{:8}", ty.name());
        for k in &paths {
            if !k.has_packed(ty) {
                print!("{:>22}", "-");
                continue;
            }
            k.quantize_act(aty, &x, &mut a);
            let s = time(|| {
                for j0 in (0..rows).step_by(256) {
                    let j1 = (j0 + 256).min(rows);
                    // SAFETY: out holds `rows` elements; j0..j1 are written.
                    unsafe {
                        k.packed_tile(
                            &p,
                            j0 / 8,
                            j1 - j0,
                            black_box(&a),
                            cols,
                            out.as_mut_ptr().add(j0),
                            rows,
                        )
                    };
                }
                black_box(&out);
            });
            print!("{:>22.2}", (rb * rows) as f64 / s / 1e9);
        }
        println!();
    }
    // Prefill: the matmul tile over 64 activation rows (what a 512-token
    // prompt runs per row block), reported as giga multiply-adds per second.
    let na = 64;
    println!("\ntile {na} activation rows x {rows} x {cols}, one thread; GMAC/s");
    print!("{:8}", "type");
    for k in &paths {
        print!("{:>22}", k.name);
    }
    println!();
    for &ty in &types {
        let rb = ty.row_bytes(cols).unwrap();
        let mut w: Vec<u8> = (0..rb * rows)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            sanitize(ty, b);
        }
        let aty = ty.vec_dot_type();
        let ar = aty.row_bytes(cols).unwrap();
        let mut out = vec![0f32; na * rows];
        print!("{:8}", ty.name());
        for k in &paths {
            let mut a = vec![0u8; ar * na];
            for q in a.chunks_exact_mut(ar) {
                k.quantize_act(aty, &x, q);
            }
            let s = time(|| {
                // Runs of 32 weight rows, as the matmul hands them to its tasks.
                for j0 in (0..rows).step_by(32) {
                    let j1 = (j0 + 32).min(rows);
                    // SAFETY: out holds na rows of `rows` elements; columns j0..j1 are written.
                    unsafe {
                        k.dot_tile(
                            ty,
                            black_box(&w[j0 * rb..j1 * rb]),
                            black_box(&a),
                            cols,
                            out.as_mut_ptr().add(j0),
                            rows,
                        )
                    };
                }
                black_box(&out);
            });
            print!("{:>22.2}", (na * rows * cols) as f64 / s / 1e9);
        }
        println!();
    }
    // The same prefill tile over repacked weights, where a path packs the type
    // (runs of 64 weight rows = 8 groups, as the matmul's prefill tasks take them).
    println!("\npacked tile {na} activation rows x {rows} x {cols}, one thread; GMAC/s");
    for &ty in &types {
        let rb = ty.row_bytes(cols).unwrap();
        let mut w: Vec<u8> = (0..rb * rows)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            sanitize(ty, b);
        }
        let Some(p) = owl_backends::cpu::repack::pack(ty, &w, rows, cols) else {
            continue;
        };
        let aty = ty.vec_dot_type();
        let ar = aty.row_bytes(cols).unwrap();
        let mut out = vec![0f32; na * rows];
        print!("{:8}", ty.name());
        for k in &paths {
            if !k.has_packed(ty) {
                print!("{:>22}", "-");
                continue;
            }
            let mut a = vec![0u8; ar * na];
            for q in a.chunks_exact_mut(ar) {
                k.quantize_act(aty, &x, q);
            }
            let s = time(|| {
                for j0 in (0..rows).step_by(64) {
                    let j1 = (j0 + 64).min(rows);
                    // SAFETY: out holds na rows of `rows` elements; columns j0..j1 are written.
                    unsafe {
                        k.packed_tile(&p, j0 / 8, j1 - j0, black_box(&a), cols, out.as_mut_ptr().add(j0), rows)
                    };
                }
                black_box(&out);
            });
            print!("{:>22.2}", (na * rows * cols) as f64 / s / 1e9);
        }
        println!();
    }
    println!("\nactivation quantization of {cols} floats, ns per row");
    for aty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        print!("{:8}", aty.name());
        let mut a = vec![0u8; aty.row_bytes(cols).unwrap()];
        for k in &paths {
            let s = time(|| {
                for _ in 0..100 {
                    k.quantize_act(aty, black_box(&x), &mut a);
                }
            });
            print!("{:>22.0}", s / 100.0 * 1e9);
        }
        println!();
    }
    println!("\nscalar dequantize (owl_quant::dequantize), output Gfloat/s");
    for ty in types.iter().copied().chain([GgmlType::F16, GgmlType::BF16]) {
        let rb = ty.row_bytes(cols).unwrap();
        let mut w: Vec<u8> = (0..rb * rows)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            sanitize(ty, b);
        }
        let mut y = vec![0f32; rows * cols];
        let s = time(|| owl_quant::dequantize(ty, black_box(&w), &mut y).unwrap());
        println!("{:8}{:>10.2}", ty.name(), (rows * cols) as f64 / s / 1e9);
    }
}

/// Overwrites the f16 scale fields of one block with 0.01 (finite, small).
fn sanitize(ty: GgmlType, b: &mut [u8]) {
    let h = owl_quant::f32_to_f16(0.01);
    let at: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            &[0]
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::F16 => &[0],
        _ => &[],
    };
    for &o in at {
        b[o..o + 2].copy_from_slice(&h);
    }
    if ty == GgmlType::BF16 {
        b[1] &= 0x3f;
    }
}
