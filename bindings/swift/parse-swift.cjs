// Checks the hand-written Swift as far as a machine without a Swift toolchain can:
//  1. every .swift file under the given directory parses with tree-sitter-swift (syntax
//     only: no types, no names). Generated/ is skipped: tree-sitter-swift misreads some
//     valid constructs uniffi emits (`{ () }`, attributes inside `#if`);
//  2. with --generated Tether.swift: every `client.method(label:` the wrapper calls is a
//     method the generated bindings declare with that first label, and the wrapper's
//     class conforming to each of the generated EventListener and TokenProvider protocols
//     declares every method of the protocol, with its argument labels and types, and a
//     body that does something;
//  3. every event the listener receives reaches the app: each hub the Listener class holds
//     is fed by one of its methods (`hub.send(`), handed to TetherConnection
//     (`= hubs.<name>`) and streamed by a public method (`<hub>.stream()`);
//  4. the public API (every `public` declaration, in every file) is the one listed in
//     api.txt, line for line: a declaration missing from the wrapper or not listed fails.
//     `--write-api` rewrites api.txt from the wrapper (then review the diff).
// Checks 2 to 4 are about the wrapper and run with --generated; without it (another
// Swift file, such as a filled-in Package.swift) only check 1 runs.
// Usage: node parse-swift.cjs <dir> [--generated <path to generated Tether.swift>] [--write-api]
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
const writeAt = args.indexOf('--write-api');
const writeApi = writeAt >= 0 && args.splice(writeAt, 1).length > 0;
const files = args.flatMap((dir) => swiftFiles(dir));
if (files.length === 0) {
  console.error('parse-swift: no .swift files found');
  process.exit(1);
}
let failed = 0;
const parsed = [];
for (const file of files) {
  const source = fs.readFileSync(file, 'utf8');
  const tree = parser.parse((index) => source.slice(index, index + 4096));
  parsed.push({ file, source, root: tree.rootNode });
  for (const e of errors(tree.rootNode)) {
    failed += 1;
    const what = e.isMissing ? `missing ${e.type}` : JSON.stringify(source.slice(e.startIndex, Math.min(e.endIndex, e.startIndex + 60)));
    console.error(`${file}:${e.startPosition.row + 1}:${e.startPosition.column + 1}: syntax error: ${what}`);
  }
}
let apiChecks = 0;
let hubChecks = 0;
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
    const conforming = classes().filter((c) => c.inherits.includes(protocol));
    if (conforming.length === 0) {
      failed += 1;
      console.error(`no class of the wrapper conforms to ${protocol}`);
      continue;
    }
    // `func name(label: Type, label: Type) async throws -> Result` in the generated protocol.
    for (const [, method, params] of body[1].matchAll(/func (\w+)\(([^)]*)\)/g)) {
      apiChecks += 1;
      const wanted = params.split(',').map((p) => squash(p)).filter((p) => p !== '');
      for (const c of conforming) {
        const found = c.functions.find((f) => f.name === method && same(f.params, wanted));
        if (!found) {
          failed += 1;
          const has = c.functions.filter((f) => f.name === method).map((f) => `(${f.params.join(', ')})`);
          console.error(
            `${c.file}: ${c.name} (a ${protocol}) does not implement ${method}(${wanted.join(', ')})` +
              (has.length ? `; it declares ${method}${has.join(', ')}` : ''),
          );
        } else if (!found.hasStatements) {
          failed += 1;
          console.error(`${c.file}: ${c.name}.${method} has an empty body: the event goes nowhere`);
        }
      }
    }
  }
  failed += checkHubs();
}
if (generatedPath) failed += checkPublicApi();
if (failed > 0) process.exit(1);
console.log(
  `swift wrapper: ${files.length} files parse without syntax errors (tree-sitter-swift)` +
    (generatedPath
      ? `; ${apiChecks} calls and protocol methods match the generated bindings; ${hubChecks} listener events reach a public stream`
        + `; the public API is api.txt's ${publicApi().length} declarations`
      : ''),
);

// The syntax tree, read back.

/** Whitespace collapsed, and none just inside brackets: a signature as one comparable line. */
function squash(text) {
  return text
    .replace(/\s+/g, ' ')
    .replace(/([(<[]) /g, '$1')
    .replace(/ ([)>\]])/g, '$1')
    .replace(/,([)>\]])/g, '$1')
    .trim();
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function text(source, node) {
  return source.slice(node.startIndex, node.endIndex);
}

function descendants(node, type, found = []) {
  for (const child of node.namedChildren) {
    if (child.type === type) found.push(child);
    descendants(child, type, found);
  }
  return found;
}

