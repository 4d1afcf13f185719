//! The public API: ids, sizes, pairings, errors, and the quantizers gguf-py lacks
//! (Q8_1, Q8_K) checked against GGML's definitions.

use owl_quant::*;

#[test]
fn ids_names_and_sizes_are_ggmls() {
    // (type, id, name, block_len, block_bytes) from ggml.h / gguf GGML_QUANT_SIZES.
    let table = [
        (GgmlType::F32, 0, "F32", 1, 4),
        (GgmlType::F16, 1, "F16", 1, 2),
        (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
        (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
        (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
        (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
        (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
        (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
        (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
        (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
        (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
        (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
        (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
        (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
        (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
        (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
        (GgmlType::BF16, 30, "BF16", 1, 2),
    ];
    assert_eq!(table.len(), GgmlType::ALL.len());
    for (ty, id, name, bl, bb) in table {
        assert_eq!(ty.id(), id);
        assert_eq!(GgmlType::from_id(id), Some(ty));
        assert_eq!(ty.name(), name);
        assert_eq!(ty.to_string(), name);
        assert_eq!(ty.block_len(), bl, "{name}");
        assert_eq!(ty.block_bytes(), bb, "{name}");
        assert_eq!(ty.row_bytes(bl * 3), Some(bb * 3));
        if bl > 1 {
            assert_eq!(ty.row_bytes(bl + 1), None);
        }
    }
    for id in [4, 5, 16, 17, 18, 19, 21, 22, 24, 29, 31, 39, u32::MAX] {
        assert_eq!(GgmlType::from_id(id), None, "id {id}");
    }
}

#[test]
fn vec_dot_types_are_ggmls_pairings() {
    use GgmlType::*;
    for (w, a) in [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q4_0, Q8_0),
        (Q5_0, Q8_0),
        (Q8_0, Q8_0),
        (IQ4_NL, Q8_0),
        (Q4_1, Q8_1),
        (Q5_1, Q8_1),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (IQ4_XS, Q8_K),
    ] {
        assert_eq!(w.vec_dot_type(), a, "{w}");
        assert!(a.can_quantize(), "activation type {a} must be quantizable");
    }
    for t in [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS] {
        assert!(t.can_quantize());
    }
}

#[test]
fn bad_lengths_are_errors_not_panics() {
    let mut out = vec![0f32; 64];
    assert_eq!(
        dequantize(GgmlType::Q4_0, &[0u8; 35], &mut out),
        Err(QuantError::LengthMismatch {
            ty: GgmlType::Q4_0,
            what: "source bytes",
            expected: 36,
            got: 35
        })
    );
    let mut out = vec![0f32; 33];
    assert_eq!(
        dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out),
        Err(QuantError::NotBlockMultiple {
            ty: GgmlType::Q4_0,
            n: 33,
            block_len: 32
        })
    );
    let mut q = vec![0u8; 292];
    assert_eq!(quantize(GgmlType::Q8_K, &[0.0; 256], &mut q), Ok(()));
    let mut q = vec![0u8; 33];
    assert!(matches!(
        quantize(GgmlType::Q8_0, &[0.0; 32], &mut q),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q8_K, &[0.0; 255], &mut q),
        Err(QuantError::NotBlockMultiple { .. })
    ));

    // Activation row of the wrong type/size.
    let w = vec![0u8; 144];
    let a = vec![0u8; 8 * 34];
    assert!(matches!(
        vec_dot_ref(GgmlType::Q4_K, &w, &a, 256),
        Err(QuantError::LengthMismatch {
            ty: GgmlType::Q8_K,
            ..
        })
    ));
    assert!(matches!(
        vec_dot_ref(GgmlType::Q4_0, &w, &a, 100),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        as_blocks::<BlockQ4K>(&[0u8; 145]),
        Err(QuantError::LengthMismatch { .. })
    ));
    assert_eq!(as_blocks::<BlockQ4K>(&[0u8; 288]).unwrap().len(), 2);
    let msg = QuantError::UnsupportedQuantize { ty: GgmlType::Q6_K }.to_string();
    assert!(msg.contains("Q6_K"), "{msg}");
}

#[test]
fn empty_rows_are_fine() {
    assert_eq!(dequantize(GgmlType::Q4_K, &[], &mut []), Ok(()));
    assert_eq!(quantize(GgmlType::Q8_0, &[], &mut []), Ok(()));
    assert_eq!(vec_dot_ref(GgmlType::Q6_K, &[], &[], 0), Ok(0.0));
}

/// A deterministic spread of activations with a few exact ties.
fn acts(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.031 + (i as f32 * 0.7).sin())
        .collect()
}

#[test]
fn q8_k_quantize_is_ggmls_reference() {
    let x = acts(512);
    let mut q = vec![0u8; GgmlType::Q8_K.row_bytes(512).unwrap()];
    quantize(GgmlType::Q8_K, &x, &mut q).unwrap();
    for (b, xb) in as_blocks::<BlockQ8K>(&q).unwrap().iter().zip(x.chunks(256)) {
        // iscale = -127 / (value of largest magnitude); d = 1 / iscale.
        let max = xb
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let iscale = -127.0 / max;
        assert_eq!(b.d(), 1.0 / iscale);
        for (j, (&qj, &v)) in b.qs.iter().zip(xb).enumerate() {
            let want = (iscale * v).round_ties_even().min(127.0) as i8;
            assert_eq!(qj, want, "element {j}");
        }
        for j in 0..16 {
            let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(b.bsum(j) as i32, s);
        }
        // The largest-magnitude element maps to -127 exactly.
        assert!(b.qs.contains(&-127));
    }
    // All-zero block: zero scale, quants and sums.
    let mut q = vec![0xAAu8; 292];
    quantize(GgmlType::Q8_K, &[0.0; 256], &mut q).unwrap();
    assert!(q.iter().all(|&b| b == 0));
}

#[test]
fn q8_1_quantize_is_ggmls_reference() {
    let x = acts(64);
    let mut q = vec![0u8; 72];
    quantize(GgmlType::Q8_1, &x, &mut q).unwrap();
    let mut q0 = vec![0u8; 68];
    quantize(GgmlType::Q8_0, &x, &mut q0).unwrap();
    let blocks = as_blocks::<BlockQ8_1>(&q).unwrap();
    for (i, (b, b0)) in blocks
        .iter()
        .zip(as_blocks::<BlockQ8_0>(&q0).unwrap())
        .enumerate()
    {
        // Same d and quants as Q8_0 (round half away from zero), plus s = d * sum(q).
        assert_eq!(b.d, b0.d);
        assert_eq!(b.qs, b0.qs);
        assert_eq!(b.qs.iter().map(|&v| (v as i32).abs()).max(), Some(127));
        let sum: i32 = b.qs.iter().map(|&v| v as i32).sum();
        let d = x[32 * i..32 * i + 32]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            / 127.0;
        assert_eq!(b.s, f32_to_f16(sum as f32 * d), "block {i}");
    }
}

#[test]
fn rounding_helpers_match_ggml() {
    assert_eq!(nearest_int(2.5), 2);
    assert_eq!(nearest_int(3.5), 4);
    assert_eq!(nearest_int(-2.5), -2);
    assert_eq!(nearest_int(-126.6), -127);
    // Q8_0 uses roundf: half away from zero.
    let mut q = vec![0u8; 34];
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    quantize(GgmlType::Q8_0, &x, &mut q).unwrap();
    let b = &as_blocks::<BlockQ8_0>(&q).unwrap()[0];
    assert_eq!(&b.qs[..3], &[127, 3, -3]);
    // f16 conversion rounds to nearest even.
    assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), f32_to_f16(1.0));
    assert_eq!(f16_to_f32(f32_to_f16(65504.0)), 65504.0);
    // BF16: round to nearest even, NaN stays NaN (quiet).
    let mut out = [0u8; 4];
    quantize(
        GgmlType::BF16,
        &[1.0 + 2f32.powi(-8), f32::from_bits(0x7f80_0001)],
        &mut out,
    )
    .unwrap();
    assert_eq!(u16::from_le_bytes([out[0], out[1]]), 0x3f80);
    let mut back = [0f32; 2];
    dequantize(GgmlType::BF16, &out, &mut back).unwrap();
    assert!(back[1].is_nan());
}

/// Hand-built blocks decode to the values GGML's formulas give.
#[test]
fn hand_built_blocks_decode_as_documented() {
    // Q4_0: d = 0.5, element j = low nibble of qs[j], element j+16 = high nibble.
    let mut b = BlockQ4_0 {
        d: f32_to_f16(0.5),
        qs: [0; 16],
    };
    b.qs[0] = 0x1F; // el 0 -> 15, el 16 -> 1
    let mut y = [0f32; 32];
    dequantize(GgmlType::Q4_0, bytemuck::bytes_of(&b), &mut y).unwrap();
    assert_eq!((y[0], y[16], y[1]), (3.5, -3.5, -4.0));

    // Q5_0: the fifth bit of element j is bit j of qh.
    let mut b = BlockQ5_0 {
        d: f32_to_f16(1.0),
        qh: 0x0001_0001u32.to_le_bytes(),
        qs: [0; 16],
    };
    b.qs[0] = 0x2F; // el 0 -> 15|16 = 31, el 16 -> 2|16 = 18
    let mut y = [0f32; 32];
    dequantize(GgmlType::Q5_0, bytemuck::bytes_of(&b), &mut y).unwrap();
    assert_eq!((y[0], y[16], y[1]), (15.0, 2.0, -16.0));

    // Q4_K: sub-block 0 scale 2, min 1 -> x = d*2*q - dmin*1.
    let mut b: BlockQ4K = bytemuck::Zeroable::zeroed();
    b.d = f32_to_f16(1.0);
    b.dmin = f32_to_f16(0.5);
    b.scales[0] = 2;
    b.scales[4] = 1;
    b.qs[0] = 0x73; // el 0 -> 3 (sub-block 0); el 32 -> 7 (sub-block 1: scale 0, min 0)
    let mut y = [0f32; 256];
    dequantize(GgmlType::Q4_K, bytemuck::bytes_of(&b), &mut y).unwrap();
    assert_eq!((y[0], y[1], y[32]), (5.5, -0.5, 0.0));

    // Q6_K: q = 6 bits minus 32, scaled by d * scales[el / 16].
    let mut b: BlockQ6K = bytemuck::Zeroable::zeroed();
    b.d = f32_to_f16(0.25);
    b.scales[0] = 4;
    b.scales[2] = -2;
    b.ql[0] = 0x05; // el 0 low nibble 5, el 64 low nibble 0
    b.qh[0] = 0b10; // el 0 high bits 2 -> q = 5 | 32 = 37 -> 5
    b.ql[32] = 0x01; // el 32 low nibble 1, high bits (qh[0] >> 2) & 3 = 0 -> 1 - 32
    let mut y = [0f32; 256];
    dequantize(GgmlType::Q6_K, bytemuck::bytes_of(&b), &mut y).unwrap();
    assert_eq!((y[0], y[32]), (5.0, 0.25 * -2.0 * -31.0));
}
