#!/usr/bin/env bash
# Builds the default corpus: the English reStructuredText sources of the Linux kernel
# documentation (Debian package linux-doc-6.1, about 21 MB), as byte-level token shards
#   data/cache/linuxdoc/linuxdoc_train_000000.bin, data/cache/linuxdoc/linuxdoc_val_000000.bin
# It needs nothing but the Debian archive, so it works on a machine with no other network.
#
# Usage: data/prepare_linuxdoc.sh [path/to/mhc]      (default: build/mhc in the repository)
# Run as root or as a user with sudo (only `apt-get update` needs root, and only when the
# package lists are missing or stale). Safe to re-run: existing shards are kept.
set -euo pipefail

package=linux-doc-6.1
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mhc="${1:-$repo_root/build/mhc}"
# A relative binary path means relative to where the script was started, not the repository.
[[ "$mhc" == /* ]] || mhc="$PWD/$mhc"

cache="$repo_root/data/cache"
download="$cache/download"
out="$cache/linuxdoc"

say() { echo "prepare_linuxdoc: $*"; }
die() { echo "prepare_linuxdoc: error: $*" >&2; exit 1; }

have_shards() {
  compgen -G "$out/linuxdoc_train_*.bin" >/dev/null &&
    compgen -G "$out/linuxdoc_val_*.bin" >/dev/null
}

if have_shards; then
  say "shards already exist in $out; nothing to do (delete that directory to rebuild)"
  exit 0
fi

[[ -x "$mhc" ]] || die "mhc binary '$mhc' not found or not executable; build it first
  (cmake -S $repo_root -B $repo_root/build && make -C $repo_root/build mhc) or pass its path"

for tool in apt-get dpkg find xargs cp; do
  command -v "$tool" >/dev/null || die "'$tool' is required (this script expects Debian 12)"
done

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "'$*' needs root: run this script as root or install sudo"
  fi
}

# ---- download (the .deb is kept in the cache, so a re-run does not fetch it again) -------
mkdir -p "$download"
deb="$(compgen -G "$download/${package}_*_all.deb" | sort -V | tail -n 1 || true)"
if [[ -z "$deb" ]]; then
  say "downloading $package from the Debian archive into $download"
  if ! (cd "$download" && apt-get download "$package"); then
    say "download failed; refreshing the package lists (apt-get update) and retrying"
    as_root apt-get update
    (cd "$download" && apt-get download "$package") ||
      die "apt-get download $package failed; is a Debian 12 (bookworm) archive reachable?"
  fi
  deb="$(compgen -G "$download/${package}_*_all.deb" | sort -V | tail -n 1 || true)"
  [[ -n "$deb" ]] || die "apt-get download succeeded but no ${package}_*_all.deb is in $download"
else
  say "using cached $(basename "$deb")"
fi

# ---- extract and collect the English sources ------------------------------------------
extract="$download/extract"
staging="$download/linuxdoc_sources"
rm -rf "$extract" "$staging"
trap 'rm -rf "$extract"' EXIT
say "extracting $(basename "$deb")"
dpkg -x "$deb" "$extract" || die "cannot unpack $deb (corrupt download? delete it and re-run)"

sources="$extract/usr/share/doc/$package/html/_sources"
[[ -d "$sources" ]] || die "$deb has no usr/share/doc/$package/html/_sources"

# translations/ holds the non-English versions; the corpus is the English documentation.
mkdir -p "$staging"
(cd "$sources" &&
  find . -path ./translations -prune -o -type f -name '*.rst.txt' -print0 |
  xargs -0 -r cp --parents -t "$staging")
n_files="$(find "$staging" -type f | wc -l)"
n_bytes="$(find "$staging" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
[[ "$n_files" -gt 0 ]] || die "no *.rst.txt files found under $sources"
say "collected $n_files files, $n_bytes bytes of English documentation (translations excluded)"

# ---- tokenize into shards --------------------------------------------------------------
say "running $mhc prepare"
"$mhc" prepare --input "$staging" --output "$out" --tokenizer byte --val-fraction 0.01 ||
  die "'$mhc prepare' failed (see the message above)"

have_shards || die "'$mhc prepare' finished but $out lacks linuxdoc_{train,val}_*.bin shards"
rm -rf "$staging"
say "done:"
ls -l "$out"/linuxdoc_*.bin
