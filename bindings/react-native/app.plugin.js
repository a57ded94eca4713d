// The Expo config plugin: `"plugins": ["@tether/react-native"]` in app.json. The plugin is
// CommonJS (plugin/withTether.cjs); this file is an ES module because the package is
// "type": "module" (a CommonJS app.plugin.js would fail to load here). Expo loads it with
// require(), which takes ES modules from Node 20.19 (what Expo SDK 54 and later need).
import withTether from './plugin/withTether.cjs';

export default withTether;
