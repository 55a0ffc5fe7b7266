// What the headless-browser drivers share: playwright-core from
// web/node_modules, and `--key value` options with the required ones
// checked (exit 2 on bad usage).

import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', '..', 'web', 'package.json'));

export const { chromium } = require('playwright-core');

export function options(script, required) {
  const opts = { chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (argv[i + 1] === undefined) {
      console.error(`${script}: ${argv[i]} needs a value`);
      process.exit(2);
    }
    opts[key] = argv[i + 1];
  }
  for (const need of required) {
    if (!opts[need]) {
      console.error(`${script}: --${need} is required`);
      process.exit(2);
    }
  }
  return opts;
}
