//! GGUF reader/writer tests: round trips, accessors, hostile bytes built in memory,
//! a mutation fuzz, split models, and every synthetic and real model.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use owl_engine::gguf::{GgmlType, Gguf, GgufError, GgufWriter, Metadata, Value};

fn open_bytes(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
    Gguf::from_bytes(Arc::new(bytes))
}

/// Raw GGUF bytes, for files the writer refuses to produce.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.bytes(&x.to_le_bytes())
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.bytes(&x.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A key with a u32 value.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor_info(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
}

/// A writer holding one value of every type (nested arrays included) and three tensors.
fn sample_writer() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("general.name", "tiny test")
        .set("llama.block_count", 2u32)
        .set("llama.attention.head_count", 4u32)
        .set("llama.rope.freq_base", 10000.0f32)
        .set("t.u8", 200u8)
        .set("t.i8", -5i8)
        .set("t.u16", 60000u16)
        .set("t.i16", -30000i16)
        .set("t.i32", -7i32)
        .set("t.u64", 1u64 << 40)
        .set("t.i64", -(1i64 << 40))
        .set("t.f64", 2.5f64)
        .set("t.bool", true)
        .set("t.strings", vec!["a", "bé", ""])
        .set("t.scores", vec![0.5f32, -1.0, 3.25])
        .set("t.ids", vec![1i32, -2, 3])
        .set(
            "t.nested",
            Value::Array(vec![
                Value::Array(vec![Value::U32(1), Value::U32(2)]),
                Value::Array(vec![Value::U32(3)]),
            ]),
        );
    let f32s: Vec<u8> = (0..64).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("a.weight", &[16, 4], GgmlType::F32, f32s)
        .unwrap();
    let q4: Vec<u8> = (0..18 * 4).map(|i| i as u8).collect();
    w.add_tensor("b.weight", &[64, 2], GgmlType::Q4_0, q4)
        .unwrap();
    let q8: Vec<u8> = (0..34 * 3).map(|i| (i * 7) as u8).collect();
    w.add_tensor("c.weight", &[32, 3], GgmlType::Q8_0, q8)
        .unwrap();
    w
}

#[test]
fn write_then_read_round_trip() {
    for (version, align) in [(3u32, None), (2, None), (3, Some(64u32)), (3, Some(1))] {
        let mut w = sample_writer().with_version(version);
        if let Some(a) = align {
            w.set_alignment(a);
        }
        let bytes = w.to_bytes().unwrap();
        let g = open_bytes(bytes.clone()).unwrap();
        assert_eq!(g.version(), version);
        let align = align.unwrap_or(32) as usize;
        assert_eq!(g.alignment(), align);
        // Every key and value comes back, in order.
        let written: Vec<_> = w.metadata().iter().collect();
        let read: Vec<_> = g.metadata().iter().collect();
        assert_eq!(written, read);
        assert_eq!(g.tensors().len(), 3);
        let b = g.tensor("b.weight").unwrap();
        assert_eq!(b.ty, GgmlType::Q4_0);
        assert_eq!(b.dims, vec![64, 2]);
        assert_eq!((b.n_elements(), b.n_rows(), b.size), (128, 2, 72));
        assert_eq!(
            g.tensor_data(b),
            (0..72).map(|i| i as u8).collect::<Vec<_>>()
        );
        let a = g.tensor("a.weight").unwrap();
        assert_eq!(&g.tensor_data(a)[4..8], &1.0f32.to_le_bytes());
        for t in g.tensors() {
            assert_eq!(t.offset % align, 0, "{} misaligned", t.name);
            let owner = g.tensor_owner(t);
            let owner: &[u8] = (*owner).as_ref();
            assert_eq!(&owner[t.offset..t.offset + t.size], g.tensor_data(t));
            assert!(std::ptr::eq(owner.as_ptr(), bytes_ptr(&g, t)));
        }
        assert!(g.tensor("missing").is_none());
    }
}

