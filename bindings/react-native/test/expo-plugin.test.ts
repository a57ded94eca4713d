// The Expo config plugin (app.plugin.js -> plugin/withTether.cjs): loaded the way Expo
// loads it, run through Expo's own mod compiler on a scratch project (files in, files out),
// and its rules on sample gradle.properties, build.gradle and Podfile.properties.json: a
// lower value is raised, a higher one kept, the app's abiFilters merged with ours.

import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const PKG = join(dirname(fileURLToPath(import.meta.url)), '..');
const plugin = require('../plugin/withTether.cjs');
const expo = require('@expo/config-plugins');
const resolver = require('@expo/config-plugins/build/utils/plugin-resolver');

type Item = { type: 'property'; key: string; value: string } | { type: 'comment'; value: string } | { type: 'empty' };

const prop = (items: Item[], key: string) =>
  items.find((i): i is Extract<Item, { type: 'property' }> => i.type === 'property' && i.key === key)?.value;

/** Every ABI named by an abiFilters statement inside defaultConfig's ndk block. */
function abiFiltersOf(gradle: string): string[] {
  const defaults = gradle.slice(gradle.indexOf('defaultConfig'));
  const ndk = /ndk\s*\{([^}]*)\}/.exec(defaults);
  assert.ok(ndk, `no ndk block in defaultConfig:\n${gradle}`);
  const abis: string[] = [];
  for (const line of ndk[1].split(/[\n;]/)) {
    if (!/abiFilters/.test(line)) continue;
    for (const m of line.matchAll(/["']([\w-]+)["']/g)) abis.push(m[1]);
  }
  return abis;
}

// Shaped like Expo's prebuild template (expo-template-bare-minimum): no minSdkVersion in
// gradle.properties, all four ABIs built, no abiFilters, the deployment target's default
// in the Podfile.
const GRADLE_PROPERTIES = `org.gradle.jvmargs=-Xmx2048m
android.useAndroidX=true
# Architectures to build native code for.
reactNativeArchitectures=armeabi-v7a,arm64-v8a,x86,x86_64
newArchEnabled=true
`;
const PROJECT_BUILD_GRADLE = `buildscript {
  repositories { google(); mavenCentral() }
}
apply plugin: "expo-root-project"
apply plugin: "com.facebook.react.rootproject"
`;
const APP_BUILD_GRADLE = `apply plugin: "com.android.application"
apply plugin: "com.facebook.react"

android {
    ndkVersion rootProject.ext.ndkVersion
    namespace "com.example.shop"
    defaultConfig {
        applicationId "com.example.shop"
        minSdkVersion rootProject.ext.minSdkVersion
        targetSdkVersion rootProject.ext.targetSdkVersion
        versionCode 1
        versionName "1.0"
    }
    buildTypes {
        release {
            minifyEnabled false
        }
    }
}
`;
const podfile = (fallback: string) => `require 'json'
podfile_properties = JSON.parse(File.read(File.join(__dir__, 'Podfile.properties.json'))) rescue {}
platform :ios, podfile_properties['ios.deploymentTarget'] || '${fallback}'
target 'Shop' do
  use_expo_modules!
end
`;

function scratchProject(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'tether-expo-'));
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), text);
  }
  // The app depends on the package: node_modules/@tether/react-native is this package.
  mkdirSync(join(root, 'node_modules/@tether'), { recursive: true });
  symlinkSync(PKG, join(root, 'node_modules/@tether/react-native'), 'dir');
  return root;
}

async function prebuild(root: string) {
  // What `expo prebuild` does with "plugins": ["@tether/react-native"] once the native
  // projects exist: resolve the plugin by package name, apply it, run the mods.
  const config = expo.withPlugins({
    name: 'shop',
    slug: 'shop',
    android: { package: 'com.example.shop' },
    ios: { bundleIdentifier: 'com.example.shop' },
    _internal: { projectRoot: root },
  }, ['@tether/react-native']);
  await expo.compileModsAsync(config, { projectRoot: root, platforms: ['android', 'ios'] });
  const read = (file: string) => readFileSync(join(root, file), 'utf8');
  return {
    gradleProperties: expo.AndroidConfig.Properties.parsePropertiesFile(read('android/gradle.properties')) as Item[],
    appBuildGradle: read('android/app/build.gradle'),
    podfileProperties: JSON.parse(read('ios/Podfile.properties.json')) as Record<string, string>,
  };
}

