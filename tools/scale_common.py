"""What the scale-model writers in this folder share: random f16 weights and a copied tokenizer."""
import gguf
import numpy as np


def rnd(rng, *shape, scale=0.02):
    """An f16 array of normal values times `scale`, filled in slices so the f32 draw stays small."""
    a = np.empty(shape, np.float16)
    flat = a.reshape(-1)
    step = 1 << 26
    for i in range(0, flat.size, step):
        n = min(step, flat.size - i)
        flat[i:i + n] = rng.standard_normal(n, dtype=np.float32) * scale
    return a


def copy_tokenizer(src, w):
    """Copies every `tokenizer.*` key of the GGUF file `src` into the writer `w`; returns the
    vocabulary size."""
    r = gguf.GGUFReader(src)
    for f in r.fields.values():
        if f.name.startswith("tokenizer."):
            t = f.types[0]
            if t == gguf.GGUFValueType.ARRAY:
                w.add_array(f.name, f.contents())
            elif t == gguf.GGUFValueType.STRING:
                w.add_string(f.name, f.contents())
            else:
                w.add_key_value(f.name, f.contents(), t)
    return len(r.fields["tokenizer.ggml.tokens"].data)
