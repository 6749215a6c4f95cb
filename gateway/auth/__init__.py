"""
Authentication: who a request comes from.

  - L{gateway.auth.index}: the consumers of one store revision, compiled
    for lookups in dicts (by key digest, user name, JWT issuer and id,
    name and customId); part of each routing snapshot.
  - L{gateway.auth.passwords}: bcrypt verifications off the reactor
    thread, their results cached briefly.
  - L{gateway.auth.tokens}: JWT verification with PyJWT, verified tokens
    cached until they expire.
  - L{gateway.auth.jwks}: the JWKS of OpenID Connect providers, fetched off
    the request path and kept when a provider is down.

The filters that use them are L{gateway.filters.auth}.
"""
