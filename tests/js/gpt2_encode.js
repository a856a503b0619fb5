// Reference GPT-2 tokenization for runtime/gpt2_bpe_tokenizer_test.cc: prints
// the ids that gpt-3-encoder's encode() gives for each UTF-8 file, as one
// JSON array per file, one per line. Usage: node gpt2_encode.js FILE...
'use strict';

const fs = require('fs');
const { encode } = require('gpt-3-encoder');

// encode() grows its result with Array.concat once per token, which is
// quadratic: a few hundred KB take minutes. So the text is encoded in chunks,
// cut just after a "\n" that has a non-space character on both sides. That
// cannot change the result: the pattern has no lookbehind, so matching from
// the cut depends only on the text after it; the "\n" is a token of its own
// either way (\s+(?!\S) fails on it, \s+ takes it; at the end of a chunk
// \s+(?!\S) takes it); and no token before it can reach past it, because the
// only alternatives that consume whitespace start at a whitespace run and the
// character before the "\n" is not whitespace.
const CHUNK = 4096;

function splitForEncode(text) {
  const chunks = [];
  let start = 0;
  let i = start + CHUNK;
  while (i < text.length - 1) {
    if (text[i] === '\n' && !/\s/u.test(text[i - 1]) &&
        !/\s/u.test(text[i + 1])) {
      chunks.push(text.slice(start, i + 1));
      start = i + 1;
      i = start + CHUNK;
    } else {
      ++i;
    }
  }
  chunks.push(text.slice(start));
  return chunks;
}

if (process.argv.length < 3) {
  process.stderr.write('usage: node gpt2_encode.js FILE...\n');
  process.exit(2);
}
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file, 'utf8');
  const ids = [];
  for (const chunk of splitForEncode(text)) {
    for (const id of encode(chunk)) ids.push(id);
  }
  process.stdout.write(JSON.stringify(ids) + '\n');
}