fn bytes_ptr(g: &Gguf, t: &owl_engine::gguf::TensorInfo) -> *const u8 {
    let d = g.tensor_data(t);
    // tensor_data is owner[offset..]: step back to the owner's start.
    d.as_ptr().wrapping_sub(t.offset)
}

#[test]
fn writer_refuses_wrong_sizes_and_mixed_arrays() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("x", &[33, 1], GgmlType::Q4_0, vec![0u8; 18])
        .unwrap_err();
    assert!(e.to_string().contains("32"), "{e}");
    let e = w
        .add_tensor("x", &[32], GgmlType::Q4_0, vec![0u8; 17])
        .unwrap_err();
    assert!(e.to_string().contains("needs 18 bytes"), "{e}");
    w.add_tensor("x", &[32], GgmlType::Q4_0, vec![0u8; 18])
        .unwrap();
    assert!(w
        .add_tensor("x", &[32], GgmlType::Q4_0, vec![0u8; 18])
        .is_err());
    w.set("mixed", Value::Array(vec![Value::U32(1), Value::F32(1.0)]));
    let e = w.to_bytes().unwrap_err();
    assert!(e.to_string().contains("mixed"), "{e}");
}

#[test]
fn typed_accessors() {
    let g = open_bytes(sample_writer().to_bytes().unwrap()).unwrap();
    let md = g.metadata();
    assert_eq!(g.arch().unwrap(), "llama");
    assert_eq!(md.get::<&str>("general.name").unwrap(), "tiny test");
    assert_eq!(md.get::<String>("general.name").unwrap(), "tiny test");
    // Arch prefix applied.
    assert_eq!(md.arch_get::<u32>("attention.head_count").unwrap(), 4);
    assert_eq!(md.arch_get::<f32>("rope.freq_base").unwrap(), 10000.0);
    // Widening and lossless integer conversions.
    assert_eq!(md.arch_get::<u64>("block_count").unwrap(), 2);
    assert_eq!(md.arch_get::<usize>("block_count").unwrap(), 2);
    assert_eq!(md.get::<i64>("t.u8").unwrap(), 200);
    assert_eq!(md.get::<i32>("t.i32").unwrap(), -7);
    assert_eq!(md.get::<u64>("t.u64").unwrap(), 1 << 40);
    assert_eq!(md.get::<f64>("t.f64").unwrap(), 2.5);
    assert!(md.get::<bool>("t.bool").unwrap());
    // A negative value does not read as unsigned; a big one not as u32.
    let e = md.get::<u32>("t.i32").unwrap_err();
    assert_eq!(e.to_string(), "metadata key 't.i32' is i32, expected u32");
    assert!(md.get::<u32>("t.u64").is_err());
    // Arrays.
    assert_eq!(
        md.get::<Vec<String>>("t.strings").unwrap(),
        vec!["a", "bé", ""]
    );
    assert_eq!(
        md.get::<Vec<&str>>("t.strings").unwrap(),
        vec!["a", "bé", ""]
    );
    assert_eq!(
        md.get::<Vec<f32>>("t.scores").unwrap(),
        vec![0.5, -1.0, 3.25]
    );
    assert_eq!(md.get::<Vec<i32>>("t.ids").unwrap(), vec![1, -2, 3]);
    assert!(md.get::<Vec<u32>>("t.ids").is_err());
    let e = md.get::<Vec<f32>>("t.strings").unwrap_err();
    assert!(e.to_string().contains("array of 3 string"), "{e}");
    // Required vs optional vs defaulted.
    let e = md.arch_get::<u32>("context_length").unwrap_err();
    assert_eq!(e.to_string(), "missing metadata key 'llama.context_length'");
    assert_eq!(md.arch_get_opt::<u32>("context_length").unwrap(), None);
    assert_eq!(md.arch_get_or("context_length", 2048u32).unwrap(), 2048);
    assert_eq!(md.arch_get_or("block_count", 9u32).unwrap(), 2);
    // A defaulted key of the wrong type is still an error, not the default.
    assert!(md.get_or("general.name", 1u32).is_err());
    // No architecture: arch accessors name the missing key.
    let mut bare = Metadata::new();
    bare.insert("x", 1u32);
    let e = bare.arch_get::<u32>("x").unwrap_err();
    assert!(e.to_string().contains("general.architecture"), "{e}");
}

