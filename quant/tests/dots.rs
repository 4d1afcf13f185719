//! Reference dots against float dots, with GGML's per-type error budgets
//! (llama.cpp tests/test-quantize-fns.cpp).

use owl_quant::*;

/// test-quantize-fns.cpp constants.
const MAX_QUANTIZATION_REFERENCE_ERROR: f32 = 0.0001;
const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f32 = 0.0075;
const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f32 = 0.0040;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;
const MAX_DOT_PRODUCT_ERROR_LOWBIT: f32 = 0.04;

const TEST_SIZE: usize = 32 * 128;

/// `generate_data` of test-quantize-fns.cpp.
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + amplitude * (i as f32 + offset).cos())
        .collect()
}

/// `array_rmse` of test-quantize-fns.cpp (sqrt of the sum, over n, as there).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (sum.sqrt() as f32) / a.len() as f32
}

fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize(ty, x, &mut q).unwrap();
    q
}

fn dequantized(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    dequantize(ty, q, &mut y).unwrap();
    y
}

/// test-quantize-fns' total-error budget: looser for the 2- and 3-bit types.
fn total_budget(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::Q2_K => MAX_QUANTIZATION_TOTAL_ERROR_2BITS,
        GgmlType::Q3_K => MAX_QUANTIZATION_TOTAL_ERROR_3BITS,
        _ => MAX_QUANTIZATION_TOTAL_ERROR,
    }
}

fn dot_budget(ty: GgmlType) -> f32 {
    if ty == GgmlType::Q2_K {
        MAX_DOT_PRODUCT_ERROR_LOWBIT
    } else {
        MAX_DOT_PRODUCT_ERROR
    }
}

/// test_vec_dot_q for the types owl-quant can quantize: total quantization error
/// and the dot of quantized weights with quantized activations against the float
/// dot of the original data.
#[test]
fn ggml_quantize_fns_budgets_for_quantizable_types() {
    let w = generate_data(0.0, TEST_SIZE, 2.0);
    let x = generate_data(1.0, TEST_SIZE, 2.0);
    let want = dot_f64(&w, &x) as f32;
    for ty in GgmlType::ALL.into_iter().filter(|t| t.can_quantize()) {
        let wq = quantized(ty, &w);
        let total = array_rmse(&w, &dequantized(ty, &wq, TEST_SIZE));
        assert!(
            total < total_budget(ty),
            "{ty}: total quantization error {total}"
        );

        let aty = ty.vec_dot_type();
        let xq = quantized(aty, &x);
        let got = vec_dot_ref(ty, &wq, &xq, TEST_SIZE).unwrap();
        let err = (got - want).abs() / TEST_SIZE as f32;
        assert!(
            err < dot_budget(ty),
            "{ty}: dot error {err} (got {got}, want {want})"
        );
    }
}

/// xorshift64*: deterministic test bytes without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    fn signed(&mut self, lo: f32, hi: f32) -> f32 {
        let v = self.range(lo, hi);
        if self.next() & 1 == 0 {
            v
        } else {
            -v
        }
    }
}

/// Random but well-scaled weight blocks of any type: random quant bits, scales
/// chosen so dequantized values are O(1).
fn random_weights(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(n).unwrap()];
    for b in q.iter_mut() {
        *b = rng.next() as u8;
    }
    macro_rules! fix {
        ($B:ty, |$b:ident| $body:expr) => {
            for $b in as_blocks_mut::<$B>(&mut q).unwrap() {
                $body;
            }
        };
    }
    match ty {
        GgmlType::F32 => {
            return quantized(
                ty,
                &(0..n).map(|_| rng.signed(0.0, 1.5)).collect::<Vec<_>>(),
            )
        }
        GgmlType::F16 | GgmlType::BF16 => {
            return quantized(
                ty,
                &(0..n).map(|_| rng.signed(0.0, 1.5)).collect::<Vec<_>>(),
            )
        }
        GgmlType::Q4_0 => fix!(BlockQ4_0, |b| b.d = f32_to_f16(rng.signed(0.1, 0.3))),
        GgmlType::Q4_1 => fix!(BlockQ4_1, |b| {
            b.d = f32_to_f16(rng.range(0.05, 0.2));
            b.m = f32_to_f16(rng.signed(0.0, 1.5))
        }),
        GgmlType::Q5_0 => fix!(BlockQ5_0, |b| b.d = f32_to_f16(rng.signed(0.05, 0.12))),
        GgmlType::Q5_1 => fix!(BlockQ5_1, |b| {
            b.d = f32_to_f16(rng.range(0.03, 0.1));
            b.m = f32_to_f16(rng.signed(0.0, 1.5))
        }),
        GgmlType::Q8_0 => fix!(BlockQ8_0, |b| b.d = f32_to_f16(rng.signed(0.005, 0.02))),
        GgmlType::Q8_1 => fix!(BlockQ8_1, |b| {
            b.d = f32_to_f16(rng.range(0.005, 0.02));
            let s: i32 = b.qs.iter().map(|&v| v as i32).sum();
            b.s = f32_to_f16(s as f32 * f16_to_f32(b.d))
        }),
        GgmlType::Q2_K => fix!(BlockQ2K, |b| {
            b.d = f32_to_f16(rng.range(0.02, 0.06));
            b.dmin = f32_to_f16(rng.range(0.02, 0.06))
        }),
        GgmlType::Q3_K => fix!(BlockQ3K, |b| b.d = f32_to_f16(rng.signed(0.01, 0.03))),
        GgmlType::Q4_K => fix!(BlockQ4K, |b| {
            b.d = f32_to_f16(rng.range(0.002, 0.005));
            b.dmin = f32_to_f16(rng.range(0.002, 0.005))
        }),
        GgmlType::Q5_K => fix!(BlockQ5K, |b| {
            b.d = f32_to_f16(rng.range(0.001, 0.003));
            b.dmin = f32_to_f16(rng.range(0.002, 0.005))
        }),
        GgmlType::Q6_K => fix!(BlockQ6K, |b| b.d = f32_to_f16(rng.signed(0.0002, 0.0006))),
        GgmlType::Q8_K => fix!(BlockQ8K, |b| {
            b.d = rng.signed(0.005, 0.02).to_le_bytes();
            for j in 0..16 {
                let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum();
                b.bsums[j] = (s as i16).to_le_bytes();
            }
        }),
        GgmlType::IQ4_NL => fix!(BlockIQ4NL, |b| b.d = f32_to_f16(rng.signed(0.005, 0.015))),
        GgmlType::IQ4_XS => fix!(BlockIQ4XS, |b| b.d = f32_to_f16(rng.signed(0.0003, 0.0006))),
    }
    q
}

