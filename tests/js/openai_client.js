// Drives `edgesplit serve` with the official OpenAI client for Node (the
// npm package `openai`, a client none of us wrote) and prints what it got
// as one JSON object for tests/openai_api_test.cc to check.
//   node openai_client.js BASE_URL MODEL PROMPT STOP
// BASE_URL: http://127.0.0.1:PORT/v1. STOP: a stop string expected in the
// greedy continuation of PROMPT.
'use strict';
const OpenAI = require('openai').default || require('openai');

const [baseURL, model, prompt, stop] = process.argv.slice(2);
const client = new OpenAI({baseURL, apiKey: 'unused', maxRetries: 0});
const greedy = {model, temperature: 0, max_tokens: 24};
const chat = [
  {role: 'system', content: 'You tell short stories.'},
  {role: 'user', content: prompt},
];

// An API error as {status, type, code, param, message}.
async function failure(promise) {
  try {
    await promise;
    return {status: 0};
  } catch (e) {
    return {status: e.status, type: e.type, code: e.code, param: e.param,
            message: e.message};
  }
}

async function streamed(stream, textOf) {
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    ++chunks;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += textOf(c) || '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return {text, finish, usage, chunks};
}

async function main() {
  const out = {};
  out.models = (await client.models.list()).data.map((m) => m.id);

  const c = await client.completions.create({...greedy, prompt});
  out.completion = {text: c.choices[0].text, finish: c.choices[0].finish_reason,
                    usage: c.usage, object: c.object};
  out.completion_stream = await streamed(
      await client.completions.create({
        ...greedy, prompt, stream: true, stream_options: {include_usage: true},
      }),
      (ch) => ch.text);

  const stopped = await client.completions.create({...greedy, prompt, stop: [stop]});
  out.stopped = {text: stopped.choices[0].text,
                 finish: stopped.choices[0].finish_reason,
                 usage: stopped.usage};
  out.stopped_stream = await streamed(
      await client.completions.create({...greedy, prompt, stop, stream: true}),
      (ch) => ch.text);

  const r = await client.chat.completions.create({...greedy, messages: chat});
  out.chat = {text: r.choices[0].message.content, role: r.choices[0].message.role,
              finish: r.choices[0].finish_reason, usage: r.usage};
  out.chat_stream = await streamed(
      await client.chat.completions.create({
        ...greedy, messages: chat, stream: true,
        stream_options: {include_usage: true},
      }),
      (ch) => ch.delta.content);

  // Seeded sampling repeats.
  const sampled = {model, prompt, max_tokens: 16, temperature: 0.9, top_p: 0.95,
                   seed: 1234};
  const s1 = await client.completions.create(sampled);
  const s2 = await client.completions.create(sampled);
  out.seeded_equal = s1.choices[0].text === s2.choices[0].text;

  // A stream the client abandons after its first pieces.
  const long = await client.completions.create({
    model, prompt, temperature: 0, max_tokens: 400, stream: true,
  });
  let pieces = 0;
  for await (const chunk of long) {
    if (++pieces === 3) {
      long.controller.abort();
      break;
    }
  }
  out.abandoned_after = pieces;

  // 16 at once. Seed 77 (greedy, so the text is unchanged) tells the
  // test's backend to hold each until a second one runs beside it.
  const many = await Promise.all(Array.from({length: 16}, () =>
    client.completions.create({...greedy, prompt, seed: 77})));
  out.concurrent = many.map((x) => x.choices[0].text);

  // Refusals: the error shape, and serving goes on.
  out.unknown_model = await failure(
      client.completions.create({...greedy, model: 'no-such-model', prompt}));
  out.bad_field = await failure(
      client.completions.create({...greedy, prompt, temperature: 7}));
  const raw = await fetch(`${baseURL}/completions`, {
    method: 'POST', headers: {'content-type': 'application/json'},
    body: '{"model": "' + model + '", "prompt": ',
  });
  out.malformed = {status: raw.status, body: await raw.json()};
  const after = await client.completions.create({...greedy, prompt});
  out.after_errors = after.choices[0].text;
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`openai_client.js: ${e.stack || e}\n`);
  process.exit(1);
});
