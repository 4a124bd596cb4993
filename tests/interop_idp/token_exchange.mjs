// The RFC 8693 token-exchange grant for oidc-provider: the one piece of the interop IdP that this
// project wrote. oidc-provider has no token-exchange grant of its own; it lets a deployment
// register one (provider.registerGrantType), and this is one, kept short on purpose. Everything
// else the tests talk to is the IdP's own: discovery, JWKS, signing, client authentication, client
// credentials, resource indicators (RFC 8707) and the JWT access token format (RFC 9068).
//
// What it does: the subject token must be an access token this provider signed (checked with its
// own JWKS, by jose, oidc-provider's JOSE library); the target is `resource`, else `audience`,
// resolved by the provider's resource-indicator configuration; the scope granted is the one asked
// (or the subject's) limited to the subject's and the resource's scopes, so nothing is escalated;
// the token is minted by the provider's AccessToken model: sub = the subject's, act.sub = the
// exchanging client (RFC 8693 §4.1), aud = the resource.
import { createLocalJWKSet, jwtVerify } from 'jose';
import { errors } from 'oidc-provider';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
export const PARAMETERS = ['subject_token', 'subject_token_type', 'scope', 'resource', 'audience'];
const actors = new WeakMap(); // token -> its `act` claim, read back by exchangeClaims

// The provider's `extraTokenClaims` hook (it computes a token's extra claims as it is saved).
export function exchangeClaims(ctx, token) {
  return actors.has(token) ? { act: actors.get(token) } : undefined;
}

async function verifiedSubject(token, keys, issuer) {
  try {
    return (await jwtVerify(token, keys, { issuer, typ: 'at+jwt' })).payload;
  } catch (error) {
    throw new errors.InvalidGrant(`subject_token: ${error.message}`);
  }
}

export function tokenExchange(publicJwks, resourceServerInfo) {
  const keys = createLocalJWKSet(publicJwks);
  return async function tokenExchangeHandler(ctx) {
    const { provider, params, client } = ctx.oidc;
    if (params.subject_token_type !== ACCESS_TOKEN) {
      throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN}`);
    }
    const subject = await verifiedSubject(params.subject_token, keys, provider.issuer);
    const target = params.resource ?? params.audience;
    if (!target) throw new errors.InvalidTarget('resource or audience is required');
    const server = new provider.ResourceServer(target, await resourceServerInfo(ctx, target, client));
    const held = new Set(String(subject.scope ?? '').split(' '));
    const asked = String(params.scope ?? subject.scope ?? '').split(' ');
    const scope = asked.filter((s) => held.has(s) && server.scopes.has(s)).join(' ') || undefined;
    const act = { sub: client.clientId, ...(subject.act ? { act: subject.act } : {}) };
    const token = new provider.AccessToken({ accountId: subject.sub, client, scope, gty: 'token_exchange' });
    token.resourceServer = server;
    actors.set(token, act);
    ctx.body = {
      access_token: await token.save(),
      issued_token_type: ACCESS_TOKEN,
      token_type: 'Bearer',
      expires_in: token.expiration,
      scope,
    };
  };
}
