// The Expo config plugin of @tether/react-native (loaded through app.plugin.js): what the
// native build of the package needs from the app, applied at `npx expo prebuild`.
//
//   Android  android.minSdkVersion (android/gradle.properties) at least 24, the API level
//            the Rust library is built for (ubrn.config.yaml `apiLevel`);
//            ndk.abiFilters of the app (android/app/build.gradle, defaultConfig) include
//            arm64-v8a, armeabi-v7a and x86_64, the ABIs the library is built for.
//   iOS      ios.deploymentTarget (ios/Podfile.properties.json) at least 15.0, the
//            deployment target of the Swift package and podspecs.
//
// A higher value the app already has is kept; abiFilters the app lists are kept and ours
// added. Without a value, the template's default is looked up in the project (the
// fallback in android/build.gradle or ios/Podfile) and a default below ours is raised.
//
// CommonJS, so that Expo's loaders of every SDK can require it; app.plugin.js (an ES
// module, since the package is "type": "module") re-exports it.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

function loadConfigPlugins() {
  // `expo/config-plugins` is the app's own copy (what Expo recommends plugins use); a bare
  // @expo/config-plugins is the fallback (the package's tests, apps without `expo`).
  try {
    return require('expo/config-plugins');
  } catch {
    return require('@expo/config-plugins');
  }
}

const MIN_SDK = 24;
const ABIS = ['arm64-v8a', 'armeabi-v7a', 'x86_64'];
const IOS_DEPLOYMENT_TARGET = '15.0';
const MIN_SDK_KEY = 'android.minSdkVersion';
const DEPLOYMENT_TARGET_KEY = 'ios.deploymentTarget';

