#!/usr/bin/env python3
"""Builds the >= 1 MB UTF-8 text on which mhc's GPT-2 tokenizer is compared with the
reference encoder.

    make_corpus.py OUTPUT REPO_ROOT VOCAB_DIR [MIN_BYTES]

Parts, in order: tests/tokenizer/unicode_sample.txt (pre-tokenizer edge cases in many
scripts); then the default corpus (the Linux kernel documentation, decoded from the
byte-level shards of data/prepare_linuxdoc.sh) when it has been prepared, else GPT-2's
merge list (vocab.bpe: its byte-level alphabet, many short lines) and the repository's
sources. Stops once MIN_BYTES (default 1.2 MB) are
collected. Prints what it used.
"""
import glob
import os
import struct
import sys


def shard_text(path, limit):
    """The bytes of a byte-tokenizer shard (llm.c format, uint16 tokens < 256)."""
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
        if header[0] != 20240520:
            return b""
        count = min(header[2], limit)
        raw = f.read(2 * count)
    tokens = struct.unpack("<%dH" % (len(raw) // 2), raw)
    if any(t > 255 for t in tokens):
        return b""  # not a byte-level shard
    return bytes(tokens)


def valid_prefix(data):
    """The longest prefix of data that is valid UTF-8 (cuts a split last character)."""
    for cut in range(0, 4):
        try:
            (data[: len(data) - cut] if cut else data).decode("utf-8")
            return data[: len(data) - cut] if cut else data
        except UnicodeDecodeError:
            continue
    return b""


def main():
    out, repo, vocab = sys.argv[1], sys.argv[2], sys.argv[3]
    need = int(sys.argv[4]) if len(sys.argv) > 4 else 1_200_000
    parts, used = [], []

    def add(name, data):
        data = valid_prefix(data)
        if data:
            parts.append(data)
            used.append("%s (%d bytes)" % (name, len(data)))

    add("unicode_sample.txt", open(os.path.join(repo, "tests/tokenizer/unicode_sample.txt"), "rb").read())
    shards = sorted(glob.glob(os.path.join(repo, "data/cache/linuxdoc/linuxdoc_val_*.bin"))) + sorted(
        glob.glob(os.path.join(repo, "data/cache/linuxdoc/linuxdoc_train_*.bin")))
    for path in shards:
        have = sum(map(len, parts))
        if have >= need:
            break
        add(os.path.relpath(path, repo) + " decoded", shard_text(path, need - have + 4))
    if sum(map(len, parts)) < need:
        files = [os.path.join(vocab, "vocab.bpe")]
        for sub in ("core", "app", "tests", "cuda", "scripts", "docs", "configs", "data"):
            for root, dirs, names in sorted(os.walk(os.path.join(repo, sub))):
                dirs[:] = sorted(d for d in dirs if d != "cache" and not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names)
                          if n.endswith((".cpp", ".h", ".cu", ".cuh", ".md", ".yaml", ".sh", ".py", ".js", ".txt"))]
        for path in files:
            if sum(map(len, parts)) >= need:
                break
            try:
                data = open(path, "rb").read()
                data.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            add(os.path.relpath(path, repo) if path.startswith(repo) else os.path.basename(path), data)
    text = b"\n".join(parts)
    with open(out, "wb") as f:
        f.write(text)
    print("corpus: %d bytes from %d parts: %s%s" % (len(text), len(used), ", ".join(used[:6]),
                                                   ", ..." if len(used) > 6 else ""))
    if len(text) < need:
        print("corpus: only %d bytes found, fewer than %d" % (len(text), need))
        sys.exit(1)


if __name__ == "__main__":
    main()
