#!/usr/bin/env python3
"""Generates owl-quant's test fixtures from the `gguf` Python package.

    python3 -m venv /tmp/qvenv && /tmp/qvenv/bin/pip install gguf numpy
    /tmp/qvenv/bin/python quant/tests/gen_fixtures.py

Writes quant/tests/fixtures/:
  dequant/<model>.json  for each real model (owl cache) and each synthetic model
                        (engine/tests/fixtures/synthetic): per tensor its GGML type,
                        element count, absolute byte offset and length in the file,
                        the sha256 of gguf.quants.dequantize's float32 output
                        (little-endian, element order) and the bit patterns of its
                        first and last 4 values.
  quantize.json         seeded inputs (with edge cases) and the bytes that
                        gguf.quants.quantize produces for F16, BF16, Q4_0, Q4_1,
                        Q5_0, Q5_1, Q8_0.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures"
REPO = HERE.parent.parent
SYNTH = REPO / "engine" / "tests" / "fixtures" / "synthetic"
CACHE = Path(os.environ.get("OWL_HOME", Path.home() / ".cache" / "owl")) / "models"
REAL = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]

# Rows dequantized at a time, to bound memory on the big embedding tables.
CHUNK_ELEMS = 1 << 22


def bits(v: np.ndarray) -> list[int]:
    return [int(x) for x in v.astype(np.float32).view(np.uint32)]


def dequant_fixture(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = []
    for t in reader.tensors:
        qtype = T(t.tensor_type)
        block_len, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        ne0 = int(t.shape[0])
        n = int(t.n_elements)
        off, nb = int(t.data_offset), int(t.n_bytes)
        assert nb == n // block_len * block_bytes, (t.name, nb)
        data = raw[off : off + nb]
        assert np.array_equal(data, np.asarray(t.data).reshape(-1).view(np.uint8)), t.name
        row_bytes = ne0 // block_len * block_bytes
        rows = data.reshape(-1, row_bytes)
        rows_per_chunk = max(1, CHUNK_ELEMS // ne0)
        h = hashlib.sha256()
        head = tail = None
        for r0 in range(0, rows.shape[0], rows_per_chunk):
            f = gguf.quants.dequantize(np.array(rows[r0 : r0 + rows_per_chunk]), qtype)
            f = np.ascontiguousarray(f, dtype=np.float32).reshape(-1)
            h.update(f.astype("<f4").tobytes())
            if head is None:
                head = bits(f[:4])
            tail = f[-4:]
        tensors.append(
            {
                "name": t.name,
                "type": int(qtype),
                "type_name": qtype.name,
                "n": n,
                "ne0": ne0,
                "offset": off,
                "n_bytes": nb,
                "sha256": h.hexdigest(),
                "head": head,
                "tail": bits(tail),
            }
        )
    return {"file": path.name, "file_bytes": int(raw.shape[0]), "tensors": tensors}


def quant_inputs(rng: np.random.Generator) -> np.ndarray:
    """32 blocks of 32 values: Gaussian rows of several scales plus edge cases."""
    blocks = []
    for scale in (1e-3, 0.02, 1.0, 7.5, 300.0):
        for _ in range(4):
            blocks.append(rng.standard_normal(32) * scale)
    blocks.append(np.zeros(32))  # d == 0
    blocks.append(np.full(32, 0.25))  # max == min
    blocks.append(np.full(32, -3.0))
    blocks.append(np.arange(32) - 16.0)  # exact ties at the rounding points
    blocks.append((np.arange(32) - 15.5) / 8.0)
    blocks.append(np.where(np.arange(32) % 2 == 0, 1.0, -1.0))  # |max| tie, sign flip
    blocks.append(rng.uniform(-1, 1, 32) * np.array([1e-8] * 16 + [1.0] * 16))
    blocks.append(rng.standard_normal(32) * 1e4)  # beyond f16's comfortable range
    blocks.append(np.linspace(-65504.0, 65504.0, 32))
    blocks.append(rng.integers(-8, 8, 32).astype(np.float64) * 0.125)
    blocks.append(rng.standard_normal(32) + 100.0)  # large offset, small spread
    blocks.append(rng.standard_normal(32) * 1e-30)  # tiny values (f16 underflow)
    return np.concatenate(blocks).astype(np.float32)


def quant_fixture() -> dict:
    rng = np.random.default_rng(20240611)
    x = quant_inputs(rng)
    cases = []
    for qtype in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        q = gguf.quants.quantize(x.reshape(-1, 32), qtype)
        cases.append({"type": int(qtype), "type_name": qtype.name, "bytes": np.asarray(q).view(np.uint8).tobytes().hex()})
    return {"input_f32_le": x.astype("<f4").tobytes().hex(), "n": int(x.size), "cases": cases}


def main() -> None:
    (OUT / "dequant").mkdir(parents=True, exist_ok=True)
    models = [CACHE / f for f in REAL] + sorted(SYNTH.glob("*.gguf"))
    for m in models:
        if not m.exists():
            sys.exit(f"missing model {m}")
        fx = dequant_fixture(m)
        (OUT / "dequant" / (m.stem + ".json")).write_text(json.dumps(fx, indent=0) + "\n")
        print(f"{m.name}: {len(fx['tensors'])} tensors")
    (OUT / "quantize.json").write_text(json.dumps(quant_fixture(), indent=0) + "\n")
    print("quantize.json written")


if __name__ == "__main__":
    main()
