#!/usr/bin/env node
// Single sign-on through a real OpenID Connect provider (node
// oidc-provider, the certified implementation) with headless Chromium.
//
//   node tests/viewer/oidc.mjs --base http://127.0.0.1:8042 --port 9090 \
//        --secret S --accounts '{"anna":{"groups":["radiology"]}}' \
//        --login anna --login bob [--chromium PATH]
//
// Serves the provider at http://127.0.0.1:PORT with one client, `tessera`,
// whose redirect URI is BASE/login/oidc/callback, and accounts whose
// claims are given by --accounts. For each --login: opens BASE/login in a
// fresh browser context, follows the single sign-on button, signs in at
// the provider's login page, grants consent, and records where it ends:
// {"session": <GET /api/v1/session>} or {"error": <the login page's
// message>, "status": <HTTP status>}. Prints {login: result} as JSON.
// Exit code 0 when every login ran (whatever it ended in), 1 on failure,
// 2 on bad usage.

import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.resolve(here, '..', '..', 'web');
const require = createRequire(path.join(web, 'package.json'));

const opts = { logins: [], chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [key, value] = [argv[i], argv[i + 1]];
  if (value === undefined) usage(`${key} needs a value`);
  if (key === '--base') opts.base = value.replace(/\/$/, '');
  else if (key === '--port') opts.port = Number(value);
  else if (key === '--secret') opts.secret = value;
  else if (key === '--accounts') opts.accounts = JSON.parse(value);
  else if (key === '--login') opts.logins.push(value);
  else if (key === '--chromium') opts.chromium = value;
  else usage(`unknown option ${key}`);
}
if (!opts.base || !opts.port || !opts.secret || !opts.accounts || opts.logins.length === 0) {
  usage('--base, --port, --secret, --accounts and --login are required');
}

function usage(msg) {
  console.error(`oidc.mjs: ${msg}`);
  process.exit(2);
}

const { default: Provider } = await import(
  require.resolve('oidc-provider')
).catch((e) => usage(`oidc-provider is missing (scripts/install-viewer): ${e.message}`));
const { chromium } = require('playwright-core');

const issuer = `http://127.0.0.1:${opts.port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'tessera',
      client_secret: opts.secret,
      redirect_uris: [`${opts.base}/login/oidc/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'family_name', 'given_name'],
    email: ['email'],
    groups: ['groups'],
  },
  pkce: { required: () => true },
  cookies: { keys: ['tessera-test-cookie-key'] },
  async findAccount(ctx, id) {
    const account = opts.accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: `sub-${id}`, preferred_username: id, ...account };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('provider error:', err));
const server = await new Promise((resolve) => {
  const s = provider.listen(opts.port, '127.0.0.1', () => resolve(s));
});

const results = {};
const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: ['--no-sandbox'],
});
let failed = false;
try {
  for (const login of opts.logins) {
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      await page.goto(`${opts.base}/login?next=/api/v1/session`);
      await page.click('a.sso');
      await page.waitForSelector('input[name=login]', { timeout: 20000 });
      await page.fill('input[name=login]', login);
      await page.fill('input[name=password]', 'anything');
      await page.click('button[type=submit]');
      // Consent, when the provider asks for it; then back to Tessera.
      await page.waitForURL((url) => url.href.startsWith(opts.base) || url.pathname.includes('/interaction/'), {
        timeout: 20000,
      });
      if (!page.url().startsWith(opts.base)) {
        await page.click('button[type=submit]');
      }
      await page.waitForURL((url) => url.href.startsWith(opts.base), { timeout: 20000 });
      await page.waitForLoadState('load');
      if ((await page.locator('.error').count()) === 0) {
        await page.waitForURL((url) => url.pathname === '/api/v1/session', { timeout: 20000 });
      }
      const url = new URL(page.url());
      if (url.pathname === '/api/v1/session') {
        results[login] = { session: JSON.parse(await page.locator('body').innerText()) };
      } else {
        const error = await page.locator('.error').first().innerText().catch(() => '');
        const rsp = await page.request.get(`${opts.base}/api/v1/session`);
        results[login] = { error, page: url.pathname, session_status: rsp.status() };
      }
    } catch (e) {
      failed = true;
      results[login] = { failure: String(e), url: page.url(), body: await page.content().catch(() => '') };
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(results));
process.exit(failed ? 1 : 0);
