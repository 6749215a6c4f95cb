"""
The response cache: an API's C{cache} keeps its answers to C{GET} and
serves them again while fresh, as a shared cache of RFC 9111 does.

  - L{gateway.cache.control}: the rules of RFC 9111 and RFC 9211 over
    header values (what is stored, for how long, ages, C{Cache-Status});
  - L{gateway.cache.entry}: a stored answer, and its bytes in Redis;
  - L{gateway.cache.policy}: an API's settings ready for requests (keys,
    variants);
  - L{gateway.cache.memory}: the store of one proxy process, bounded in
    bytes (LRU);
  - L{gateway.cache.redisstore}: the store a fleet shares in Redis, with
    purges by generation;
  - L{gateway.cache.engine}: the cache of one process and its part in a
    request (look-up, collapsing, storing, C{Cache-Status}, counts);
  - L{gateway.cache.purges}: purges reaching the memory of every proxy
    process of a fleet.
"""
