#!/usr/bin/env python3
"""Adds golden block vectors for the newer GGUF types to quant-block-vectors.json: four blocks
of each `arch/llama-<type>.gguf` (the first block of `output.weight`, `token_embd.weight`,
`blk.0.attn_q.weight` and `blk.1.ffn_down.weight`), dequantized with the `gguf` Python package
(gguf-py, bit-exact to ggml's dequantization on every tensor of these files). Existing entries
are kept; entries of the listed types are rewritten.

    python3 engine/tests/data/add_quant_vectors.py
"""

import json
import pathlib

import numpy as np
from gguf import GGUFReader, quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

HERE = pathlib.Path(__file__).parent
TYPES = ["IQ3_S", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0"]
TENSORS = ["output.weight", "token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight"]


def main():
    path = HERE / "quant-block-vectors.json"
    golden = json.loads(path.read_text())
    for name in TYPES:
        qtype = GGMLQuantizationType[name]
        block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
        reader = GGUFReader(HERE / "arch" / f"llama-{name.lower()}.gguf")
        tensors = {t.name: t for t in reader.tensors}
        raw = b""
        for tname in TENSORS:
            t = tensors[tname]
            assert t.tensor_type == qtype, (name, tname, t.tensor_type)
            raw += np.asarray(t.data).reshape(-1).view(np.uint8)[:block_bytes].tobytes()
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(len(TENSORS), block_bytes)
        values = quants.dequantize(blocks, qtype).reshape(-1).astype(np.float32)
        golden[name] = {
            "block_elems": block_elems,
            "block_bytes": block_bytes,
            "blocks": len(TENSORS),
            "bytes_hex": raw.hex(),
            "values": [float(v) for v in values],
        }
    path.write_text(json.dumps(golden))


main()
