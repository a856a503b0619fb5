// Reference chat-template rendering for runtime/jinja/jinja_test.cc:
// @huggingface/jinja (pinned by package-lock.json), the Jinja engine of
// transformers.js. Reads a JSON file {templates: [{name, template}],
// contexts: [{...variables}]} and prints, for each template and each
// context, {"output": text} or {"error": message}, as one JSON array of
// arrays. The engine defines raise_exception(msg) itself, as transformers
// does.
// Usage: node jinja_render.js INPUT.json
'use strict';

const fs = require('fs');
const { Template } = require('@huggingface/jinja');

if (process.argv.length !== 3) {
  process.stderr.write('usage: node jinja_render.js INPUT.json\n');
  process.exit(2);
}
const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const results = input.templates.map(({ template }) => {
  let compiled;
  try {
    compiled = new Template(template);
  } catch (e) {
    return input.contexts.map(() => ({ error: String(e.message) }));
  }
  return input.contexts.map((context) => {
    try {
      return { output: compiled.render(context) };
    } catch (e) {
      return { error: String(e.message) };
    }
  });
});
process.stdout.write(JSON.stringify(results));