#[test]
fn display_abbreviates_long_arrays() {
    let v: Value = (0..1000u32).collect::<Vec<_>>().into();
    let s = v.display_abbrev(4, 40);
    assert_eq!(s, "[0, 1, 2, 3, ... 996 more]");
    let v = Value::String("x".repeat(100));
    assert!(v.display_abbrev(4, 10).contains("(100 chars)"));
}

fn err_of(bytes: Vec<u8>) -> String {
    match open_bytes(bytes) {
        Ok(_) => panic!("hostile file parsed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_headers() {
    assert!(err_of(b"GGML\x03\0\0\0".to_vec()).contains("not a GGUF file"));
    assert!(err_of(vec![]).contains("not a GGUF file"));
    assert!(err_of(Raw::header(1, 0, 0).0).contains("unsupported GGUF version 1"));
    assert!(err_of(Raw::header(4, 0, 0).0).contains("unsupported GGUF version 4"));
    // Counts far beyond what the file can hold are refused before allocating.
    assert!(err_of(Raw::header(3, 0, u64::MAX).0).contains("metadata entries"));
    assert!(err_of(Raw::header(3, u64::MAX, 0).0).contains("tensor infos"));
    assert!(err_of(Raw::header(3, 1 << 40, 0).0).contains("tensor infos"));
    // An empty but valid file.
    let g = open_bytes(Raw::header(3, 0, 0).0).unwrap();
    assert!(g.tensors().is_empty() && g.metadata().is_empty());
}

#[test]
fn hostile_metadata() {
    // String length past the end.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).bytes(&[b'a'; 40]);
    let e = err_of(r.0);
    assert!(e.contains("truncated") && e.contains("metadata key"), "{e}");
    // Array of 2^60 u64 values in a tiny file: refused without allocating.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(10).u64(1 << 60).u64(0);
    let e = err_of(r.0);
    assert!(
        e.contains("array of 1152921504606846976 u64") && e.contains("'k'"),
        "{e}"
    );
    // Unknown value type, also inside an array.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(err_of(r.0).contains("unknown metadata value type 13"));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(77).u64(0);
    assert!(err_of(r.0).contains("unknown metadata value type 77"));
    // Arrays nested 100 deep.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9);
    for _ in 0..100 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    let e = err_of(r.0);
    assert!(e.contains("nested deeper"), "{e}");
    // Nesting within the limit parses.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9);
    for _ in 0..3 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(1).u32(42);
    let g = open_bytes(r.0).unwrap();
    let v = g.metadata().value("k").unwrap();
    assert_eq!(v.to_string(), "[[[[42]]]]");
    // A bool that is neither 0 nor 1.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(7).bytes(&[2]);
    assert!(err_of(r.0).contains("bool value 2"));
    // Duplicate key.
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2);
    assert!(err_of(r.0).contains("duplicate metadata key 'k'"));
    // Alignment must be a power of two.
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 24);
    assert!(err_of(r.0).contains("general.alignment = 24"));
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 0);
    assert!(err_of(r.0).contains("general.alignment = 0"));
}

/// A file with one tensor info as given, data padded after it.
fn one_tensor(dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 0);
    r.tensor_info("t", dims, ty, offset).pad_to(32);
    r.0.extend(std::iter::repeat_n(0u8, data_len));
    r.0
}

