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
// usage: node provider.mjs --port N --issuer URL --jwks FILE
//          [--cert FILE --key FILE] [--state FILE] [--redirect-uri URL]...
//          [--resource URL] [--at-alg RS256|ES256] [--at-ttl SECONDS]
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

const configuration = {
  jwks,
  cookies: { keys: ['portcullis-test-only-cookie-key'] },
  clients: [
    {
      // The gateway's web login (authorization code).
      client_id: 'gateway',
      client_secret: 'gateway-test-secret',
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
  ],
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

// No person in the loop: log in state.login and grant what was asked.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
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
    if (req.url === '/test/state') {
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
