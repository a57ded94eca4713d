// The generated bindings this package runs on. On Node (tests, tools): ubrn's N-API
// flavour in ./generated (scripts/gen-bindings). React Native's bundler (Metro) picks
// bindings.native.ts instead: the JSI flavour behind the Turbo Module.
export * from './generated/index';
