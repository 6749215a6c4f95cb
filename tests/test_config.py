"""
Tests for L{gateway.model.config}: loading and checking the config file.
"""

from __future__ import annotations

import os
import textwrap

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.model.config import (
    DEFAULT_STORE,
    AdminConfig,
    ConfigError,
    GatewayConfig,
    ProxyConfig,
    loadConfig,
    parseConfig,
)
from gateway.model.resources import API, Cluster, FilterSpec, Routing, Server

GOOD = """\
proxy:
  listen: tcp:8080:interface=127.0.0.1
  filters: [request-id, {name: access-log, config: {format: json}}]
  trustedProxies: [10.0.0.0/8, "::1/128"]
  accessLog: false
admin:
  listen: tcp:9090:interface=127.0.0.1
  token: change-me
store: etcd://127.0.0.1:2379/gateway
servers:
  - {name: s1, addr: "127.0.0.1:9001", healthCheck: {path: /health, interval: 2}}
  - {name: s2, addr: "127.0.0.1:9002", weight: 3}
clusters:
  - {name: users, servers: [s1, s2], loadBalance: weighted-round-robin}
  - {name: canary, servers: [s2]}
apis:
  - name: user
    urlPattern: /api/users/{id}
    method: get
    nodes: [{cluster: users, urlRewrite: "/users/{id}"}]
routings:
  - name: to-canary
    api: user
    cluster: canary
    conditions: [{source: header, name: X-Canary, op: eq, value: "yes"}]
"""

PROXY = {"listen": "tcp:8080:interface=127.0.0.1"}
ADMIN = {"listen": "tcp:9090:interface=127.0.0.1"}


