"""
The etcd v3 store, in modules whose dependencies point one way:

  - L{gateway.store.etcd.client}: L{EtcdClient}, a small client of etcd's
    JSON gateway (requests, transactions, leases, failover, back-off), and
    its values and errors;
  - L{gateway.store.etcd.watch}: L{EtcdWatch}, a watch that survives
    dropped streams and compaction, on the client's public surface;
  - L{gateway.store.etcd.undo}: the undo log that lets a commit span
    several transactions, and the committed view of a read (no I/O);
  - L{gateway.store.etcd.store}: L{EtcdStore}, the
    L{gateway.interfaces.IStore} (its key layout, commits of any size,
    readers that never see half a commit), on the client, the watch and
    the undo log;
  - L{gateway.store.etcd.registry}: L{ProxyRegistry}, the live proxies'
    records, on the client.
"""

from gateway.store.etcd.client import (
    EtcdClient,
    EtcdError,
    EtcdIndeterminate,
    EtcdUnavailable,
    Event,
    KeyValue,
    TxnResult,
    etcdBackoff,
)
from gateway.store.etcd.registry import ProxyRegistry, advertisedAddress, listProxies
from gateway.store.etcd.store import EtcdStore, etcdStoreFromURL, parseEtcdURL
from gateway.store.etcd.watch import EtcdWatch, startWatch

__all__ = [
    "EtcdClient",
    "EtcdError",
    "EtcdIndeterminate",
    "EtcdUnavailable",
    "EtcdStore",
    "EtcdWatch",
    "Event",
    "KeyValue",
    "ProxyRegistry",
    "TxnResult",
    "advertisedAddress",
    "etcdBackoff",
    "etcdStoreFromURL",
    "listProxies",
    "parseEtcdURL",
    "startWatch",
]
