// A real OpenID Connect provider (npm oidc-provider) for the integration
// tests: TEST-ONLY.  The test starts it on a loopback port with the keys it
// wrote (a private JWKS file), and drives it as an IdP: discovery, JWKS,
// the authorization-code flow, the device flow and client_credentials, with
// JWT access tokens (resource indicators).  What no real IdP has, and this
// one has because it is a test fixture:
//   - /interaction/:uid logs in the account named by `login` in the test
//     state and grants what the client asked, so no person is in the loop;
//   - GET/POST /test/state reads or replaces the accounts table (sub ->
//     {email, name, groups, disabled}), the current login and the extra
//     claims of client_credentials tokens (client_id -> claims), so a test
//     can remove a user from a group or disable them; `deny: true` makes
//     the interaction answer error=access_denied instead of a login.
//
//
// The quick start (contrib/quickstart.sh) runs it as a demo IdP for a
// person with --demo-password FILE: then /interaction asks for a user
// name and that password in a form (a person's browser, no test in the
// loop), /test/state is not served (nobody on the machine can rewrite the
// accounts), the client_credentials client "ci" (a fixed test secret) is
// left out, the cookie keys are random, and --client-secret FILE
// replaces the gateway client's fixed test secret.
//
// usage: node provider.mjs --port N --issuer URL --jwks FILE
//          [--cert FILE --key FILE] [--state FILE] [--redirect-uri URL]...
//          [--resource URL] [--at-alg RS256|ES256] [--at-ttl SECONDS]
//          [--demo-password FILE] [--client-secret FILE]
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    jwks: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    state: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    resource: { type: 'string', default: 'https://portcullis.test' },
    'at-alg': { type: 'string', default: 'RS256' },
    'at-ttl': { type: 'string', default: '600' },
    'demo-password': { type: 'string' },
    'client-secret': { type: 'string' },
  },
});
if (!opt.port || !opt.issuer || !opt.jwks) {
  console.error('usage: provider.mjs --port N --issuer URL --jwks FILE ...');
  process.exit(2);
}

// The mutable test state; a file seeds it so a restart keeps it.
const state = {
  login: 'alice',
  accounts: {
    alice: { email: 'alice@example.test', name: 'Alice', groups: ['dev'] },
  },
  clientClaims: {},
};
if (opt.state) Object.assign(state, JSON.parse(fs.readFileSync(opt.state)));

const jwks = JSON.parse(fs.readFileSync(opt.jwks));
const redirectUris = opt['redirect-uri'] ?? ['http://127.0.0.1/callback'];
const resource = opt.resource;
// Demo mode (the quick start): the password a person signs in with.
const readSecret = (f) => fs.readFileSync(f, 'utf8').trim();
const demoPassword = opt['demo-password']
  ? readSecret(opt['demo-password']) : null;
if (demoPassword !== null && demoPassword.length < 8) {
  console.error('provider.mjs: --demo-password: at least 8 characters');
  process.exit(2);
}

