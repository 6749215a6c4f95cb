"""
The etcd v3 store: a client for etcd's JSON gateway, the watch, the
store, and the registry of live proxies.
"""
