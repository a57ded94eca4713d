// The generated bindings on React Native (Metro picks this file over bindings.ts): the
// Turbo Module's entry point installs the Rust crate into the JS runtime, initialises the
// JSI bindings and re-exports them. Both flavours have the same TypeScript API.
export * from './native/index';