/// For every weight type: the reference dot of random weights with quantized
/// activations equals the float dot of the two dequantized operands, well within
/// GGML's reference-error budget (they differ only by float rounding), and the
/// float dot of dequantized weights with the original activations within GGML's
/// dot-product budget.
#[test]
fn vec_dot_ref_agrees_with_dequantized_dot_for_every_type() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let x = generate_data(1.0, TEST_SIZE, 2.0);
    let mut report = Vec::new();
    for ty in GgmlType::ALL {
        for trial in 0..4 {
            let wq = random_weights(ty, TEST_SIZE, &mut rng);
            let w = dequantized(ty, &wq, TEST_SIZE);
            assert!(w.iter().all(|v| v.is_finite()), "{ty}: non-finite weights");
            let aty = ty.vec_dot_type();
            let xq = quantized(aty, &x);
            let xd = dequantized(aty, &xq, TEST_SIZE);
            let got = vec_dot_ref(ty, &wq, &xq, TEST_SIZE).unwrap();

            let exact = dot_f64(&w, &xd) as f32;
            let ref_err = (got - exact).abs() / TEST_SIZE as f32;
            assert!(
                ref_err < MAX_QUANTIZATION_REFERENCE_ERROR,
                "{ty} trial {trial}: ref dot {got} vs dequantized dot {exact}: error {ref_err}"
            );
            let orig = dot_f64(&w, &x) as f32;
            let dot_err = (got - orig).abs() / TEST_SIZE as f32;
            assert!(
                dot_err < dot_budget(ty),
                "{ty} trial {trial}: ref dot {got} vs float dot {orig}: error {dot_err}"
            );
            if trial == 0 {
                report.push(format!(
                    "{ty}: ref err {ref_err:.2e}, dot err {dot_err:.2e}"
                ));
            }
        }
    }
    println!("{}", report.join("\n"));
}

/// Dots are additive over blocks: a row split in two gives the same sum (up to
/// the float order), so no block is skipped or read twice.
#[test]
fn vec_dot_ref_covers_every_block() {
    let mut rng = Rng(42);
    for ty in GgmlType::ALL {
        let aty = ty.vec_dot_type();
        let n = 512;
        let wq = random_weights(ty, n, &mut rng);
        let x: Vec<f32> = (0..n).map(|_| rng.signed(0.0, 1.0)).collect();
        let xq = quantized(aty, &x);
        let whole = vec_dot_ref(ty, &wq, &xq, n).unwrap();
        let (wb, ab) = (ty.row_bytes(256).unwrap(), aty.row_bytes(256).unwrap());
        let a = vec_dot_ref(ty, &wq[..wb], &xq[..ab], 256).unwrap();
        let b = vec_dot_ref(ty, &wq[wb..], &xq[ab..], 256).unwrap();
        assert!(
            (whole - (a + b)).abs() <= 1e-4 * (a.abs() + b.abs() + 1.0),
            "{ty}: {whole} != {a} + {b}"
        );
        assert!(a != 0.0 && b != 0.0, "{ty}: a half dot is exactly zero");
    }
}
