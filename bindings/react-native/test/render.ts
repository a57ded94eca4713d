// Mounting components for the hook tests: react-test-renderer runs effects (mount and
// unmount) without a DOM. Updates come from the SDK's callbacks at any time, so React
// schedules them as in an app (not inside act()); tests wait for the rendered value.

import { createElement, StrictMode, type ReactElement } from 'react';
import { create } from 'react-test-renderer';

const flags = globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean; IS_REACT_NATIVE_TEST_ENVIRONMENT?: boolean };
flags.IS_REACT_ACT_ENVIRONMENT = false;
// react-test-renderer warns it is deprecated unless it runs in a React Native test setup.
flags.IS_REACT_NATIVE_TEST_ENVIRONMENT = true;

export interface Mounted {
  unmount(): void;
}

/** Mounts `element` in StrictMode (effects run, are cleaned up and run again, as in development). */
export function mount(element: ReactElement): Mounted {
  const renderer = create(createElement(StrictMode, null, element));
  return { unmount: () => renderer.unmount() };
}
