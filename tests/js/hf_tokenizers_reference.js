// Reference tokenizer.json files and their encodings for
// runtime/tokenizer/hf_tokenizer_test.cc, made with Hugging Face's Rust
// `tokenizers` library (npm @anush008/tokenizers, pinned by package-lock.json).
//
// For each configuration below (each mirrors the pipeline a model family
// ships: GPT-2, RoBERTa, Llama 3, Qwen2, Llama 2, Mistral, Gemma, and two that
// cover the remaining components) it trains a BPE model on the given corpus
// plus a multilingual text, writes the tokenizer.json a model would ship, and
// records what the library does with it on a set of texts:
//   OUTDIR/NAME/tokenizer.json
//   OUTDIR/NAME/expected.json  [{text, ids, ids_special, decoded,
//                                decoded_skip}, ...]
// Usage: node hf_tokenizers_reference.js OUTDIR CORPUS_FILE
//
// bench/tokenizer_bench runs it as
//   node hf_tokenizers_reference.js --bench OUTDIR TEXT_FILE
// which, for each OUTDIR/NAME/tokenizer.json, encodes the whole text file
// (without special tokens) and prints one JSON line per configuration:
// {name, seconds (best of 3), ids}.
'use strict';

const fs = require('fs');
const path = require('path');
const { Tokenizer, byteLevelAlphabet } = require('@anush008/tokenizers');

const bench = process.argv[2] === '--bench';
const args = process.argv.slice(bench ? 3 : 2);
if (args.length !== 2) {
  process.stderr.write(
      'usage: node hf_tokenizers_reference.js [--bench] OUTDIR CORPUS\n');
  process.exit(2);
}
const outDir = args[0];
const corpus = args[1];

// Text in many scripts, so that merges form outside ASCII too.
const MULTILINGUAL = [
  'The quick brown fox jumps over the lazy dog. I\'m sure you\'ll agree; DON\'T you?',
  'Le cœur a ses raisons que la raison ne connaît point. Ça va très bien, merci.',
  'Über den Wolken muß die Freiheit wohl grenzenlos sein. Größe, Straße.',
  'Съешь же ещё этих мягких французских булок, да выпей чаю.',
  '我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧。',
  '私はガラスを食べられます。それは私を傷つけません。東京タワー',
  '나는 유리를 먹을 수 있어요. 그래도 아프지 않아요.',
  'أنا قادر على أكل الزجاج و هذا لا يؤلمني.',
  'मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती.',
  'Τη γλώσσα μου έδωσαν ελληνική. Καλημέρα κόσμε!',
  'ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ',
  'emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨ and math: ∑ x² ≤ ∞, π ≈ 3.14159',
  'code:\tif (x == 42) {\n\t\treturn "ok";\r\n\t}\n',
  'numbers 1234567890 and 3.14 and 1,000,000 and ١٢٣ and ５６７',
];

// Texts to encode: edge cases, the multilingual lines, corpus lines, and
// random mixtures drawn from a pool of tricky characters (fixed seed).
function makeTexts(corpusText) {
  const texts = [
    '', ' ', '  ', '\n', '\n\n', ' \n ', '\t', 'a', ' a', 'a ', '  a  b  ',
    'Hello world', ' Hello world', 'Hello  world', 'Hello\nworld',
    'Hello \n world', 'Hello   \n\n   world   ', "I'm you're he's we've they'd",
    "I'M YOU'RE HE'S WE'VE THEY'D I'LL", 'hello123456789world', '2024-01-01',
    '3.14159265', 'e\u0301t\u00e9 cafe\u0301 \u212b \ufb01 \u2163 \uff21',
    'ＡＢＣ　ｄｅｆ', '\u00a0non\u00a0breaking\u2003spaces\u3000',
    '<s>', '</s>', '<s>hello</s>', 'hello<s>world', 'hello <s> world',
    ' <s> ', '<|endoftext|>', 'Hi<|endoftext|>there', 'a<|im_start|>b<|im_end|>',
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>',
    '<mask>', 'a <mask> b', 'a<mask>b', 'a  <mask>  b', '[CLS] x [SEP]',
    'mytoken', 'a mytoken b', 'amytokenb', 'MyToken', ' mytoken ',
    '<tool_call>{"a": 1}</tool_call>', '▁', '▁▁a', 'a▁b', '_', '__init__',
    '\u{10ffff}', '\u{1d518}\u{1d52b}\u{1d526}\u{1d520}\u{1d52c}\u{1d521}\u{1d522}',
    '𝕿𝖍𝖊 𝖖𝖚𝖎𝖈𝖐', '\u0000\u0001\u001f\u007f', 'tab\tsep\tvalues',
    'x'.repeat(300), ' '.repeat(40) + 'end', 'ab'.repeat(100),
  ];
  for (const line of MULTILINGUAL) texts.push(line);
  const lines = corpusText.split('\n').filter((l) => l.length > 0);
  for (let i = 0; i < 40; ++i) {
    texts.push(lines[(i * 7919) % lines.length]);
  }
  texts.push(lines.slice(0, 30).join('\n'));
  const pool = Array.from(
      'aeiouAEIOU xyz  \t\n\r012389.,;:!?\'"-_()[]<>/|éüßçœ日本語中文한국어' +
      'абвгдеΑΒΓ☃😀👍🏽‍️\u0301\u0308\u00a0\u3000\u2028▁ĠĊ<>|s/');
  const fragments = ['<s>', '</s>', '<|endoftext|>', '<mask>', 'mytoken',
                     '<|im_end|>', "'s", "'LL", ' <', '▁'];
  let seed = 12345;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.floor((seed / 2147483648) * n);
  };
  for (let i = 0; i < 200; ++i) {
    let s = '';
    const len = 1 + rand(40);
    for (let j = 0; j < len; ++j) {
      s += rand(12) === 0 ? fragments[rand(fragments.length)] :
                            pool[rand(pool.length)];
    }
    texts.push(s);
  }
  return texts;
}

