// Bundles src/index.ts for Node (ESM) with its bindings import (./generated/index, the
// tests' flavour) pointed at the given N-API bindings. The runtimes and React stay
// imports, resolved from the app's node_modules.
// Usage: node scripts/bundle-node.mjs <bindings index.ts> <out file>
import { build } from 'esbuild';
import { resolve } from 'node:path';

const [bindings, outfile] = process.argv.slice(2);
if (!bindings || !outfile) {
  console.error('usage: node scripts/bundle-node.mjs <bindings index.ts> <out file>');
  process.exit(2);
}

const nodeBindings = {
  name: 'node-bindings',
  setup(b) {
    b.onResolve({ filter: /^\.\/generated\/index$/ }, (args) =>
      args.importer.endsWith('/src/bindings.ts') ? { path: resolve(bindings) } : undefined);
  },
};

const result = await build({
  entryPoints: ['src/index.ts'],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['react', '@ubjs/core', '@ubjs/node'],
  plugins: [nodeBindings],
  metafile: true,
  logLevel: 'warning',
});
const inputs = Object.keys(result.metafile.inputs);
if (!inputs.some((i) => i.includes('node-bindings/tether-ffi.ts'))) {
  console.error(`bundle-node: the N-API bindings were not bundled (inputs: ${inputs.join(', ')})`);
  process.exit(1);
}
if (inputs.some((i) => i.startsWith('src/generated/'))) {
  console.error('bundle-node: the tests\' bindings (src/generated, this machine\'s library path) were bundled');
  process.exit(1);
}
