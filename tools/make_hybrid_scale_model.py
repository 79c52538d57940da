#!/usr/bin/env python3
"""Write a random-weight F16 GGUF at a Qwen3.5 hybrid shape (Gated DeltaNet layers with every
fourth layer gated full attention), for speed measurements: the text it produces is meaningless,
its speed is not. The tokenizer is copied from any GGUF you pass (SmolLM2's keeps the file small).
Quantize with llama.cpp's llama-quantize (OUT.gguf OUT-q4_k_m.gguf Q4_K_M).

usage: make_hybrid_scale_model.py TOKENIZER_SOURCE.gguf OUT.gguf [LAYERS]

Shape (Qwen3.5 9B's layer, the defaults of vLLM's Qwen3.5 configuration): hidden 4096, FFN 12288,
full attention 16 q / 4 kv heads of 256 (64 rotated), DeltaNet 16 key / 32 value heads of 128,
convolution of 4 taps; 32 layers in the real model, 8 here unless LAYERS says.
needs: numpy and the `gguf` package."""
import sys

import gguf
import numpy as np

from scale_common import copy_tokenizer, rnd

src, out = sys.argv[1], sys.argv[2]
L = int(sys.argv[3]) if len(sys.argv) > 3 else 8
D, FF, H, KV, HD, NROT = 4096, 12288, 16, 4, 256, 64
NK, NV, DS, K, INTERVAL = 16, 32, 128, 4, 4
CH, INNER = (2 * NK + NV) * DS, NV * DS
rng = np.random.default_rng(0)

w = gguf.GGUFWriter(out, "qwen35")
V = copy_tokenizer(src, w)
a = "qwen35"
w.add_name("scale-qwen35-9b-layer"); w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
w.add_context_length(32768); w.add_embedding_length(D); w.add_block_count(L)
w.add_feed_forward_length(FF); w.add_head_count(H); w.add_head_count_kv(KV)
w.add_layer_norm_rms_eps(1e-6); w.add_rope_freq_base(10000000.0)
w.add_key_length(HD); w.add_value_length(HD); w.add_rope_dimension_count(NROT)
w.add_array(f"{a}.rope.dimension_sections", [11, 11, 10, 0])
w.add_uint32(f"{a}.ssm.conv_kernel", K); w.add_uint32(f"{a}.ssm.state_size", DS)
w.add_uint32(f"{a}.ssm.group_count", NK); w.add_uint32(f"{a}.ssm.time_step_rank", NV)
w.add_uint32(f"{a}.ssm.inner_size", INNER); w.add_uint32(f"{a}.full_attention_interval", INTERVAL)


def t(name, *shape_ggml, f32=False, scale=0.02):
    # numpy shape is the reverse of ggml's ne
    arr = rnd(rng, *reversed(shape_ggml), scale=scale)
    w.add_tensor(name, arr.astype(np.float32) if f32 else arr)


def ones(name, n):
    w.add_tensor(name, np.ones(n, np.float32))


t("token_embd.weight", D, V)
ones("output_norm.weight", D)
t("output.weight", D, V)
for il in range(L):
    p = f"blk.{il}."
    ones(p + "attn_norm.weight", D)
    ones(p + "post_attention_norm.weight", D)
    if (il + 1) % INTERVAL == 0:
        t(p + "attn_q.weight", D, H * 2 * HD)
        t(p + "attn_k.weight", D, KV * HD)
        t(p + "attn_v.weight", D, KV * HD)
        t(p + "attn_output.weight", H * HD, D)
        ones(p + "attn_q_norm.weight", HD)
        ones(p + "attn_k_norm.weight", HD)
    else:
        t(p + "attn_qkv.weight", D, CH)
        t(p + "attn_gate.weight", D, INNER)
        t(p + "ssm_conv1d.weight", K, CH, f32=True, scale=0.2)
        w.add_tensor(p + "ssm_dt.bias", np.full(NV, 0.5, np.float32))
        w.add_tensor(p + "ssm_a", -np.exp(rng.standard_normal(NV).astype(np.float32) * 0.5))
        t(p + "ssm_beta.weight", D, NV)
        t(p + "ssm_alpha.weight", D, NV)
        ones(p + "ssm_norm.weight", DS)
        t(p + "ssm_out.weight", INNER, D)
    t(p + "ffn_gate.weight", D, FF)
    t(p + "ffn_up.weight", D, FF)
    t(p + "ffn_down.weight", FF, D)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print(f"wrote {out}: {L} layers")