function added(id, content, opts = {}) {
  return {
    id, content,
    single_word: !!opts.single_word, lstrip: !!opts.lstrip,
    rstrip: !!opts.rstrip, normalized: !!opts.normalized,
    special: opts.special === undefined ? true : opts.special,
  };
}

const BYTE_LEVEL = (addPrefixSpace, useRegex) => ({
  type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true,
  use_regex: useRegex,
});
const SPLIT = (pattern, behavior, invert = false) => ({
  type: 'Split', pattern, behavior, invert,
});
const LLAMA3_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|" +
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| " +
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const SPM_DECODER = {
  type: 'Sequence', decoders: [
    { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
    { type: 'ByteFallback' }, { type: 'Fuse' },
    { type: 'Strip', content: ' ', start: 1, stop: 0 },
  ],
};
const METASPACE = (scheme, split) => ({
  type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split,
});
const TEMPLATE = (single, specials) => ({
  type: 'TemplateProcessing', single,
  pair: single.concat([{ Sequence: { id: 'B', type_id: 1 } }]),
  special_tokens: Object.fromEntries(specials.map(([t, id]) => [
    t, { id: t, ids: [id], tokens: [t] },
  ])),
});
const SPECIAL = (id) => ({ SpecialToken: { id, type_id: 0 } });
const SEQ_A = { Sequence: { id: 'A', type_id: 0 } };

// Each configuration: how to train (normalizer, pre_tokenizer, model
// options) and then what the shipped file holds (`ship` edits the trained
// JSON: components, added tokens, byte-fallback tokens).
const CONFIGS = [
  {
    name: 'gpt2',
    train: { pre_tokenizer: BYTE_LEVEL(false, true) },
    ship: (j) => {
      addByteAlphabet(j);
      j.post_processor = BYTE_LEVEL(true, true);
      j.decoder = BYTE_LEVEL(true, true);
      addTokens(j, [['<|endoftext|>', {}]]);
    },
  },
  {
    name: 'roberta',
    train: { pre_tokenizer: BYTE_LEVEL(true, true) },
    ship: (j) => {
      addByteAlphabet(j);
      j.decoder = BYTE_LEVEL(true, true);
      const ids = addTokens(j, [['<s>', {}], ['</s>', {}], ['<pad>', {}],
                                ['<mask>', { lstrip: true, normalized: false }]]);
      j.post_processor = {
        type: 'RobertaProcessing', sep: ['</s>', ids[1]], cls: ['<s>', ids[0]],
        trim_offsets: true, add_prefix_space: true,
      };
    },
  },
  {
    name: 'llama3',
    train: {
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        SPLIT({ Regex: LLAMA3_PATTERN }, 'Isolated'), BYTE_LEVEL(false, false),
      ] },
      model: { ignore_merges: true },
    },
    ship: (j) => {
      addByteAlphabet(j);
      j.decoder = BYTE_LEVEL(true, true);
      const ids = addTokens(j, [
        ['<|begin_of_text|>', {}], ['<|end_of_text|>', {}],
        ['<|start_header_id|>', {}], ['<|end_header_id|>', {}],
        ['<|eot_id|>', {}],
      ]);
      j.post_processor = { type: 'Sequence', processors: [
        BYTE_LEVEL(true, false),
        TEMPLATE([SPECIAL('<|begin_of_text|>'), SEQ_A],
                 [['<|begin_of_text|>', ids[0]]]),
      ] };
    },
  },
  {
    name: 'qwen2',
    train: {
      normalizer: { type: 'NFC' },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        SPLIT({ Regex: QWEN2_PATTERN }, 'Isolated'), BYTE_LEVEL(false, false),
      ] },
    },
    ship: (j) => {
      addByteAlphabet(j);
      j.decoder = BYTE_LEVEL(false, false);
      j.post_processor = BYTE_LEVEL(false, false);
      addTokens(j, [['<|endoftext|>', {}], ['<|im_start|>', {}],
                    ['<|im_end|>', {}],
                    ['<tool_call>', { special: false }],
                    ['</tool_call>', { special: false }]]);
    },
  },
  {
    name: 'llama2',
    train: { pre_tokenizer: METASPACE('always', true),
             model: { byte_fallback: true, fuse_unk: true, unk_token: '<unk>' } },
    ship: (j) => {
      j.pre_tokenizer = null;
      j.normalizer = { type: 'Sequence', normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ] };
      j.decoder = SPM_DECODER;
      addVocab(j, '<unk>');
      addByteTokens(j);
      const ids = addTokens(j, [['<unk>', {}], ['<s>', {}], ['</s>', {}]]);
      j.post_processor = TEMPLATE([SPECIAL('<s>'), SEQ_A], [['<s>', ids[1]]]);
    },
  },
  {
    name: 'mistral',
    train: { pre_tokenizer: METASPACE('first', false),
             model: { byte_fallback: true, fuse_unk: true, unk_token: '<unk>' } },
    ship: (j) => {
      j.decoder = { type: 'Sequence', decoders: [
        { type: 'ByteFallback' }, METASPACE('first', false), { type: 'Fuse' },
      ] };
      addVocab(j, '<unk>');
      addByteTokens(j);
      const ids = addTokens(j, [
        ['<unk>', {}], ['<s>', {}], ['</s>', {}],
        ['mytoken', { special: false, single_word: true, normalized: true }],
      ]);
      j.post_processor = TEMPLATE(
          [SPECIAL('<s>'), SEQ_A, SPECIAL('</s>')],
          [['<s>', ids[1]], ['</s>', ids[2]]]);
    },
  },
  {
    name: 'gemma',
    train: { pre_tokenizer: METASPACE('never', true),
             model: { byte_fallback: true } },
    ship: (j) => {
      j.normalizer = { type: 'Replace', pattern: { String: ' ' }, content: '▁' };
      j.pre_tokenizer = SPLIT({ String: '▁' }, 'MergedWithNext');
      j.decoder = { type: 'Sequence', decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' }, { type: 'Fuse' },
      ] };
      addByteTokens(j);
      const ids = addTokens(j, [['<pad>', {}], ['<eos>', {}], ['<bos>', {}],
                                ['<mask>', { rstrip: true }]]);
      j.post_processor = TEMPLATE([SPECIAL('<bos>'), SEQ_A], [['<bos>', ids[2]]]);
    },
  },
  {
    name: 'wordpiece_like',
    train: {
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFD' }, { type: 'Lowercase' }, { type: 'NFKC' },
        { type: 'Strip', strip_left: true, strip_right: true },
      ] },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'WhitespaceSplit' }, { type: 'Digits', individual_digits: true },
        SPLIT({ Regex: '[,.!?;:]' }, 'Contiguous'),
      ] },
      model: { continuing_subword_prefix: '##', end_of_word_suffix: '</w>',
               unk_token: '[UNK]' },
    },
    ship: (j) => {
      j.decoder = { type: 'BPEDecoder', suffix: '</w>' };
      addVocab(j, '[UNK]');
      const ids = addTokens(j, [['[UNK]', {}], ['[CLS]', {}], ['[SEP]', {}],
                                ['MyToken', { special: false, normalized: true }]]);
      j.post_processor = { type: 'BertProcessing', sep: ['[SEP]', ids[2]],
                           cls: ['[CLS]', ids[1]] };
    },
  },
  {
    name: 'misc',
    train: {
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFKD' },
        { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
      ] },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Whitespace' }, { type: 'Digits', individual_digits: false },
        SPLIT({ Regex: '[aeiou]' }, 'MergedWithPrevious'),
        SPLIT({ String: 'x' }, 'Removed'),
        SPLIT({ Regex: '\\p{Lu}' }, 'MergedWithNext', true),
      ] },
      model: { unk_token: '<unk>', fuse_unk: false },
    },
    ship: (j) => {
      j.decoder = null;
      addVocab(j, '<unk>');
      addTokens(j, [['<unk>', {}], ['mytoken', { special: false, rstrip: true }]]);
    },
  },
];

