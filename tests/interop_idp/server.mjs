// An independent OpenID Provider for interlink-provider's interop tests: panva's oidc-provider
// (OpenID Certified), configured, not changed. Only the RFC 8693 grant is ours (token_exchange.mjs).
//
//   node server.mjs CONFIG.json
//
// CONFIG: {"host": "127.0.0.1", "port": 0, "cert": PEM path, "key": PEM path,
//          "clients": [oidc-provider client metadata ...],
//          "resources": {"https://site.test": "scopes its JWT access tokens may carry", ...}}
// It serves HTTPS on host:port (0: a free port), with issuer https://host:port, and prints
// "issuer <issuer>" on stdout once it answers. Access tokens asked for a configured resource
// (RFC 8707) are RFC 9068 JWTs with aud = that resource; any other resource is invalid_target.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

import {
  PARAMETERS, TOKEN_EXCHANGE, exchangeClaims, tokenExchange,
} from './token_exchange.mjs';

const TTL = 600;
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomBytes(8).toString('hex');
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
  const pub = { kty: jwk.kty, n: jwk.n, e: jwk.e, kid, use: 'sig', alg: 'RS256' };
  return { privateJwks: { keys: [jwk] }, publicJwks: { keys: [pub] } };
}

async function resourceServerInfo(ctx, resource) {
  const scope = config.resources?.[resource];
  if (scope === undefined) throw new errors.InvalidTarget(`unknown resource ${resource}`);
  return {
    scope, audience: resource, accessTokenTTL: TTL, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } },
  };
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port ?? 0, config.host ?? '127.0.0.1', () => resolve(server.address().port));
  });
}

const server = createServer({ cert: readFileSync(config.cert), key: readFileSync(config.key) });
const port = await listen(server);
const issuer = `https://${config.host ?? '127.0.0.1'}:${port}`;
const { privateJwks, publicJwks } = signingKeys();
const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: privateJwks,
  extraTokenClaims: exchangeClaims,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo: resourceServerInfo,
    },
  },
  ttl: {
    AccessToken: TTL, ClientCredentials: TTL, IdToken: TTL, Grant: TTL, Session: TTL, Interaction: TTL,
  },
});
provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange(publicJwks, resourceServerInfo), PARAMETERS);
server.on('request', provider.callback());
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
console.log(`issuer ${issuer}`);
