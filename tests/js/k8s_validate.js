// Checks Kubernetes objects (a multi-document YAML file, as `kubectl
// kustomize` renders them) against the API's schemas as the official
// JavaScript client (@kubernetes/client-node, generated from Kubernetes'
// OpenAPI) describes them: every field must be one of its object's, with a
// value of the field's type, recursively.
//
//   node k8s_validate.js FILE.yaml
//
// Prints one line per problem ("Kind/name: path: what") and exits 1 if any;
// prints the objects' kinds and exits 0 otherwise.
'use strict';

const fs = require('fs');
const yaml = require('js-yaml');
const k8s = require('@kubernetes/client-node');

// The client's model class of an object: V1Deployment for apps/v1
// Deployment, V1Namespace for v1 Namespace, ...
function modelOf(apiVersion, kind) {
  const version = (apiVersion || '').split('/').pop();
  const name = version.charAt(0).toUpperCase() + version.slice(1) + kind;
  return k8s[name];
}

const PRIMITIVES = {
  string: (v) => typeof v === 'string',
  number: (v) => typeof v === 'number',
  boolean: (v) => typeof v === 'boolean',
  Date: (v) => typeof v === 'string' || v instanceof Date,
  // int-or-string fields (ports, resource quantities' targets).
  IntOrString: (v) => typeof v === 'string' || typeof v === 'number',
  object: () => true,
  any: () => true,
};

function check(value, type, path, problems) {
  if (value === null || value === undefined) return;  // Omitted.
  if (type.startsWith('Array<')) {
    if (!Array.isArray(value)) {
      problems.push(`${path}: expected a list, got ${JSON.stringify(value)}`);
      return;
    }
    const inner = type.slice(6, -1);
    value.forEach((v, i) => check(v, inner, `${path}[${i}]`, problems));
    return;
  }
  const map = /^\{ \[key: string\]: (.*); \}$/.exec(type);
  if (map) {
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push(`${path}: expected a map`);
      return;
    }
    for (const [k, v] of Object.entries(value)) {
      check(v, map[1], `${path}.${k}`, problems);
    }
    return;
  }
  if (type in PRIMITIVES) {
    if (!PRIMITIVES[type](value)) {
      problems.push(`${path}: expected ${type}, got ${JSON.stringify(value)}`);
    }
    return;
  }
  const model = k8s[type];
  if (!model || typeof model.getAttributeTypeMap !== 'function') {
    // Enums and other named strings.
    if (typeof value !== 'string') {
      problems.push(`${path}: expected ${type} (a string)`);
    }
    return;
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`${path}: expected an object of type ${type}`);
    return;
  }
  const fields = new Map(
      model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) {
      problems.push(`${path}.${k}: no such field in ${type}`);
      continue;
    }
    check(v, fields.get(k), `${path}.${k}`, problems);
  }
}

function main() {
  const file = process.argv[2];
  const docs = yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d);
  const problems = [];
  const kinds = [];
  for (const doc of docs) {
    const id = `${doc.kind}/${doc.metadata && doc.metadata.name}`;
    const model = modelOf(doc.apiVersion, doc.kind);
    if (!model) {
      problems.push(`${id}: unknown apiVersion/kind ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    const mine = [];
    check(doc, model.name, '', mine);
    if (!doc.metadata || !doc.metadata.name) mine.push(': metadata.name missing');
    for (const p of mine) problems.push(`${id}: ${p.replace(/^\./, '')}`);
    kinds.push(id);
  }
  if (problems.length > 0) {
    for (const p of problems) console.log(p);
    process.exit(1);
  }
  console.log(kinds.join('\n'));
}

main();