/** Every class of the wrapper: name, what it inherits, its functions and properties. */
function classes() {
  return parsed.flatMap(({ file, source, root }) =>
    descendants(root, 'class_declaration').map((node) => {
      const name = node.namedChildren.find((c) => c.type === 'type_identifier');
      const body = node.namedChildren.find((c) => c.type === 'class_body');
      const members = body ? body.namedChildren : [];
      return {
        file: path.relative(process.cwd(), file),
        name: name ? text(source, name) : '?',
        source,
        inherits: node.namedChildren.filter((c) => c.type === 'inheritance_specifier').map((c) => text(source, c)),
        functions: members
          .filter((m) => m.type === 'function_declaration')
          .map((m) => {
            const fname = m.namedChildren.find((c) => c.type === 'simple_identifier');
            const fbody = m.namedChildren.find((c) => c.type === 'function_body');
            return {
              name: fname ? text(source, fname) : '?',
              params: m.namedChildren.filter((c) => c.type === 'parameter').map((c) => squash(text(source, c))),
              body: fbody ? text(source, fbody) : '',
              hasStatements: Boolean(fbody && fbody.namedChildren.some((c) => c.type === 'statements')),
            };
          }),
        properties: members
          .filter((m) => m.type === 'property_declaration')
          .map((m) => {
            const pattern = m.namedChildren.find((c) => c.type === 'pattern');
            return { name: pattern ? text(source, pattern) : '?', declaration: squash(text(source, m)) };
          }),
        text: text(source, node),
      };
    }),
  );
}

/**
 * Check 3: each `Hub` the EventListener class holds is fed by a listener method, stored
 * by TetherConnection from `hubs.<name>` and streamed by one of its public methods.
 */
function checkHubs() {
  let problems = 0;
  const all = classes();
  const listener = all.find((c) => c.inherits.includes('EventListener'));
  const connection = all.find((c) => c.name === 'TetherConnection');
  if (!listener || !connection) {
    console.error('no EventListener class or no TetherConnection class in the wrapper');
    return 1;
  }
  const hubs = listener.properties.filter((p) => /: Hub</.test(p.declaration));
  for (const hub of hubs) {
    hubChecks += 1;
    const escaped = hub.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const feeds = listener.functions.filter((f) => new RegExp(`\\b${escaped}\\.send\\(`).test(f.body));
    const stored = connection.text.match(new RegExp(`(\\w+) = hubs\\.${escaped}\\b`));
    const streamed =
      stored &&
      connection.functions.filter((f) => new RegExp(`\\b${stored[1]}\\.stream\\(\\)`).test(f.body));
    const isPublic = (f) => new RegExp(`public func ${f.name}\\(`).test(connection.text);
    if (feeds.length === 0) {
      problems += 1;
      console.error(`${listener.file}: no listener method sends to the hub ${hub.name}`);
    } else if (!stored) {
      problems += 1;
      console.error(`${connection.file}: TetherConnection does not keep the hub ${hub.name} (no \`= hubs.${hub.name}\`)`);
    } else if (!streamed.some(isPublic)) {
      problems += 1;
      console.error(`${connection.file}: no public method of TetherConnection streams ${stored[1]} (${feeds.map((f) => f.name).join(', ')})`);
    }
  }
  if (hubs.length === 0) {
    console.error(`${listener.file}: the listener class holds no Hub`);
    problems += 1;
  }
  return problems;
}

/**
 * The public API: `<file> <container>: <declaration>` for every public declaration, its
 * body left out, in source order.
 */
function publicApi() {
  const lines = [];
  const kinds = new Set(['class_declaration', 'protocol_declaration', 'function_declaration', 'property_declaration', 'init_declaration', 'typealias_declaration']);
  const bodyTypes = new Set(['class_body', 'protocol_body', 'enum_class_body', 'function_body', 'computed_property']);
  for (const { file, source, root } of parsed) {
    const walk = (node, container) => {
      for (const child of node.namedChildren) {
        if (!kinds.has(child.type)) continue;
        const modifiers = child.namedChildren.find((c) => c.type === 'modifiers');
        const isPublic = modifiers && /\b(public|open)\b/.test(text(source, modifiers));
        const body = child.namedChildren.find((c) => bodyTypes.has(c.type));
        const head = squash(source.slice(child.startIndex, body ? body.startIndex : child.endIndex));
        if (isPublic) lines.push(`${path.basename(file)} ${container || '-'}: ${head}`);
        if (body && (child.type === 'class_declaration' || child.type === 'protocol_declaration')) {
          const name = child.namedChildren.find((c) => c.type === 'type_identifier');
          walk(body, name ? text(source, name) : '?');
        }
      }
    };
    walk(root, '');
  }
  return lines;
}

/** Check 4: the public API is api.txt's (or, with --write-api, becomes it). */
function checkPublicApi() {
  const listed = path.join(__dirname, 'api.txt');
  const actual = publicApi();
  const header = [
    '# The public API of the Swift wrapper (ios/Sources/Tether), one declaration a line:',
    '# "<file> <type>: <declaration without its body>". Checked by parse-swift.cjs;',
    '# regenerate with `node parse-swift.cjs ../../ios/Sources/Tether --write-api` and review.',
  ];
  if (writeApi) {
    fs.writeFileSync(listed, [...header, ...actual, ''].join('\n'));
    console.log(`parse-swift: wrote ${actual.length} declarations to ${listed}`);
    return 0;
  }
  if (!fs.existsSync(listed)) {
    console.error(`no ${listed}: run with --write-api`);
    return 1;
  }
  const expected = fs.readFileSync(listed, 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
  let problems = 0;
  for (const line of expected.filter((l) => !actual.includes(l))) {
    problems += 1;
    console.error(`api.txt lists a declaration the wrapper lacks: ${line}`);
  }
  for (const line of actual.filter((l) => !expected.includes(l))) {
    problems += 1;
    console.error(`a public declaration api.txt does not list (add it, with its docs): ${line}`);
  }
  return problems;
}