// Appends added tokens; a token already in the vocab keeps its id. Returns
// the ids.
function addTokens(j, tokens) {
  let next = nextId(j);
  const ids = [];
  for (const [content, opts] of tokens) {
    let id = j.model.vocab[content];
    if (id === undefined) {
      const existing = j.added_tokens.find((t) => t.content === content);
      id = existing ? existing.id : next++;
    }
    j.added_tokens.push(added(id, content, opts));
    ids.push(id);
  }
  return ids;
}

function nextId(j) {
  let max = -1;
  for (const id of Object.values(j.model.vocab)) max = Math.max(max, id);
  for (const t of j.added_tokens) max = Math.max(max, t.id);
  return max + 1;
}

// Puts a token into the model's own vocab (an unk token must be there).
function addVocab(j, token) {
  if (j.model.vocab[token] === undefined) j.model.vocab[token] = nextId(j);
}

// Byte-level models carry all 256 byte characters (training only adds those
// the corpus has), so every text round-trips.
function addByteAlphabet(j) {
  for (const c of byteLevelAlphabet()) addVocab(j, c);
}

// Byte-fallback models carry <0x00>..<0xFF> in the vocab.
function addByteTokens(j) {
  let next = nextId(j);
  for (let b = 0; b < 256; ++b) {
    const t = '<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>';
    if (j.model.vocab[t] === undefined) j.model.vocab[t] = next++;
  }
}