class LoadConfigTests(SynchronousTestCase):
    """
    Tests for L{loadConfig}: reading the file.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def assertError(self, text: str, key: str, *fragments: str) -> ConfigError:
        path = self.write(text)
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(e.key, key, str(e))
        for fragment in fragments:
            self.assertIn(fragment, str(e))
        self.assertTrue(str(e).startswith(path + ": "), str(e))
        return e

    def test_goodConfig(self) -> None:
        """
        A complete config loads into a L{GatewayConfig} with every section
        parsed: endpoints, filters by name or with config, trusted proxies,
        the token, the store URL and the seed resources as model objects.
        """
        path = self.write(GOOD)
        config = loadConfig(path)
        self.assertIsInstance(config, GatewayConfig)
        self.assertEqual(config.path, path)
        self.assertEqual(
            config.proxy,
            ProxyConfig(
                listen="tcp:8080:interface=127.0.0.1",
                filters=(
                    FilterSpec(name="request-id"),
                    FilterSpec(name="access-log", config={"format": "json"}),
                ),
                trustedProxies=("10.0.0.0/8", "::1/128"),
                accessLog=False,
            ),
        )
        self.assertEqual(
            config.admin, AdminConfig(listen="tcp:9090:interface=127.0.0.1", token="change-me")
        )
        self.assertEqual(config.store, "etcd://127.0.0.1:2379/gateway")
        self.assertEqual([s.name for s in config.seed["servers"]], ["s1", "s2"])
        self.assertIsInstance(config.seed["servers"][0], Server)
        self.assertEqual(config.seed["servers"][0].healthCheck.interval, 2)
        self.assertEqual(config.seed["servers"][1].weight, 3)
        self.assertIsInstance(config.seed["clusters"][0], Cluster)
        self.assertEqual(config.seed["clusters"][0].servers, ("s1", "s2"))
        self.assertIsInstance(config.seed["apis"][0], API)
        self.assertEqual(config.seed["apis"][0].method, "GET")
        self.assertIsInstance(config.seed["routings"][0], Routing)
        self.assertEqual(config.seed["routings"][0].conditions[0].value, "yes")

    def test_defaults(self) -> None:
        """
        A config with only an admin section has no proxy, the default file
        store, no token and no seed resources.
        """
        config = loadConfig(self.write("admin:\n  listen: tcp:9090:interface=127.0.0.1\n"))
        self.assertIsNone(config.proxy)
        self.assertEqual(
            config.admin, AdminConfig(listen="tcp:9090:interface=127.0.0.1", token=None)
        )
        self.assertEqual(config.store, DEFAULT_STORE)
        self.assertEqual(
            dict(config.seed),
            {
                "certificates": (),
                "servers": (),
                "clusters": (),
                "consumers": (),
                "apis": (),
                "routings": (),
            },
        )

    def test_proxyDefaults(self) -> None:
        """
        A proxy section with only C{listen} has no global filters, trusts
        no proxy and keeps the access log on.
        """
        config = loadConfig(self.write("proxy:\n  listen: tcp:8080\nstore: 'memory:'\n"))
        self.assertIsNone(config.admin)
        self.assertEqual(config.proxy, ProxyConfig(listen="tcp:8080"))
        self.assertEqual(config.proxy.filters, ())
        self.assertEqual(config.proxy.trustedProxies, ())
        self.assertTrue(config.proxy.accessLog)
        self.assertEqual(config.proxy.upstreamKeepalive, 512)
        self.assertIsNone(config.proxy.workers)
        self.assertEqual(config.store, "memory:")

    def test_missingFile(self) -> None:
        """
        A file that does not exist is a L{ConfigError} for the whole file
        that says so.
        """
        path = self.mktemp()
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(e.key, "")
        self.assertEqual(str(e), f"{path}: cannot read the config file: No such file or directory")

    def test_unreadable(self) -> None:
        """
        A path that cannot be read as a file (here a directory) is a
        L{ConfigError}.
        """
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(e.key, "")
        self.assertIn("cannot read the config file", str(e))

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 text is a L{ConfigError}.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"proxy:\n  listen: \xff\xfe\n")
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn("cannot read the config file", str(e))

    def test_badYAML(self) -> None:
        """
        YAML that does not parse is a L{ConfigError} giving the line of the
        problem.
        """
        self.assertError(
            """\
            proxy:
              listen: tcp:8080
               filters: []
            """,
            "",
            "invalid YAML at line 3",
        )

    def test_duplicateKey(self) -> None:
        """
        A key given twice in one mapping is refused, with its line, instead
        of YAML's silent "last one wins".
        """
        self.assertError(
            """\
            proxy:
              listen: tcp:8080
            proxy:
              listen: tcp:8081
            """,
            "",
            "line 3",
            "duplicate key 'proxy'",
        )

    def test_bothParsers(self) -> None:
        """
        The loader on libyaml's parser, used first when PyYAML has it,
        refuses duplicate keys and takes merge keys as PyYAML's own does.
        """
        from gateway.model import config as module

        text = "a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n"
        for loader in (module._FastUniqueKeyLoader, module.UniqueKeyLoader):
            self.assertEqual(yaml.load(text, Loader=loader), {"a": {"k": 1}, "b": {"k": 1, "j": 2}})
            self.assertRaises(
                yaml.constructor.ConstructorError, yaml.load, "a: 1\na: 2\n", Loader=loader
            )
        self.assertEqual(module.loadYAML(text), yaml.load(text, Loader=module.UniqueKeyLoader))

    def test_mergeKeys(self) -> None:
        """
        YAML merge keys (C{<<: *anchor}) still work, and a key given next to
        one overrides the merged value without counting as a duplicate.
        """
        config = loadConfig(
            self.write(
                """\
                admin:
                  listen: tcp:9090:interface=127.0.0.1
                servers:
                  - &base {name: a, addr: "127.0.0.1:1", weight: 2}
                  - <<: *base
                    name: b
                """
            )
        )
        self.assertEqual(
            [(s.name, s.addr, s.weight) for s in config.seed["servers"]],
            [("a", "127.0.0.1:1", 2), ("b", "127.0.0.1:1", 2)],
        )

    def test_empty(self) -> None:
        """
        An empty file is refused with a message that says what it needs.
        """
        self.assertError("", "", "empty", "proxy: or admin:")

    def test_notAMapping(self) -> None:
        """
        A file whose top level is not a mapping is refused.
        """
        self.assertError("- proxy\n- admin\n", "", "must be a mapping")

    def test_unknownTopLevelKey(self) -> None:
        """
        An unknown top-level key (a typo) is refused, naming the key.
        """
        self.assertError("proxy:\n  listen: tcp:8080\nsrvers: []\n", "srvers", "is not a known key")

    def test_noRole(self) -> None:
        """
        A config with neither a proxy nor an admin section is refused.
        """
        self.assertError("store: 'memory:'\n", "", "proxy: or an admin:")


class ParseConfigTests(SynchronousTestCase):
    """
    Tests for L{parseConfig}: checking each key.
    """

    def assertError(self, data: object, key: str, *fragments: str) -> ConfigError:
        e = self.assertRaises(ConfigError, parseConfig, data, "test.yaml")
        self.assertEqual(e.key, key, str(e))
        self.assertEqual(e.source, "test.yaml")
        for fragment in fragments:
            self.assertIn(fragment, e.message)
        return e

    def test_errorText(self) -> None:
        """
        A L{ConfigError} is a L{ValueError} whose text is
        C{"source: key: message"}.
        """
        e = self.assertError({"proxy": {}}, "proxy.listen", "is required")
        self.assertIsInstance(e, ValueError)
        self.assertEqual(str(e), "test.yaml: proxy.listen: is required (or proxy.tlsListen)")

    def test_sectionNotAnObject(self) -> None:
        """
        A role section that is not a mapping (e.g. C{proxy:} with nothing
        after it) is refused, naming the section.
        """
        self.assertError({"proxy": None}, "proxy", "must be an object")
        self.assertError({"admin": "tcp:9090"}, "admin", "must be an object")

    def test_unknownSectionKey(self) -> None:
        """
        An unknown key inside a section is refused, naming it.
        """
        self.assertError({"admin": dict(ADMIN, tokn="x")}, "admin.tokn", "is not a known field")

    def test_listenNotAString(self) -> None:
        """
        A C{listen} that is not a string is refused.
        """
        self.assertError({"proxy": {"listen": 8080}}, "proxy.listen", "must be a string")

    def test_listenUnknownEndpointType(self) -> None:
        """
        A C{listen} whose endpoint type Twisted does not know is refused,
        with an example of a good one.
        """
        self.assertError(
            {"admin": {"listen": "htp:9090"}}, "admin.listen", "'htp:9090'", "tcp:8080"
        )

    def test_listenBadArguments(self) -> None:
        """
        A C{listen} with a known type but arguments Twisted's parser refuses
        (a port that is not a number, an unknown option) is refused.
        """
        self.assertError({"proxy": {"listen": "tcp:http"}}, "proxy.listen", "not a valid")
        self.assertError(
            {"proxy": {"listen": "tcp:8080:iface=127.0.0.1"}}, "proxy.listen", "not a valid"
        )

    def test_listenPortOutOfRange(self) -> None:
        """
        A TCP port above 65535 is refused.
        """
        self.assertError({"proxy": {"listen": "tcp:70000"}}, "proxy.listen", "out of range")

    def test_sameEndpoint(self) -> None:
        """
        The admin and the proxy cannot listen on the same endpoint.
        """
        self.assertError({"proxy": PROXY, "admin": dict(PROXY)}, "admin.listen", "same endpoint")

    def test_filtersNotAList(self) -> None:
        """
        C{proxy.filters} must be a list.
        """
        self.assertError(
            {"proxy": dict(PROXY, filters="request-id")}, "proxy.filters", "must be a list"
        )

    def test_badFilterName(self) -> None:
        """
        A filter name that is not a valid name is refused, naming its place
        in the list, whether given alone or in a mapping.
        """
        self.assertError({"proxy": dict(PROXY, filters=["ok", "no spaces"])}, "proxy.filters[1]")
        self.assertError(
            {"proxy": dict(PROXY, filters=[{"name": "x", "config": []}])},
            "proxy.filters[0].config",
            "must be an object",
        )
        self.assertError(
            {"proxy": dict(PROXY, filters=[{"config": {}}])}, "proxy.filters[0].name", "required"
        )

    def test_badTrustedProxy(self) -> None:
        """
        A trusted proxy that is not a CIDR is refused, naming its place.
        """
        self.assertError(
            {"proxy": dict(PROXY, trustedProxies=["10.0.0.0/8", "intranet"])},
            "proxy.trustedProxies[1]",
            "not an IP network",
        )

    def test_accessLogNotABool(self) -> None:
        """
        C{proxy.accessLog} must be true or false.
        """
        self.assertError(
            {"proxy": dict(PROXY, accessLog="sometimes")}, "proxy.accessLog", "true or false"
        )

    def test_upstreamKeepalive(self) -> None:
        """
        C{proxy.upstreamKeepalive} is a count of connections, 0 or more; it
        sizes the upstream client's idle pool per server.
        """
        self.assertError(
            {"proxy": dict(PROXY, upstreamKeepalive=-1)}, "proxy.upstreamKeepalive", "at least 0"
        )
        self.assertError(
            {"proxy": dict(PROXY, upstreamKeepalive="many")}, "proxy.upstreamKeepalive", "integer"
        )
        from twisted.internet.testing import MemoryReactorClock

        from gateway.filters import FilterRegistry
        from gateway.process.root import makeService
        from gateway.process.startup import Abort

        config = parseConfig(
            {
                "proxy": {"listen": "tcp:8080", "upstreamKeepalive": 7, "accessLog": False},
                "store": "memory:",
            }
        )
        reactor = MemoryReactorClock()
        service = makeService(config, reactor, FilterRegistry({}), Abort(reactor))
        self.assertEqual(service.getServiceNamed("upstream").client._maxIdle, 7)

    def test_badToken(self) -> None:
        """
        An admin token must be a non-empty string (a number in YAML is a
        mistake worth reporting, not a token).
        """
        self.assertError({"admin": dict(ADMIN, token="")}, "admin.token", "must not be empty")
        self.assertError({"admin": dict(ADMIN, token=1234)}, "admin.token", "must be a string")

    def test_storeNotAString(self) -> None:
        """
        The store must be a URL string.
        """
        self.assertError({"admin": ADMIN, "store": ["memory:"]}, "store", "must be a string")

    def test_storeUnknownScheme(self) -> None:
        """
        A store URL of a scheme no store serves is refused, listing the
        known ones.
        """
        self.assertError(
            {"admin": ADMIN, "store": "redis://127.0.0.1"}, "store", "file:", "etcd://"
        )

    def test_storeFileWithoutPath(self) -> None:
        """
        C{file:} needs a path.
        """
        self.assertError({"admin": ADMIN, "store": "file:"}, "store", "needs a path")
        self.assertError({"admin": ADMIN, "store": "file://"}, "store", "needs a path")

    def test_storeEtcdBadAddress(self) -> None:
        """
        An etcd URL needs C{HOST:PORT} addresses with numeric ports.
        """
        self.assertError({"admin": ADMIN, "store": "etcd:///gateway"}, "store", "HOST:PORT")
        self.assertError({"admin": ADMIN, "store": "etcd://localhost/gw"}, "store", "HOST:PORT")
        self.assertError(
            {"admin": ADMIN, "store": "etcd://127.0.0.1:2379,127.0.0.2:x/gw"}, "store", "'x'"
        )

    def test_goodStores(self) -> None:
        """
        Every store URL form is accepted as given.
        """
        for url in [
            "file:gateway-data.json",
            "file:///var/lib/gateway.json",
            "memory:",
            "etcd://127.0.0.1:2379/gateway",
            "etcd://a:2379,b:2379/gw",
        ]:
            self.assertEqual(parseConfig({"admin": ADMIN, "store": url}, "t").store, url)

    def test_seedNotAList(self) -> None:
        """
        A seed kind must be a list of resources.
        """
        self.assertError({"admin": ADMIN, "servers": {"s1": {}}}, "servers", "must be a list")

    def test_seedResourceNotAnObject(self) -> None:
        """
        A seed resource that is not a mapping is refused, naming its index.
        """
        self.assertError({"admin": ADMIN, "servers": ["s1"]}, "servers[0]", "must be an object")

    def test_seedInvalidField(self) -> None:
        """
        An invalid field of a seed resource is refused, naming the resource
        by its index and the field by its path.
        """
        self.assertError(
            {
                "admin": ADMIN,
                "servers": [
                    {"name": "a", "addr": "127.0.0.1:1"},
                    {"name": "b", "addr": "127.0.0.1:2"},
                    {"name": "c", "addr": "no-port"},
                ],
            },
            "servers[2].addr",
            "host:port",
        )
        self.assertError(
            {
                "admin": ADMIN,
                "servers": [
                    {"name": "a", "addr": "127.0.0.1:1", "healthCheck": {"path": "health"}}
                ],
            },
            "servers[0].healthCheck.path",
            "must start with /",
        )

    def test_seedDuplicateName(self) -> None:
        """
        Two seed resources of one kind with the same name are refused.
        """
        self.assertError(
            {
                "admin": ADMIN,
                "clusters": [{"name": "c"}, {"name": "d"}, {"name": "c"}],
            },
            "clusters[2].name",
            "duplicate name 'c'",
            "clusters[0]",
        )

    def test_seedSameNameOtherKind(self) -> None:
        """
        Names are unique per kind: a server and a cluster may share one.
        """
        config = parseConfig(
            {
                "admin": ADMIN,
                "servers": [{"name": "x", "addr": "127.0.0.1:1"}],
                "clusters": [{"name": "x", "servers": ["x"]}],
            },
            "t",
        )
        self.assertEqual(config.seed["clusters"][0].servers, ("x",))

    def test_seedMissingServer(self) -> None:
        """
        A seeded cluster that names a server not seeded is refused, naming
        the reference.
        """
        self.assertError(
            {
                "admin": ADMIN,
                "servers": [{"name": "a", "addr": "127.0.0.1:1"}],
                "clusters": [
                    {"name": "ok", "servers": ["a"]},
                    {"name": "c", "servers": ["a", "b"]},
                ],
            },
            "clusters[1].servers[1]",
            "'b'",
        )

    def test_seedMissingCluster(self) -> None:
        """
        A seeded API whose node names a cluster not seeded is refused.
        """
        self.assertError(
            {
                "admin": ADMIN,
                "apis": [{"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "nope"}]}],
            },
            "apis[0].nodes[0].cluster",
            "'nope'",
        )

    def test_seedRoutingReferences(self) -> None:
        """
        A seeded routing must name a seeded cluster and, when scoped, a
        seeded API.
        """
        self.assertError(
            {"admin": ADMIN, "routings": [{"name": "r", "cluster": "nope"}]},
            "routings[0].cluster",
            "'nope'",
        )
        self.assertError(
            {
                "admin": ADMIN,
                "clusters": [{"name": "c"}],
                "routings": [{"name": "r", "cluster": "c", "api": "nope"}],
            },
            "routings[0].api",
            "'nope'",
        )
