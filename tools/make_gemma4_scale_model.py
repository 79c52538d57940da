#!/usr/bin/env python3
"""Write a random-weight F16 GGUF at Gemma 4 31B's layer shape (dense `gemma4`: five sliding-window
layers then one global layer), for speed measurements: the text it produces is meaningless, its
speed is not. The tokenizer is copied from any GGUF you pass (SmolLM2's keeps the file small).
Quantize with llama.cpp's llama-quantize (OUT.gguf OUT-q4_k_m.gguf Q4_K_M).

usage: make_gemma4_scale_model.py TOKENIZER_SOURCE.gguf OUT.gguf [LAYERS]

Shape (Gemma 4 31B as its public descriptions give it): hidden 5376, FFN 21504, 32 query heads;
sliding layers 16 kv heads of 256, window 1024, RoPE theta 1e4 over every dimension; global
layers 4 kv heads of 512 with V taken from K (no attn_v) and proportional RoPE (theta 1e6, a
quarter of the pairs rotate); pattern 5 sliding : 1 global; tied output, logit soft-capping 30.
60 layers in the real model, 6 here unless LAYERS says (a multiple of 6 keeps the pattern).
needs: numpy and the `gguf` package."""
import sys

import gguf
import numpy as np

from scale_common import copy_tokenizer, rnd

src, out = sys.argv[1], sys.argv[2]
L = int(sys.argv[3]) if len(sys.argv) > 3 else 6
D, FF, H = 5376, 21504, 32
KV_SWA, HD_SWA, KV_FULL, HD_FULL, WINDOW = 16, 256, 4, 512, 1024
rng = np.random.default_rng(0)

a = "gemma4"
w = gguf.GGUFWriter(out, a)
V = copy_tokenizer(src, w)
swa = [(il + 1) % 6 != 0 for il in range(L)]
w.add_name("scale-gemma4-31b-layer"); w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
w.add_context_length(131072); w.add_embedding_length(D); w.add_block_count(L)
w.add_feed_forward_length(FF); w.add_head_count(H)
w.add_array(f"{a}.attention.head_count_kv", [KV_SWA if s else KV_FULL for s in swa])
w.add_layer_norm_rms_eps(1e-6); w.add_rope_freq_base(1000000.0)
w.add_uint32(f"{a}.attention.key_length", HD_FULL); w.add_uint32(f"{a}.attention.value_length", HD_FULL)
w.add_uint32(f"{a}.attention.key_length_swa", HD_SWA)
w.add_uint32(f"{a}.attention.value_length_swa", HD_SWA)
w.add_uint32(f"{a}.rope.dimension_count", HD_FULL)
w.add_uint32(f"{a}.rope.dimension_count_swa", HD_SWA)
w.add_float32(f"{a}.rope.freq_base_swa", 10000.0)
w.add_uint32(f"{a}.attention.sliding_window", WINDOW)
w.add_array(f"{a}.attention.sliding_window_pattern", swa)
w.add_uint32(f"{a}.attention.shared_kv_layers", 0)
w.add_uint32(f"{a}.embedding_length_per_layer_input", 0)
w.add_float32(f"{a}.final_logit_softcapping", 30.0)


def t(name, *shape_ggml, scale=0.02):
    # numpy shape is the reverse of ggml's ne
    w.add_tensor(name, rnd(rng, *reversed(shape_ggml), scale=scale))


def ones(name, n):
    w.add_tensor(name, np.ones(n, np.float32))


t("token_embd.weight", D, V)
ones("output_norm.weight", D)
rot = HD_FULL // 2 // 4
w.add_tensor("rope_freqs.weight",
             np.array([1.0] * rot + [1e30] * (HD_FULL // 2 - rot), np.float32))
for il in range(L):
    p = f"blk.{il}."
    kv, hd = (KV_SWA, HD_SWA) if swa[il] else (KV_FULL, HD_FULL)
    ones(p + "attn_norm.weight", D)
    t(p + "attn_q.weight", D, H * hd)
    t(p + "attn_k.weight", D, kv * hd)
    if swa[il]:
        t(p + "attn_v.weight", D, kv * hd)
    t(p + "attn_output.weight", H * hd, D)
    ones(p + "attn_q_norm.weight", hd)
    ones(p + "attn_k_norm.weight", hd)
    ones(p + "post_attention_norm.weight", D)
    w.add_tensor(p + "layer_output_scale.weight", np.full(1, 0.5, np.float32))
    ones(p + "ffn_norm.weight", D)
    t(p + "ffn_gate.weight", D, FF)
    t(p + "ffn_up.weight", D, FF)
    t(p + "ffn_down.weight", FF, D)
    ones(p + "post_ffw_norm.weight", D)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print(f"wrote {out}: {L} layers")
