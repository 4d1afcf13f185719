//! `owl synth`: the same seed gives the same bytes, and the committed phi3
//! fixture is exactly what the command writes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn synth(args: &[&str], out: &Path) -> Vec<u8> {
    let o = Command::new(env!("CARGO_BIN_EXE_owl")).arg("synth").args(args).arg(out).output().unwrap();
    assert!(o.status.success(), "owl synth {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

#[test]
fn same_seed_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "phi3"] {
        let args = ["--arch", arch, "--type", "Q8_0", "--seed", "42"];
        let a = synth(&args, &dir.path().join("a.gguf"));
        let b = synth(&args, &dir.path().join("b.gguf"));
        assert!(a == b, "{arch}: two runs with seed 42 differ");
        let c = synth(&["--arch", arch, "--type", "Q8_0", "--seed", "43"], &dir.path().join("c.gguf"));
        assert!(a != c, "{arch}: seeds 42 and 43 give the same file");
    }
}

#[test]
fn phi3_fixture_is_what_synth_writes() {
    let dir = tempfile::tempdir().unwrap();
    let got = synth(&["--arch", "phi3", "--type", "Q8_0", "--seed", "1"], &dir.path().join("p.gguf"));
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("engine/tests/fixtures/synthetic/tiny-phi3-Q8_0.gguf");
    assert!(got == std::fs::read(&fixture).unwrap(), "{} is no longer what `owl synth --arch phi3 --type Q8_0 --seed 1` writes", fixture.display());
}

/// The committed bert fixture (engine/tests/embedding.rs compares it with llama.cpp), too.
#[test]
fn bert_fixture_is_what_synth_writes() {
    let dir = tempfile::tempdir().unwrap();
    let got = synth(&["--arch", "bert", "--type", "Q8_0", "--seed", "1"], &dir.path().join("b.gguf"));
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("engine/tests/fixtures/synthetic/tiny-bert-Q8_0.gguf");
    assert!(got == std::fs::read(&fixture).unwrap(), "{} is no longer what `owl synth --arch bert --type Q8_0 --seed 1` writes", fixture.display());
}

#[test]
fn unknown_arch_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_owl")).args(["synth", "--arch", "gpt2"]).arg(dir.path().join("x.gguf")).output().unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("gpt2") && e.contains(owl_engine::synth::ARCHS), "{e}");
}
