"""
Service discovery through the DNS.

A server whose C{addr} names a host has one backend per address of that
host, and a cluster with C{discovery} has the servers of an SRV name's
records; the names are looked up off the request path and again on their
TTL (L{gateway.discovery.service.DNSDiscovery}, with Twisted Names:
L{gateway.discovery.lookup}), and the snapshot is rebuilt from the last
store state and what was found (L{gateway.discovery.records.expand}).
"""
