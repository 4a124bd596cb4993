"""A small IAM-like OIDC provider for the local site and the tests (not for production).

It mimics INDIGO IAM where our trust network depends on it: discovery, a JWKS with
rotating `kid`s, client credentials, device code, refresh tokens (rotated), and
RFC 8693 token exchange with IAM's semantics, issuing WLCG-profile JWTs.
"""