function baseJson(train) {
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: [],
    normalizer: train.normalizer || null,
    pre_tokenizer: train.pre_tokenizer || null,
    post_processor: null, decoder: null,
    model: Object.assign({
      type: 'BPE', dropout: null, unk_token: null,
      continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: {}, merges: [],
    }, train.model || {}),
  };
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const corpusText = fs.readFileSync(corpus, 'utf8');
  const multilingual = path.join(outDir, 'multilingual.txt');
  fs.writeFileSync(multilingual, (MULTILINGUAL.join('\n') + '\n').repeat(20));
  const texts = makeTexts(corpusText);
  for (const config of CONFIGS) {
    const trainer = Tokenizer.fromString(JSON.stringify(baseJson(config.train)));
    trainer.train([corpus, multilingual]);
    const trainedPath = path.join(outDir, config.name + '.trained.json');
    trainer.save(trainedPath);
    const j = JSON.parse(fs.readFileSync(trainedPath, 'utf8'));
    fs.unlinkSync(trainedPath);
    config.ship(j);
    const dir = path.join(outDir, config.name);
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, JSON.stringify(j, null, 1));
    const tok = Tokenizer.fromFile(file);
    const expected = [];
    for (const text of texts) {
      const plain = await tok.encode(text, null, { addSpecialTokens: false });
      const special = await tok.encode(text, null, { addSpecialTokens: true });
      const ids = plain.getIds();
      expected.push({
        text, ids, ids_special: special.getIds(),
        decoded: await tok.decode(ids, false),
        decoded_special: await tok.decode(special.getIds(), false),
        decoded_skip: await tok.decode(special.getIds(), true),
      });
    }
    fs.writeFileSync(path.join(dir, 'expected.json'), JSON.stringify(expected));
  }
}

async function benchMain() {
  const text = fs.readFileSync(corpus, 'utf8');
  for (const config of CONFIGS) {
    const tok = Tokenizer.fromFile(
        path.join(outDir, config.name, 'tokenizer.json'));
    let best = Infinity;
    let ids = null;
    for (let rep = 0; rep < 3; ++rep) {
      const t0 = process.hrtime.bigint();
      const e = await tok.encode(text, null, { addSpecialTokens: false });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      best = Math.min(best, seconds);
      ids = e.getIds();
    }
    process.stdout.write(
        JSON.stringify({ name: config.name, seconds: best, ids }) + '\n');
  }
}

(bench ? benchMain() : main()).catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
