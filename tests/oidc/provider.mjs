// A real OpenID provider for baton's tests: oidc-provider (the certified Node.js
// implementation) over HTTPS on a loopback port, with its development login and consent pages.
// Started and stopped by the tests (baton-test's `OidcServer`); never for production.
//
// Environment:
//   PORT         the loopback port to listen on (127.0.0.1)
//   TLS_CERT     PEM certificate for 127.0.0.1; TLS_KEY its PEM key
//   CLIENTS      JSON array of oidc-provider client metadata
//   ID_TOKEN_TTL seconds an ID token lives (default 3600)
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
// Said before the key is made and the server listens: a slow start shows where it is.
process.stdout.write(`starting ${process.pid}\n`);
const issuer = `https://127.0.0.1:${port}`;
const accounts = new Map();

// A signing key of this start's own: a restarted provider has rotated its keys.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: JSON.parse(process.env.CLIENTS),
  jwks: { keys: [signing] },
  // Authorization code with PKCE (S256) for every client, secret or not.
  pkce: { required: () => true },
  cookies: { keys: ['baton-test-only'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  ttl: { IdToken: Number(process.env.ID_TOKEN_TTL || 3600) },
  findAccount: async (_ctx, id) => {
    if (!accounts.has(id)) accounts.set(id, { sub: id });
    return {
      accountId: id,
      claims: async () => ({
        sub: id,
        email: `${id}@example.test`,
        email_verified: true,
        name: id,
      }),
    };
  },
  // The requested scopes' claims in the ID token too, as Google and Kakao send them.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
});

const server = https.createServer(
  { cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) },
  provider.callback(),
);
// A server error (at start: a port it cannot take) is said at once and ends the process (the
// tests try again), not left to an uncaught exception.
server.on('error', (err) => {
  process.stderr.write(`server error on 127.0.0.1:${port}: ${err.code || err.message}\n`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
