// A real OpenID Connect provider (panva's oidc-provider) on loopback, for tests only.
//
//   node tests/oidc/provider.js CONFIG.json [PORT]     (PORT also from OIDC_PORT; 0 = any free port)
//
// Prints `LISTENING http://127.0.0.1:PORT` as the first stdout line (everything else goes to
// stderr); the issuer is that URL. Exits when its stdin closes, or on SIGTERM/SIGINT.
//
// CONFIG.json:
//   { "clients":  [{ "client_id", "client_secret", "redirect_uris": [...],
//                    "token_endpoint_auth_method": "client_secret_basic" | "client_secret_post" }],
//     "accounts": { "ACCOUNT_ID": { "email", "name", "groups": [...], ... } } }
//
// Sign-in is the built-in devInteractions: GET /auth → 303 to /interaction/UID (login form)
// → POST prompt=login&login=ACCOUNT_ID → /auth/UID → /interaction/UID2 (consent form)
// → POST prompt=consent → /auth/UID2 → 303 to redirect_uri?code=...&state=...&iss=...
// A login with an account id not in the config gets 403 `unknown account`.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

// stdout carries the LISTENING line alone: the provider's notices (console.info) go to stderr.
console.log = console.error;
console.info = console.error;

const [configPath, portArg] = process.argv.slice(2);
if (!configPath) {
  console.error('usage: node provider.js CONFIG.json [PORT]');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const accounts = config.accounts ?? {};
const port = Number(portArg ?? process.env.OIDC_PORT ?? 0);

// A fresh signing key per run; no keys are kept anywhere.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

function configuration() {
  return {
    clients: config.clients.map((client) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      ...client,
    })),
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // Scope → claims. Every scope named here is also advertised and accepted.
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    responseTypes: ['code'],
    // Put the scope-requested claims (email, name, groups) in the ID token too, not only in
    // the userinfo response (the default for the code flow, per OIDC Core 5.4).
    conformIdTokenClaims: false,
    pkce: { methods: ['S256'], required: () => true },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, id) {
      if (!Object.hasOwn(accounts, id)) return undefined;
      return {
        accountId: id,
        async claims() {
          return { ...accounts[id], sub: id };
        },
      };
    },
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      IdToken: 600,
      Interaction: 600,
      Session: 600,
      Grant: 600,
    },
  };
}

// The dev login form takes any login; an account not in the config is refused there (403)
// rather than failing later in the provider. The body read here is handed on as req.body,
// which oidc-provider uses when the request stream was already consumed.
function refuseUnknownLogin(req, res, handle) {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > 65536) req.destroy();
    else chunks.push(chunk);
  });
  req.on('end', () => {
    req.body = Buffer.concat(chunks);
    const form = new URLSearchParams(req.body.toString('utf8'));
    if (form.get('prompt') === 'login' && !Object.hasOwn(accounts, form.get('login') ?? '')) {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end('unknown account\n');
      return;
    }
    handle(req, res);
  });
}

const server = createServer();

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration());
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  const handle = provider.callback();
  server.on('request', (req, res) => (
    req.method === 'POST' && req.url.startsWith('/interaction/') ? refuseUnknownLogin(req, res, handle) : handle(req, res)
  ));
  process.stdout.write(`LISTENING ${issuer}\n`);
});
