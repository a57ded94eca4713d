// Checks the hand-written Swift as far as a machine without a Swift toolchain can:
//  1. every .swift file under the given directory parses with tree-sitter-swift (syntax
//     only: no types, no names). Generated/ is skipped: tree-sitter-swift misreads some
//     valid constructs uniffi emits (`{ () }`, attributes inside `#if`);
//  2. with --generated Tether.swift: every `client.method(label:` the wrapper calls is a
//     method the generated bindings declare with that first label, and the wrapper
//     implements every method of the generated EventListener and TokenProvider protocols.
// Usage: node parse-swift.cjs <dir> [--generated <path to generated Tether.swift>]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Parser = require('tree-sitter');
const Swift = require('tree-sitter-swift');

function swiftFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'Generated' ? [] : swiftFiles(full);
    return entry.name.endsWith('.swift') ? [full] : [];
  });
}

function errors(node, found = []) {
  if (node.type === 'ERROR' || node.isMissing) found.push(node);
  else if (node.hasError) for (const child of node.children) errors(child, found);
  return found;
}

const parser = new Parser();
parser.setLanguage(Swift);
const args = process.argv.slice(2);
const generatedAt = args.indexOf('--generated');
const generatedPath = generatedAt >= 0 ? args.splice(generatedAt, 2)[1] : undefined;
const files = args.flatMap((dir) => swiftFiles(dir));
if (files.length === 0) {
  console.error('parse-swift: no .swift files found');
  process.exit(1);
}
let failed = 0;
for (const file of files) {
  const source = fs.readFileSync(file, 'utf8');
  const tree = parser.parse((index) => source.slice(index, index + 4096));
  for (const e of errors(tree.rootNode)) {
    failed += 1;
    const what = e.isMissing ? `missing ${e.type}` : JSON.stringify(source.slice(e.startIndex, Math.min(e.endIndex, e.startIndex + 60)));
    console.error(`${file}:${e.startPosition.row + 1}:${e.startPosition.column + 1}: syntax error: ${what}`);
  }
}
let apiChecks = 0;
if (generatedPath) {
  const generated = fs.readFileSync(generatedPath, 'utf8');
  const wrapper = files.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
  const escape = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  for (const [, method, label] of wrapper.matchAll(/\bclient\.(\w+)\((?:(\w+):)?/g)) {
    apiChecks += 1;
    const declared = new RegExp(`func ${escape(method)}\\(${label ? `${escape(label)}:` : '\\)'}`);
    if (!declared.test(generated)) {
      failed += 1;
      console.error(`wrapper calls client.${method}(${label ? label + ':' : ''}) but the generated Tether.swift declares no such method`);
    }
  }
  for (const protocol of ['EventListener', 'TokenProvider']) {
    const body = generated.match(new RegExp(`public protocol ${protocol}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`));
    if (!body) {
      failed += 1;
      console.error(`the generated Tether.swift has no protocol ${protocol}`);
      continue;
    }
    for (const [, method, label] of body[1].matchAll(/func (\w+)\((?:(\w+):)?/g)) {
      apiChecks += 1;
      const implemented = new RegExp(`func ${escape(method)}\\(${label ? `${escape(label)}:` : '\\)'}`);
      if (!implemented.test(wrapper)) {
        failed += 1;
        console.error(`the wrapper does not implement ${protocol}.${method}(${label ? label + ':' : ''})`);
      }
    }
  }
}
if (failed > 0) process.exit(1);
console.log(
  `swift wrapper: ${files.length} files parse without syntax errors (tree-sitter-swift)` +
    (generatedPath ? `; ${apiChecks} calls and protocol methods match the generated bindings` : ''),
);