#[test]
fn hostile_tensor_table() {
    // A correct one first, so the failures below are about the one thing changed.
    let g = open_bytes(one_tensor(&[32, 2], 8, 0, 68)).unwrap();
    assert_eq!(g.tensor("t").unwrap().size, 68);
    let e = err_of(one_tensor(&[32, 2], 99, 0, 68));
    assert_eq!(e, "tensor 't' has unknown tensor type 99");
    let e = err_of(one_tensor(&[32, 2], 8, 0, 67));
    assert!(e.contains("lies outside the file"), "{e}");
    let e = err_of(one_tensor(&[32, 2], 8, 64, 68));
    assert!(e.contains("lies outside the file"), "{e}");
    let e = err_of(one_tensor(&[32, 2], 8, u64::MAX - 31, 68));
    assert!(e.contains("lies outside the file"), "{e}");
    let e = err_of(one_tensor(&[32, 2], 8, 4, 68));
    assert!(e.contains("not a multiple of the alignment"), "{e}");
    let e = err_of(one_tensor(&[1, 2, 3, 4, 5], 0, 0, 480));
    assert!(e.contains("5 dimensions"), "{e}");
    let e = err_of(one_tensor(&[1 << 32, 1 << 32, 1 << 32], 0, 0, 0));
    assert!(e.contains("overflows"), "{e}");
    let e = err_of(one_tensor(&[1 << 62, 4], 0, 0, 0));
    assert!(e.contains("overflows"), "{e}");
    let e = err_of(one_tensor(&[u64::MAX], 0, 0, 0));
    assert!(e.contains("above 2^63"), "{e}");
    let e = err_of(one_tensor(&[33, 2], 8, 0, 68));
    assert!(e.contains("row length 33") && e.contains("Q8_0"), "{e}");
    // Tensor name length past the end.
    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 50).bytes(&[0; 40]);
    assert!(err_of(r.0).contains("tensor name"));
    // Duplicate tensor names.
    let mut r = Raw::header(3, 2, 0);
    r.tensor_info("t", &[32], 0, 0)
        .tensor_info("t", &[32], 0, 128)
        .pad_to(32);
    r.0.extend([0u8; 256]);
    assert!(err_of(r.0).contains("duplicate tensor name 't'"));
    // Zero-sized tensors are fine and lie at the data start.
    let g = open_bytes(one_tensor(&[0, 5], 0, 0, 0)).unwrap();
    assert_eq!(g.tensor("t").unwrap().size, 0);
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = sample_writer().to_bytes().unwrap();
    let full = bytes.len();
    open_bytes(bytes.clone()).unwrap();
    for len in 0..full {
        // The last tensor's padding is not data: cutting only padding may still parse.
        match open_bytes(bytes[..len].to_vec()) {
            Ok(g) => {
                let end = g.tensors().iter().map(|t| t.offset + t.size).max().unwrap();
                assert!(len >= end, "prefix of {len} bytes parsed");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Shares one buffer among many parses: a prefix view, no copy.
struct Prefix(Arc<Vec<u8>>, usize);
impl AsRef<[u8]> for Prefix {
    fn as_ref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

/// A small deterministic PRNG (xorshift64*), so a failing case can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutates `base` (flip bits, overwrite bytes or 8-byte words with hostile values,
/// truncate) `iterations` times and parses each result. Returns (runs, ok, panics).
fn mutation_fuzz(
    base: Vec<u8>,
    span: usize,
    iterations: usize,
    seed: u64,
) -> (usize, usize, usize) {
    let mut rng = Rng(seed);
    let mut buf = Arc::new(base.clone());
    let (mut ok, mut panics) = (0, 0);
    let hostile: [u64; 8] = [
        0,
        1,
        u64::MAX,
        u64::MAX / 2,
        1 << 32,
        1 << 62,
        0xFFFF_FFFF,
        13,
    ];
    for i in 0..iterations {
        let data = Arc::get_mut(&mut buf).expect("no parse holds the buffer");
        data.copy_from_slice(&base);
        let n_mut = 1 + rng.below(4);
        for _ in 0..n_mut {
            let at = rng.below(span);
            match rng.below(4) {
                0 => data[at] ^= 1 << rng.below(8),
                1 => data[at] = rng.next() as u8,
                _ => {
                    let v = hostile[rng.below(hostile.len())].to_le_bytes();
                    let end = (at + 8).min(data.len());
                    data[at..end].copy_from_slice(&v[..end - at]);
                }
            }
        }
        let len = if i % 5 == 0 {
            rng.below(base.len() + 1)
        } else {
            base.len()
        };
        let view = Arc::new(Prefix(Arc::clone(&buf), len));
        let result = catch_unwind(AssertUnwindSafe(|| {
            Gguf::from_bytes(view).map(|g| {
                // Touch everything a caller would: every tensor's bytes, every value.
                let mut sum = 0usize;
                for t in g.tensors() {
                    sum += g.tensor_data(t).len();
                }
                for (_, v) in g.metadata().iter() {
                    sum += v.display_abbrev(4, 16).len();
                }
                sum
            })
        }));
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => {}
            Err(_) => {
                panics += 1;
                eprintln!("panic at iteration {i} (seed {seed})");
            }
        }
    }
    (iterations, ok, panics)
}

#[test]
fn mutation_fuzz_in_memory_file() {
    let base = sample_writer().to_bytes().unwrap();
    let span = base.len();
    let (runs, ok, panics) = mutation_fuzz(base, span, 20_000, 0x9e37_79b9_7f4a_7c15);
    eprintln!("mutation fuzz (in-memory file): {runs} inputs, {ok} parsed, {panics} panics");
    assert_eq!(panics, 0);
    assert!(
        ok > 0 && ok < runs,
        "mutations should both parse and fail ({ok}/{runs})"
    );
}

#[test]
fn mutation_fuzz_synthetic_header() {
    let path = fixtures::synthetic("tiny-llama-Q4_K_M.gguf");
    let base = std::fs::read(&path).unwrap();
    // Mutate the header, metadata and tensor table (everything before the data).
    let g = open_bytes(base.clone()).unwrap();
    let span = g.tensors().iter().map(|t| t.offset).min().unwrap();
    drop(g);
    let (runs, ok, panics) = mutation_fuzz(base, span, 10_000, 0x1234_5678_9abc_def1);
    eprintln!("mutation fuzz (synthetic header, {span} bytes): {runs} inputs, {ok} parsed, {panics} panics");
    assert_eq!(panics, 0);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u8>().prop_map(Value::U8),
            any::<i8>().prop_map(Value::I8),
            any::<u16>().prop_map(Value::U16),
            any::<i16>().prop_map(Value::I16),
            any::<u32>().prop_map(Value::U32),
            any::<i32>().prop_map(Value::I32),
            any::<f32>()
                .prop_filter("nan != nan", |x| !x.is_nan())
                .prop_map(Value::F32),
            any::<bool>().prop_map(Value::Bool),
            ".{0,12}".prop_map(Value::String),
            any::<u64>().prop_map(Value::U64),
            any::<i64>().prop_map(Value::I64),
            any::<f64>()
                .prop_filter("nan != nan", |x| !x.is_nan())
                .prop_map(Value::F64),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            scalar(),
            (0usize..6, any::<u32>()).prop_map(|(n, x)| Value::Array(vec![Value::U32(x); n])),
            prop::collection::vec(".{0,6}", 1..5)
                .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect())),
            prop::collection::vec(prop::collection::vec(any::<i16>(), 1..4), 1..4).prop_map(|v| {
                Value::Array(
                    v.into_iter()
                        .map(|inner| Value::Array(inner.into_iter().map(Value::I16).collect()))
                        .collect(),
                )
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn metadata_round_trips(entries in prop::collection::vec(value(), 0..12), align_pow in 0u32..8) {
            let mut w = GgufWriter::new();
            w.set_alignment(1 << align_pow);
            for (i, v) in entries.iter().enumerate() {
                w.set(format!("k{i}"), v.clone());
            }
            w.add_tensor("t", &[8, 2], GgmlType::F16, vec![7u8; 32]).unwrap();
            let g = open_bytes(w.to_bytes().unwrap()).unwrap();
            for (i, v) in entries.iter().enumerate() {
                let got = g.metadata().value(&format!("k{i}")).unwrap();
                // An empty array is written as u8: compare contents only.
                match (v, got) {
                    (Value::Array(a), Value::Array(b)) if a.is_empty() => prop_assert!(b.is_empty()),
                    _ => prop_assert_eq!(v, got),
                }
            }
            let t = g.tensor("t").unwrap();
            prop_assert_eq!(t.offset % (1usize << align_pow), 0);
            prop_assert_eq!(g.tensor_data(t), &[7u8; 32][..]);
        }
    }
}

#[test]
fn split_model_opens_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; 64]).collect();
    let write_parts = |dir: &Path, total_declared: u32| {
        for i in 0..3u16 {
            let mut w = GgufWriter::new();
            if i == 0 {
                w.set("general.architecture", "llama");
            }
            w.set("split.no", i)
                .set("split.count", 3u16)
                .set("split.tensors.count", total_declared as i32);
            w.add_tensor(
                format!("t{i}"),
                &[16],
                GgmlType::F32,
                data[i as usize].clone(),
            )
            .unwrap();
            w.write_file(&dir.join(format!("m-{:05}-of-00003.gguf", i + 1)))
                .unwrap();
        }
    };
    write_parts(dir.path(), 3);
    let first = dir.path().join("m-00001-of-00003.gguf");
    let g = Gguf::open(&first).unwrap();
    assert_eq!(g.tensors().len(), 3);
    assert_eq!(g.paths().len(), 3);
    assert_eq!(g.arch().unwrap(), "llama");
    for (i, d) in data.iter().enumerate() {
        let t = g.tensor(&format!("t{i}")).unwrap();
        assert_eq!(t.file, i);
        assert_eq!(g.tensor_data(t), &d[..]);
    }
    // Opening a later part points at the first.
    let e = Gguf::open(&dir.path().join("m-00002-of-00003.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("part 2 of 3") && e.contains("m-00001-of-00003.gguf"),
        "{e}"
    );
    // A wrong total is caught.
    let bad = tempfile::tempdir().unwrap();
    write_parts(bad.path(), 4);
    let e = Gguf::open(&bad.path().join("m-00001-of-00003.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("split.tensors.count says 4"), "{e}");
    // A missing part is named.
    std::fs::remove_file(dir.path().join("m-00003-of-00003.gguf")).unwrap();
    let e = Gguf::open(&first).unwrap_err().to_string();
    assert!(
        e.contains("m-00003-of-00003.gguf") && e.contains("missing"),
        "{e}"
    );
    // A split file without the naming scheme cannot find its parts.
    let renamed = dir.path().join("renamed.gguf");
    std::fs::copy(&first, &renamed).unwrap();
    let e = Gguf::open(&renamed).unwrap_err().to_string();
    assert!(e.contains("-00001-of-00003.gguf"), "{e}");
    // In memory, parts given in order.
    let parts: Vec<owl_engine::gguf::Bytes> = (1..=2)
        .map(|i| {
            let b = std::fs::read(dir.path().join(format!("m-{i:05}-of-00003.gguf"))).unwrap();
            Arc::new(b) as owl_engine::gguf::Bytes
        })
        .collect();
    let e = Gguf::from_parts(parts).unwrap_err().to_string();
    assert!(e.contains("expected part 1 of 2"), "{e}");
}

#[test]
fn open_reports_path_and_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let e = Gguf::open(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.gguf"), "{e}");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"hello world").unwrap();
    let e = Gguf::open(&junk).unwrap_err().to_string();
    assert!(
        e.contains("junk.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(Gguf::open(&empty).is_err());
}

#[path = "common/fixtures.rs"]
mod fixtures;

/// Checks what any well-formed model must satisfy; returns the set of tensor types.
fn check_model(path: &Path) -> (Gguf, Vec<GgmlType>) {
    let g = Gguf::open(path).unwrap_or_else(|e| panic!("{e}"));
    let file_len = std::fs::metadata(path).unwrap().len() as usize;
    assert!(!g.tensors().is_empty(), "{}: no tensors", path.display());
    g.arch().unwrap();
    let mut types = vec![];
    let mut ranges: Vec<(usize, usize)> = vec![];
    for t in g.tensors() {
        assert!(t.offset + t.size <= file_len, "{} outside the file", t.name);
        assert_eq!(t.offset % g.alignment(), 0);
        let row = t.ty.row_bytes(t.row_len() as usize).unwrap();
        assert_eq!(t.size as u64, row as u64 * t.n_rows(), "{}", t.name);
        assert_eq!(g.tensor_data(t).len(), t.size);
        ranges.push((t.offset, t.offset + t.size));
        if !types.contains(&t.ty) {
            types.push(t.ty);
        }
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "tensor data overlaps in {}",
            path.display()
        );
    }
    (g, types)
}

#[test]
fn every_synthetic_model_parses() {
    fixtures::ensure_all();
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures::synthetic_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let (g, types) = check_model(&path);
        let md = g.metadata();
        let n_layer: usize = md.arch_get("block_count").unwrap();
        assert_eq!(n_layer, 2);
        assert_eq!(md.arch_get::<u32>("embedding_length").unwrap(), 256);
        let tokens: Vec<&str> = md.get("tokenizer.ggml.tokens").unwrap();
        let arch: &str = md.get("general.architecture").unwrap();
        // Decoders share synth's 608-token vocabulary; the bert encoder has a WordPiece one of its own.
        if arch == "bert" {
            assert_eq!(md.get::<&str>("tokenizer.ggml.model").unwrap(), "bert");
            assert!(tokens.len() > 100, "{}", tokens.len());
        } else {
            assert_eq!(tokens.len(), 608, "{arch}");
        }
        // The file's quant type shows up among its tensors.
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let quant = stem.rsplit('-').next().unwrap();
        let base = quant.trim_end_matches("_M");
        assert!(
            types.iter().any(|t| t.name() == base),
            "{stem}: types {types:?} lack {base}"
        );
        n += 1;
    }
    assert_eq!(
        n, 19,
        "expected 19 synthetic models (17 from llama.cpp, tiny-phi3 and tiny-bert from owl synth)"
    );
}

fn real_model(file: &str) -> PathBuf {
    let path = owl_engine::registry::models_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `owl pull` (scripts/test does) to fetch the real models",
        path.display()
    );
    path
}

#[test]
fn real_smollm2_parses() {
    let path = real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let t0 = std::time::Instant::now();
    let (g, types) = check_model(&path);
    eprintln!("parsed {} in {:?}", path.display(), t0.elapsed());
    assert_eq!(g.arch().unwrap(), "llama");
    assert!(
        types.contains(&GgmlType::Q4_1) && types.contains(&GgmlType::Q8_0),
        "{types:?}"
    );
    let md = g.metadata();
    assert_eq!(md.arch_get::<u32>("block_count").unwrap(), 30);
    assert_eq!(
        md.get::<Vec<String>>("tokenizer.ggml.tokens")
            .unwrap()
            .len(),
        49152
    );
    // 30 layers x 9 tensors + embeddings + output norm.
    assert_eq!(g.tensors().len(), 272);
}

#[test]
fn real_gemma3_parses() {
    let path = real_model("gemma-3-270m-q4_k_m.gguf");
    let t0 = std::time::Instant::now();
    let (g, types) = check_model(&path);
    eprintln!("parsed {} in {:?}", path.display(), t0.elapsed());
    assert_eq!(g.arch().unwrap(), "gemma3");
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0] {
        assert!(types.contains(&ty), "{types:?} lacks {ty}");
    }
    let tokens: Vec<&str> = g.metadata().get("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 262144);
    assert_eq!(g.metadata().arch_get::<u32>("block_count").unwrap(), 18);
}

#[test]
fn rewrite_a_synthetic_model_byte_for_byte() {
    // Metadata + tensors of a llama.cpp-written file, written back by GgufWriter,
    // give the same tensors and metadata (and the same bytes when the layout matches).
    let path = fixtures::synthetic("tiny-llama-Q8_0.gguf");
    let g = Gguf::open(&path).unwrap();
    let mut w = GgufWriter::new()
        .with_version(g.version())
        .with_metadata(g.metadata().clone());
    for t in g.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, g.tensor_data(t))
            .unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    let original = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), original.len());
    assert!(bytes == original, "rewritten file differs from llama.cpp's");
}