test('expo: the package name resolves to app.plugin.js, which loads the plugin', () => {
  const root = scratchProject({});
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => { warnings.push(args.join(' ')); };
  try {
    const resolved = resolver.resolveConfigPluginFunctionWithInfo(root, '@tether/react-native');
    assert.equal(resolved.pluginFile, join(root, 'node_modules/@tether/react-native/app.plugin.js'));
    assert.equal(resolved.plugin, plugin, 'app.plugin.js should export plugin/withTether.cjs');
    // Expo warns when package.json's "exports" hides app.plugin.js from Node's resolver.
    assert.deepEqual(warnings, []);
  } finally {
    console.warn = warn;
    rmSync(root, { recursive: true, force: true });
  }
});

test('expo SDK 55 and older: their require()-based loader takes app.plugin.js too', () => {
  // Up to SDK 55, Expo require()s app.plugin.js; in a "type": "module" package that is an
  // ES module, which Node 20.19+ can require. A CommonJS app.plugin.js fails here.
  // In a plain node process: this one runs under tsx, whose hooks load either kind.
  const root = scratchProject({});
  try {
    const script = `
      const older = require(${JSON.stringify(require.resolve('expo-config-plugins-55/build/utils/plugin-resolver'))});
      const withTether = older.resolveConfigPluginFunction(process.argv[1], '@tether/react-native');
      const config = withTether({ name: 'shop', slug: 'shop', _internal: { projectRoot: process.argv[1] } });
      console.log(JSON.stringify({ type: typeof withTether, mods: Object.keys(config.mods.android).concat(Object.keys(config.mods.ios)) }));`;
    const run = spawnSync(process.execPath, ['-e', script, root], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), { type: 'function', mods: ['gradleProperties', 'appBuildGradle', 'podfileProperties'] });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('expo prebuild of a fresh template: minSdk 24 set, our ABIs filtered, a higher iOS default kept', async () => {
  const root = scratchProject({
    'android/gradle.properties': GRADLE_PROPERTIES,
    'android/build.gradle': PROJECT_BUILD_GRADLE,
    'android/app/build.gradle': APP_BUILD_GRADLE,
    'ios/Podfile.properties.json': JSON.stringify({ 'expo.jsEngine': 'hermes' }, null, 2),
    'ios/Podfile': podfile('16.4'),
  });
  try {
    const out = await prebuild(root);
    assert.equal(prop(out.gradleProperties, 'android.minSdkVersion'), '24');
    assert.equal(prop(out.gradleProperties, 'newArchEnabled'), 'true', 'other properties are kept');
    assert.deepEqual(abiFiltersOf(out.appBuildGradle).sort(), ['arm64-v8a', 'armeabi-v7a', 'x86_64']);
    assert.match(out.appBuildGradle, /applicationId "com.example.shop"/);
    // The template's own default (16.4) is above 15.0: writing 15.0 would lower it.
    assert.equal(out.podfileProperties['ios.deploymentTarget'], undefined);
    assert.equal(out.podfileProperties['expo.jsEngine'], 'hermes');

    // A second prebuild over the result changes nothing (the plugin is idempotent).
    const again = await prebuild(root);
    assert.equal(again.appBuildGradle, out.appBuildGradle);
    assert.deepEqual(again.podfileProperties, out.podfileProperties);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('expo prebuild of an older project: low minSdk and deployment target raised, app ABIs merged', async () => {
  const withNdk = APP_BUILD_GRADLE.replace(
    '        versionName "1.0"\n',
    '        versionName "1.0"\n        ndk {\n            abiFilters "arm64-v8a", "x86"\n        }\n',
  );
  const root = scratchProject({
    'android/gradle.properties': GRADLE_PROPERTIES + 'android.minSdkVersion=21\n',
    'android/build.gradle': PROJECT_BUILD_GRADLE,
    'android/app/build.gradle': withNdk,
    'ios/Podfile.properties.json': JSON.stringify({ 'ios.deploymentTarget': '13.4' }),
    'ios/Podfile': podfile('13.4'),
  });
  try {
    const out = await prebuild(root);
    assert.equal(prop(out.gradleProperties, 'android.minSdkVersion'), '24');
    const abis = abiFiltersOf(out.appBuildGradle);
    assert.deepEqual([...abis].sort(), ['arm64-v8a', 'armeabi-v7a', 'x86', 'x86_64'], 'the app\'s x86 stays, ours are added');
    assert.equal(abis.filter((a) => a === 'arm64-v8a').length, 1, 'no ABI listed twice');
    assert.equal(out.podfileProperties['ios.deploymentTarget'], '15.0');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('android.minSdkVersion: raised below 24, kept at or above, the project default respected', () => {
  const items = (v?: string): Item[] => [
    { type: 'comment', value: ' settings' },
    { type: 'property', key: 'newArchEnabled', value: 'true' },
    ...(v === undefined ? [] : [{ type: 'property' as const, key: 'android.minSdkVersion', value: v }]),
  ];
  assert.equal(prop(plugin.raiseMinSdk(items('21')), 'android.minSdkVersion'), '24');
  assert.equal(prop(plugin.raiseMinSdk(items('23')), 'android.minSdkVersion'), '24');
  assert.equal(prop(plugin.raiseMinSdk(items('24')), 'android.minSdkVersion'), '24');
  assert.equal(prop(plugin.raiseMinSdk(items('26')), 'android.minSdkVersion'), '26');
  assert.equal(prop(plugin.raiseMinSdk(items('junk')), 'android.minSdkVersion'), '24');
  // Unset: the default of an older root build.gradle decides.
  const older = (d: string) => `ext {\n  minSdkVersion = Integer.parseInt(findProperty('android.minSdkVersion') ?: '${d}')\n}`;
  assert.equal(prop(plugin.raiseMinSdk(items(), older('23')), 'android.minSdkVersion'), '24');
  assert.equal(prop(plugin.raiseMinSdk(items(), older('26')), 'android.minSdkVersion'), undefined);
  assert.equal(prop(plugin.raiseMinSdk(items(), null), 'android.minSdkVersion'), '24');
  const input = items('21');
  plugin.raiseMinSdk(input);
  assert.equal(prop(input, 'android.minSdkVersion'), '21', 'the input is not modified');
});

test('abiFilters: added to defaultConfig, merged with the app\'s, Kotlin DSL too', () => {
  assert.deepEqual(abiFiltersOf(plugin.mergeAbiFilters(APP_BUILD_GRADLE)).sort(), ['arm64-v8a', 'armeabi-v7a', 'x86_64']);

  const oneLine = APP_BUILD_GRADLE.replace('versionName "1.0"', 'versionName "1.0"\n        ndk { abiFilters \'armeabi-v7a\' }');
  assert.deepEqual(abiFiltersOf(plugin.mergeAbiFilters(oneLine)).sort(), ['arm64-v8a', 'armeabi-v7a', 'x86_64']);

  const all = APP_BUILD_GRADLE.replace('versionName "1.0"', 'versionName "1.0"\n        ndk {\n            abiFilters "x86_64", "armeabi-v7a", "arm64-v8a"\n        }');
  assert.equal(plugin.mergeAbiFilters(all), all, 'nothing to add: unchanged');

  // An ndk block elsewhere (a build type) is not defaultConfig's.
  const elsewhere = APP_BUILD_GRADLE.replace('minifyEnabled false', 'minifyEnabled false\n            ndk { abiFilters "x86" }');
  const merged = plugin.mergeAbiFilters(elsewhere);
  assert.deepEqual(abiFiltersOf(merged).sort(), ['arm64-v8a', 'armeabi-v7a', 'x86_64']);
  assert.match(merged, /release \{\n\s+minifyEnabled false\n\s+ndk \{ abiFilters "x86" \}/);

  const kts = `android {\n    defaultConfig {\n        minSdk = 24\n        ndk {\n            abiFilters += listOf("arm64-v8a")\n        }\n    }\n}\n`;
  const ktsOut = plugin.mergeAbiFilters(kts, 'kt');
  assert.deepEqual(abiFiltersOf(ktsOut).sort(), ['arm64-v8a', 'armeabi-v7a', 'x86_64']);
  assert.match(ktsOut, /abiFilters \+= listOf\("armeabi-v7a", "x86_64"\)/);

  assert.throws(() => plugin.mergeAbiFilters('apply plugin: "com.android.application"\n'), /defaultConfig/);
});

test('ios.deploymentTarget: raised below 15.0, a higher one kept, the Podfile default respected', () => {
  const raise = (v: string | undefined, pod: string | null = null) =>
    plugin.raiseDeploymentTarget(v === undefined ? { 'expo.jsEngine': 'hermes' } : { 'ios.deploymentTarget': v }, pod)['ios.deploymentTarget'];
  assert.equal(raise('13.4'), '15.0');
  assert.equal(raise('14.9'), '15.0');
  assert.equal(raise('15.0'), '15.0');
  assert.equal(raise('15'), '15');
  assert.equal(raise('15.1'), '15.1');
  assert.equal(raise('16.4'), '16.4');
  assert.equal(raise('17'), '17');
  assert.equal(raise(undefined, podfile('16.4')), undefined);
  assert.equal(raise(undefined, podfile('15.1')), undefined);
  assert.equal(raise(undefined, podfile('13.4')), '15.0');
  assert.equal(raise(undefined, null), '15.0');
  assert.equal(plugin.compareVersions('15.10', '15.9'), 1);
  assert.equal(plugin.compareVersions('15.0.0', '15'), 0);
});