const configuration = {
  jwks,
  cookies: { keys: [demoPassword !== null
    ? crypto.randomBytes(32).toString('base64url')
    : 'portcullis-test-only-cookie-key'] },
  clients: [
    {
      // The gateway's web login (authorization code).
      client_id: 'gateway',
      client_secret: opt['client-secret']
        ? readSecret(opt['client-secret']) : 'gateway-test-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: redirectUris,
    },
    {
      // A CLI login (device grant), public.
      client_id: 'cli',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code',
        'refresh_token'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // A CI job or robot: client_credentials.
      client_id: 'ci',
      client_secret: 'ci-test-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'pull push',
    },
    // Demo mode: no client with a secret everybody knows minting tokens.
  ].filter((c) => demoPassword === null || c.client_id !== 'ci'),
  claims: {
    openid: ['sub'],
    email: ['email'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups',
    'pull', 'push'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => ({
        scope: 'pull push',
        audience: indicator,
        accessTokenTTL: Number(opt['at-ttl']),
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: opt['at-alg'] } },
      }),
    },
  },
  // The groups (and for client_credentials the test's claims) go into
  // JWT access tokens too, as CI issuers put their claims there.
  extraTokenClaims: (ctx, token) => {
    if (token.kind === 'ClientCredentials')
      return state.clientClaims[token.clientId] ?? {};
    const a = state.accounts[token.accountId];
    return a ? { groups: a.groups ?? [] } : {};
  },
  findAccount: (ctx, sub) => {
    const a = state.accounts[sub];
    if (!a || a.disabled) return undefined;
    return {
      accountId: sub,
      claims: () => ({ sub, email: a.email, name: a.name,
        groups: a.groups ?? [] }),
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // The id_token carries the scopes' claims (name, email, groups) even
  // when an access token is issued too, as many IdPs do; the gateway's
  // browser sign-in reads them from the id_token.
  conformIdTokenClaims: false,
  pkce: { required: () => false },
  ttl: { AccessToken: 600, ClientCredentials: Number(opt['at-ttl']),
    IdToken: 600,
    DeviceCode: 600, RefreshToken: 86400 },
};

const provider = new Provider(opt.issuer, configuration);

function body(req) {
  return new Promise((resolve, reject) => {
    let n = 0;
    const parts = [];
    req.on('data', (c) => {
      n += c.length;
      if (n > 1 << 20) reject(new Error('body too large'));
      else parts.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString()));
    req.on('error', reject);
  });
}

const esc = (v) => String(v).replace(/[&<>"']/g,
  (c) => `&#${c.charCodeAt(0)};`);

// Demo mode: the sign-in form a person fills in.
function loginForm(res, uid, user, failed) {
  res.writeHead(failed ? 401 : 200, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    // No form-action: Chromium applies it to the redirects that follow
    // the post too, and those end at the gateway's callback.
    'content-security-policy': "default-src 'none'; " +
      "style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  res.end(`<!doctype html><html><head><meta charset="utf-8">
<title>Demo identity provider</title><style>
body{font-family:sans-serif;max-width:26em;margin:4em auto;color:#1d2330}
input{display:block;margin:.3em 0 1em;padding:.4em;width:100%}
.err{color:#a00}</style></head><body>
<h1>Demo identity provider</h1>
<p>The portcullis quick start's demo IdP. Sign in with the user and
password the quick start printed.</p>
${failed ? '<p class="err" id="error">Wrong user name or password.</p>' : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>User name<input name="username" autocomplete="username"
 value="${esc(user ?? '')}"></label>
<label>Password<input name="password" type="password"
 autocomplete="current-password"></label>
<input type="submit" value="Sign in"></form></body></html>`);
}

// Constant-time: the hashes have one length whatever was typed.
function passwordOk(p) {
  const h = (v) => crypto.createHash('sha256').update(String(v)).digest();
  return crypto.timingSafeEqual(h(p), h(demoPassword));
}

// Demo mode: POST /interaction/:uid/login with username and password.
async function demoLogin(req, res, details) {
  const f = new URLSearchParams(await body(req));
  const user = f.get('username') ?? '';
  const a = Object.hasOwn(state.accounts, user) ? state.accounts[user]
    : null;
  const ok = passwordOk(f.get('password') ?? '');
  if (!ok || a === null || a.disabled) {
    loginForm(res, details.uid, user, true);
    return;
  }
  await provider.interactionFinished(req, res,
    { login: { accountId: user } }, { mergeWithLastSubmission: false });
}

// No person in the loop: log in state.login and grant what was asked
// (demo mode: the person signs in with the form, then the same grant).
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (demoPassword !== null && prompt.name === 'login') {
    if (req.method === 'POST' && req.url.endsWith('/login'))
      await demoLogin(req, res, details);
    else
      loginForm(res, details.uid, null, false);
    return;
  }
  if (state.deny) {
    // The person says no (or the IdP refuses them): error=access_denied
    // goes back to the client's redirect_uri.
    await provider.interactionFinished(req, res,
      { error: 'access_denied', error_description: 'the test user said no' },
      { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res,
      { login: { accountId: state.login } },
      { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId,
      clientId: params.client_id });
  const d = prompt.details;
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes)
    for (const [ind, sc] of Object.entries(d.missingResourceScopes))
      grant.addResourceScope(ind, sc.join(' '));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } },
    { mergeWithLastSubmission: true });
}

const callback = provider.callback();

async function handle(req, res) {
  try {
    if (req.url.startsWith('/interaction/')) {
      await interaction(req, res);
      return;
    }
    if (req.url === '/test/state' && demoPassword === null) {
      if (req.method === 'POST')
        Object.assign(state, JSON.parse(await body(req)));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(state));
      return;
    }
    callback(req, res);
  } catch (e) {
    console.error('provider.mjs:', e);
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(e.message));
  }
}

const server = opt.cert
  ? https.createServer({ cert: fs.readFileSync(opt.cert),
    key: fs.readFileSync(opt.key) }, handle)
  : http.createServer(handle);
server.listen(Number(opt.port), '127.0.0.1', () => {
  console.log(`provider.mjs listening issuer=${opt.issuer} kids=` +
    jwks.keys.map((k) => k.kid).join(','));
});
for (const sig of ['SIGTERM', 'SIGINT'])
  process.on(sig, () => { server.close(); process.exit(0); });
