// The browser sign-in driven by headless Chromium (Debian's chromium,
// through npm playwright-core): TEST-ONLY, run by tests/integration/
// test_sso.py.  Opens the gateway's landing page, signs in through the
// real oidc-provider (its interaction handler logs the test user in),
// reads who it is, its groups and the allowed repository patterns,
// creates a secret (shown once) and saves a screenshot of the landing
// page.  Prints one JSON object on stdout.
//
// With --user and --password it signs in at the provider's form, as a
// person does at the quick start's demo IdP (provider.mjs
// --demo-password), and saves a screenshot of that form as well
// (FILE with -idp before the extension).
//
// usage: node signin.mjs --gateway URL --screenshot FILE
//          [--chromium /usr/bin/chromium] [--secret-name NAME]
//          [--user NAME --password-file FILE]
import fs from 'node:fs';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    gateway: { type: 'string' },
    screenshot: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    'secret-name': { type: 'string', default: 'browser' },
    user: { type: 'string' },
    'password-file': { type: 'string' },
  },
});
if (!opt.gateway || !opt.screenshot) {
  console.error('usage: signin.mjs --gateway URL --screenshot FILE');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: opt.chromium,
  args: ['--no-proxy-server'],
});
try {
  // The test provider's certificate comes from a throw-away CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  const violations = [];
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
  });
  await page.goto(opt.gateway + '/');
  const before = await page.textContent('body');
  await page.click('a[href="/login"]');
  if (opt.user) {
    // The demo IdP's sign-in form (a wrong password first: refused).
    const pw = fs.readFileSync(opt['password-file'], 'utf8').trim();
    await page.waitForSelector('input[name="password"]');
    await page.fill('input[name="username"]', opt.user);
    await page.fill('input[name="password"]', pw + '-wrong');
    await page.click('input[type="submit"]');
    await page.waitForSelector('#error');
    await page.screenshot({ path: opt.screenshot.replace(/(\.png)?$/,
      '-idp.png') });
    await page.fill('input[name="username"]', opt.user);
    await page.fill('input[name="password"]', pw);
    await page.click('input[type="submit"]');
  }
  await page.waitForURL(opt.gateway + '/', { timeout: 30000 });
  await page.waitForSelector('#subject');
  const text = async (sel) => (await page.textContent(sel)).trim();
  const cells = async (sel) => page.$$eval(sel + ' tr td:first-child',
    (tds) => tds.map((td) => td.textContent.trim()));
  const who = {
    signedOutText: before,
    subject: await text('#subject'),
    name: await text('#name'),
    groups: await page.$$eval('#groups .tag',
      (s) => s.map((e) => e.textContent)),
    pull: await cells('#pull'),
    push: await cells('#push'),
    cookies: (await context.cookies()).map((c) => ({
      name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite,
      secure: c.secure })),
  };
  await page.fill('input[name="name"]', opt['secret-name']);
  await page.click('#create-secret input[type="submit"]');
  await page.waitForSelector('#secret-value');
  who.secret = await text('#secret-value');
  who.loginLines = await text('#login-lines');
  // The stylesheet applied: the header is dark (style-src 'self').
  who.headerColor = await page.$eval('header',
    (e) => getComputedStyle(e).backgroundColor);
  // The landing page as it is from now on (the secret is not shown
  // again), with the new secret in the list.
  await page.goto(opt.gateway + '/');
  who.listed = await page.$$eval('#secrets tr td:first-child',
    (tds) => tds.map((td) => td.textContent.trim()));
  who.secretShownAgain = (await page.content()).includes(who.secret);
  await page.screenshot({ path: opt.screenshot, fullPage: true });
  who.cspViolations = violations;
  process.stdout.write(JSON.stringify(who) + '\n');
} finally {
  await browser.close();
}
