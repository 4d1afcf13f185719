#!/usr/bin/env python3
"""Writes small, valid GGUF files into DIR as seeds for the `gguf` fuzz target:
a 1-layer llama with an 8-wide embedding, one with a SentencePiece vocabulary and a
chat template, one with a byte-level BPE vocabulary and merges, and a BERT encoder."""
import struct
import sys
from pathlib import Path

U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def val(ty, v):
    if ty == U32:
        return struct.pack("<I", v)
    if ty == I32:
        return struct.pack("<i", v)
    if ty == F32:
        return struct.pack("<f", v)
    if ty == BOOL:
        return bytes([v])
    if ty == STR:
        return s(v)
    if ty == U64:
        return struct.pack("<Q", v)
    et, items = v
    return struct.pack("<IQ", et, len(items)) + b"".join(val(et, i) for i in items)


def gguf(kv, tensors):
    """kv: [(key, type, value)]; tensors: [(name, dims)] as F32, zero data."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, ty, v in kv:
        out += s(k) + struct.pack("<I", ty) + val(ty, v)
    off, infos = 0, b""
    for name, dims in tensors:
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0, off)
        n = 4
        for d in dims:
            n *= d
        off += (n + 31) // 32 * 32
    out += infos
    out += b"\0" * (-len(out) % 32)
    return out + b"\0" * off


def llama(vocab_kv, n_vocab, arch="llama"):
    e, ff = 8, 16
    kv = [
        ("general.architecture", STR, arch),
        (f"{arch}.context_length", U32, 64),
        (f"{arch}.embedding_length", U32, e),
        (f"{arch}.block_count", U32, 1),
        (f"{arch}.feed_forward_length", U32, ff),
        (f"{arch}.attention.head_count", U32, 2),
        (f"{arch}.attention.head_count_kv", U32, 1),
    ] + vocab_kv
    t = [("token_embd.weight", [e, n_vocab]), ("output_norm.weight", [e])]
    for n, d in [("attn_norm", [e]), ("attn_q", [e, e]), ("attn_k", [e, 4]), ("attn_v", [e, 4]),
                 ("attn_output", [e, e]), ("ffn_norm", [e]), ("ffn_gate", [e, ff]),
                 ("ffn_up", [e, ff]), ("ffn_down", [ff, e])]:
        t.append((f"blk.0.{n}.weight", d))
    return gguf(kv, t)


def main(out):
    out = Path(out)
    spm = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(4)] + ["\u2581", "\u2581a", "b", "ab", "<|im_start|>"]
    spm_kv = [
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, spm)),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0] * len(spm))),
        ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 6, 6, 6, 6, 1, 1, 1, 1, 3])),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.chat_template", STR, "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"),
    ]
    (out / "spm-llama.gguf").write_bytes(llama(spm_kv, len(spm)))
    bpe = ["a", "b", "c", "\u0120", "\u0120a", "ab", "<|endoftext|>"]
    bpe_kv = [
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "smollm"),
        ("tokenizer.ggml.tokens", ARR, (STR, bpe)),
        ("tokenizer.ggml.token_type", ARR, (I32, [1] * 6 + [3])),
        ("tokenizer.ggml.merges", ARR, (STR, ["\u0120 a", "a b"])),
        ("tokenizer.ggml.eos_token_id", U32, 6),
    ]
    (out / "bpe-qwen2.gguf").write_bytes(llama(bpe_kv, len(bpe), "qwen2"))
    wpm = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##b", "hello"]
    bert_kv = [
        ("general.architecture", STR, "bert"),
        ("bert.embedding_length", U32, 8),
        ("bert.block_count", U32, 1),
        ("bert.feed_forward_length", U32, 16),
        ("bert.attention.head_count", U32, 2),
        ("bert.pooling_type", U32, 1),
        ("tokenizer.ggml.model", STR, "bert"),
        ("tokenizer.ggml.tokens", ARR, (STR, wpm)),
        ("tokenizer.ggml.cls_token_id", U32, 2),
    ]
    (out / "wpm-bert.gguf").write_bytes(gguf(bert_kv, [("token_embd.weight", [8, len(wpm)])]))


if __name__ == "__main__":
    main(sys.argv[1])