/** Compares dotted version strings numerically ("15.0" < "15.1" < "16"). */
function compareVersions(a, b) {
  const pa = String(a).trim().split('.').map((p) => Number.parseInt(p, 10) || 0);
  const pb = String(b).trim().split('.').map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] || 0) - (pb[i] || 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/**
 * The minSdkVersion a project uses when gradle.properties does not set one, if its root
 * build.gradle says (`findProperty('android.minSdkVersion') ?: '23'`); null when unknown.
 */
function defaultMinSdkOf(projectBuildGradle) {
  if (!projectBuildGradle) return null;
  const m = /findProperty\(\s*['"]android\.minSdkVersion['"]\s*\)\s*\?:\s*['"]?(\d+)/.exec(projectBuildGradle);
  return m ? Number(m[1]) : null;
}

/**
 * gradle.properties items with android.minSdkVersion at least MIN_SDK. A higher value is
 * kept; when unset, the project's default (see defaultMinSdkOf) is kept if high enough.
 */
function raiseMinSdk(items, projectBuildGradle) {
  const out = items.map((item) => ({ ...item }));
  const existing = out.find((item) => item.type === 'property' && item.key === MIN_SDK_KEY);
  if (existing) {
    const current = Number.parseInt(existing.value, 10);
    if (!(current >= MIN_SDK)) existing.value = String(MIN_SDK);
    return out;
  }
  const fallback = defaultMinSdkOf(projectBuildGradle);
  if (fallback !== null && fallback >= MIN_SDK) return out;
  out.push({ type: 'property', key: MIN_SDK_KEY, value: String(MIN_SDK) });
  return out;
}

/** Index of the `}` closing the block whose `{` is at `open`, or -1. */
function closingBrace(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return i;
  }
  return -1;
}

/** The `name {` ... `}` block in text[from, to): {open, close} or null. */
function findBlock(text, name, from = 0, to = text.length) {
  const re = new RegExp(`(^|[^A-Za-z0-9_])${name}\\s*\\{`, 'g');
  re.lastIndex = from;
  const m = re.exec(text);
  if (!m || m.index >= to) return null;
  const open = m.index + m[0].length - 1;
  const close = closingBrace(text, open);
  return close === -1 || close > to ? null : { open, close };
}

function indentOfLine(text, index) {
  const start = text.lastIndexOf('\n', index) + 1;
  return /^[ \t]*/.exec(text.slice(start))[0];
}

/** The ABIs the abiFilters statements in text name, as literal strings. */
function listedAbis(text) {
  const abis = new Set();
  for (const line of text.split('\n')) {
    if (!/\babiFilters\b/.test(line)) continue;
    for (const m of line.matchAll(/["']([A-Za-z0-9_-]+)["']/g)) abis.add(m[1]);
  }
  return abis;
}

/**
 * The app's build.gradle (Groovy, or Kotlin with language 'kt') with defaultConfig's
 * ndk.abiFilters including ABIS: the app's own filters stay, the missing ones are added
 * (abiFilters adds to a set in both languages). Throws when there is no defaultConfig.
 */
function mergeAbiFilters(buildGradle, language = 'groovy') {
  const android = findBlock(buildGradle, 'android');
  const defaults = android && findBlock(buildGradle, 'defaultConfig', android.open, android.close);
  if (!defaults) throw new Error('no android { defaultConfig { ... } } block');
  const ndk = findBlock(buildGradle, 'ndk', defaults.open, defaults.close);
  const scope = ndk ? buildGradle.slice(ndk.open, ndk.close) : '';
  const have = listedAbis(scope);
  const missing = ABIS.filter((abi) => !have.has(abi));
  if (missing.length === 0) return buildGradle;
  const quoted = missing.map((abi) => `"${abi}"`).join(', ');
  const statement = language === 'kt' ? `abiFilters += listOf(${quoted})` : `abiFilters ${quoted}`;
  if (ndk) {
    const indent = indentOfLine(buildGradle, ndk.open) + '    ';
    const lineStart = buildGradle.lastIndexOf('\n', ndk.close) + 1;
    const beforeClose = buildGradle.slice(lineStart, ndk.close);
    // `}` alone on its line: insert a line before it; `ndk { ... }` on one line: before the `}`.
    if (/^[ \t]*$/.test(beforeClose)) {
      return buildGradle.slice(0, lineStart) + `${indent}${statement}\n` + buildGradle.slice(lineStart);
    }
    return buildGradle.slice(0, ndk.close) + `; ${statement} ` + buildGradle.slice(ndk.close);
  }
  const indent = indentOfLine(buildGradle, defaults.open) + '    ';
  const block = `\n${indent}ndk {\n${indent}    ${statement}\n${indent}}`;
  return buildGradle.slice(0, defaults.open + 1) + block + buildGradle.slice(defaults.open + 1);
}

/**
 * The iOS deployment target a project uses when Podfile.properties.json does not set one,
 * if its Podfile says (`podfile_properties['ios.deploymentTarget'] || '15.1'`); else null.
 */
function defaultDeploymentTargetOf(podfile) {
  if (!podfile) return null;
  const m = /podfile_properties\[\s*['"]ios\.deploymentTarget['"]\s*\]\s*\|\|\s*['"]([\d.]+)['"]/.exec(podfile);
  return m ? m[1] : null;
}

/**
 * Podfile.properties.json with ios.deploymentTarget at least IOS_DEPLOYMENT_TARGET. A
 * higher value is kept; when unset, the Podfile's default is kept if high enough.
 */
function raiseDeploymentTarget(properties, podfile) {
  const out = { ...properties };
  const current = out[DEPLOYMENT_TARGET_KEY];
  if (current !== undefined && current !== '') {
    if (compareVersions(current, IOS_DEPLOYMENT_TARGET) < 0) out[DEPLOYMENT_TARGET_KEY] = IOS_DEPLOYMENT_TARGET;
    return out;
  }
  const fallback = defaultDeploymentTargetOf(podfile);
  if (fallback !== null && compareVersions(fallback, IOS_DEPLOYMENT_TARGET) >= 0) return out;
  out[DEPLOYMENT_TARGET_KEY] = IOS_DEPLOYMENT_TARGET;
  return out;
}

function readIfExists(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function withTether(config) {
  const plugins = loadConfigPlugins();
  config = plugins.withGradleProperties(config, (cfg) => {
    const root = cfg.modRequest.platformProjectRoot;
    const projectGradle = readIfExists(path.join(root, 'build.gradle')) ?? readIfExists(path.join(root, 'build.gradle.kts'));
    cfg.modResults = raiseMinSdk(cfg.modResults, projectGradle);
    return cfg;
  });
  config = plugins.withAppBuildGradle(config, (cfg) => {
    const { language, contents } = cfg.modResults;
    try {
      cfg.modResults.contents = mergeAbiFilters(contents, language);
    } catch (e) {
      plugins.WarningAggregator.addWarningAndroid(
        '@tether/react-native',
        `could not add ndk.abiFilters ${ABIS.join(', ')} to android/app/build.gradle (${e.message}); add them by hand`,
      );
    }
    return cfg;
  });
  config = plugins.withPodfileProperties(config, (cfg) => {
    const podfile = readIfExists(path.join(cfg.modRequest.platformProjectRoot, 'Podfile'));
    cfg.modResults = raiseDeploymentTarget(cfg.modResults, podfile);
    return cfg;
  });
  return config;
}

const pkg = require('../package.json');

module.exports = loadConfigPlugins().createRunOncePlugin(withTether, pkg.name, pkg.version);
Object.assign(module.exports, {
  MIN_SDK,
  ABIS,
  IOS_DEPLOYMENT_TARGET,
  compareVersions,
  raiseMinSdk,
  mergeAbiFilters,
  raiseDeploymentTarget,
});
