"""
Certificates as resources: the model's checks, the write-only key in the
admin (through L{StubTreq}), the config's TLS keys and certificate files,
the CLI's view of keys, the stats and metrics, the snapshot's TLS objects
and the HTTPS redirect of C{httpsOnly} APIs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_admin_api import APITestCase
from tlsfixtures import CertificateAuthority
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from gateway.cli.plan import HIDDEN, computePlan
from gateway.cli.resources import parseResourceFile
from gateway.filters import FilterRegistry
from gateway.model.certificates import certificateInfo, inlineCertificateFiles, sniMatches
from gateway.model.config import ConfigError, parseConfig, proxyEndpoints, workersCanShare
from gateway.model.resources import (
    Catalog,
    ReferenceError,
    parseResource,
    publicJSON,
)
from gateway.model.schema import ValidationError, toJSON
from gateway.pipeline.https import OUTCOME, HTTPSRedirect, httpsPort
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.certificates import certificateStats

CA = CertificateAuthority()
API_CERT = CA.issue(["api.example.com"])
OTHER_CERT = CA.issue(["other.example.com"])
CLIENT_CERT = CA.issue([], common="client", client=True)


def _blocks(chain: str) -> List[str]:
    """
    @return: the PEM blocks of a chain, each with its END line.
    """
    end = "-----END CERTIFICATE-----\n"
    return [block + end for block in chain.split(end) if block.strip()]


def errorsOf(kind: str, body: Dict[str, Any]) -> List[Any]:
    try:
        parseResource(kind, body)
    except ValidationError as e:
        return [(leaf.field, leaf.message, leaf.semantic) for leaf in e.errors]
    raise AssertionError("valid")


class CertificateModelTests(SynchronousTestCase):
    """
    A certificate resource is checked field by field, naming the field.
    """

    def test_valid(self) -> None:
        """
        A certificate with its matching key and SNIs parses; SNIs are
        lower-cased; its repr never shows the key.
        """
        certificate = parseResource(
            "certificates", API_CERT.resource("api", ["API.example.com", "*.Example.org"])
        )
        self.assertEqual(certificate.snis, ("api.example.com", "*.example.org"))
        self.assertNotIn(API_CERT.keyBody()[:30], repr(certificate))
        self.assertNotIn("PRIVATE", repr(certificate))

    def test_badPEM(self) -> None:
        """
        Text that is not PEM, PEM that is not a certificate, a private key
        in the cert field, an encrypted key, an RSA key under 2048 bits and
        a key of another certificate are each refused, naming the field,
        as rules the OpenAPI document cannot state.
        """
        good = API_CERT.resource("api")
        cases = [
            (dict(good, cert="hello"), "cert", "PEM"),
            (
                dict(good, cert="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                "cert",
                "not a valid PEM",
            ),
            (dict(good, cert=good["cert"] + good["key"]), "cert", "holds a private key"),
            (
                dict(good, key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                "key",
                "not a valid PEM private key",
            ),
            (dict(good, key=_encrypted()), "key", "is encrypted"),
            (dict(good, key=_weakRSA()), "key", "at least 2048"),
            (dict(good, key=OTHER_CERT.keyPEM), "key", "does not match cert"),
        ]
        for body, fieldName, words in cases:
            errors = errorsOf("certificates", body)
            self.assertEqual(len(errors), 1, errors)
            fieldSeen, message, semantic = errors[0]
            self.assertEqual(fieldSeen, fieldName)
            self.assertIn(words, message)
            self.assertTrue(semantic, message)
            # Never the key in a message.
            self.assertNotIn(API_CERT.keyBody()[:20], message)

    def test_snis(self) -> None:
        """
        SNIs are host names or C{*.} and one, without ports: a wildcard in
        the middle, a port, a space or a duplicate (ignoring case) is
        refused.
        """
        good = API_CERT.resource("api")
        for bad in ("a.*.example.com", "api.example.com:443", "a b", "*", "*.", "-a.com", ""):
            errors = errorsOf("certificates", dict(good, snis=[bad]))
            self.assertEqual(errors[0][0], "snis[0]", bad)
        errors = errorsOf("certificates", dict(good, snis=["a.example.com", "A.example.com"]))
        self.assertEqual(errors, [("snis[1]", "duplicate 'A.example.com'", True)])

    def test_chainInOrder(self) -> None:
        """
        C{cert} is the certificate, then each intermediate after the one it
        signs: a chain through two intermediates (and the root after them)
        parses; intermediates swapped, or one that signs nothing of the
        chain, are refused naming C{cert} and the certificate out of place;
        so is a chain that starts with its intermediate.
        """
        middle = CertificateAuthority("Middle CA", parent=CA)
        lower = CertificateAuthority("Lower CA", parent=middle)
        issued = lower.issue(["api.example.com"])
        leaf, lowerPEM, middlePEM = _blocks(issued.chain)
        good = issued.resource("api", ["api.example.com"])
        parseResource("certificates", good)
        parseResource("certificates", dict(good, cert=issued.chain + CA.pem))
        cases = [
            (leaf + middlePEM + lowerPEM, "certificate 2 of the chain (CN=Middle CA)"),
            (leaf + lowerPEM + OTHER_CERT.chain, "certificate 3 of the chain"),
            (leaf + OTHER_CERT.chain, "issued by CN=Lower CA"),
            (lowerPEM + leaf, "(CN=api.example.com) did not sign certificate 1"),
        ]
        for cert, words in cases:
            errors = errorsOf("certificates", dict(good, cert=cert))
            self.assertEqual([e[0] for e in errors], ["cert"], words)
            self.assertIn("is not in order", errors[0][1])
            self.assertIn(words, errors[0][1])
            self.assertTrue(errors[0][2])

    def test_ipAddressNoSNI(self) -> None:
        """
        An IP address is no SNI (RFC 6066: clients connecting by address
        send none, so it would never choose the certificate): IPv4 as IPv6,
        refused naming the SNI and saying what serves such clients.
        """
        good = API_CERT.resource("api")
        for address in ("10.1.2.3", "127.0.0.1", "::1"):
            errors = errorsOf("certificates", dict(good, snis=["api.example.com", address]))
            self.assertEqual(len(errors), 1, errors)
            self.assertEqual(errors[0][0], "snis[1]", address)
            self.assertIn("IP address", errors[0][1])
            self.assertIn("tlsDefaultCertificate", errors[0][1])
        # Names with digits stay names.
        parseResource("certificates", dict(good, snis=["10.example.com", "*.1.example.org"]))

    def test_serverNameNoWildcard(self) -> None:
        """
        A server's C{tls.serverName} is the one name the gateway asks its
        backend for and verifies: a host name or an IPv4 address, never a
        wildcard (which no certificate can be verified for: the backend's
        every request failed with an unhandled error in the log).
        """
        server = {"name": "s", "addr": "10.0.0.5:8443"}
        for bad in ("*.example.com", "*", "a.*.example.com", "b.example.com:443"):
            errors = errorsOf("servers", dict(server, tls={"serverName": bad}))
            self.assertEqual([e[0] for e in errors], ["tls.serverName"], bad)
            self.assertIn("without a wildcard", errors[0][1])
        for good in ("users.internal", "Users.Internal", "10.0.0.5"):
            parsed = parseResource("servers", dict(server, tls={"serverName": good}))
            self.assertEqual(parsed.tls.serverName, good)

    def test_keyOptional(self) -> None:
        """
        The model reads a certificate without its key (an exported one);
        the admin and a config's seed require it (below).
        """
        body = API_CERT.resource("api")
        del body["key"]
        self.assertIsNone(parseResource("certificates", body).key)

    def test_derivedFieldsIgnored(self) -> None:
        """
        What the admin answers of a certificate (subject, expiry...) may be
        sent back: it is ignored.
        """
        shown = publicJSON(
            "certificates", toJSON(parseResource("certificates", API_CERT.resource("api")))
        )
        self.assertNotIn("key", shown)
        self.assertEqual(shown["subject"], "CN=api.example.com")
        certificate = parseResource("certificates", dict(shown, key=API_CERT.keyPEM))
        self.assertEqual(certificate.cert, API_CERT.chain)

    def test_info(self) -> None:
        """
        L{certificateInfo} shows the subject, issuer, names, validity,
        expiry and fingerprint of the first certificate of a chain.
        """
        info = certificateInfo(API_CERT.chain + CA.pem)
        self.assertEqual(info["subject"], "CN=api.example.com")
        self.assertEqual(info["issuer"], "CN=Gateway Test CA")
        self.assertEqual(info["sans"], ["api.example.com"])
        self.assertEqual(info["chain"], 2)
        self.assertEqual(len(info["fingerprint"].split(":")), 32)
        self.assertEqual(
            info["expiresAt"], int(API_CERT.certificate.not_valid_after_utc.timestamp())
        )

    def test_sniMatches(self) -> None:
        """
        A wildcard stands for one label exactly.
        """
        self.assertTrue(sniMatches("*.example.org", "a.example.org"))
        self.assertFalse(sniMatches("*.example.org", "a.b.example.org"))
        self.assertFalse(sniMatches("*.example.org", "example.org"))
        self.assertTrue(sniMatches("API.example.com", "api.example.com"))

    def test_serverTLS(self) -> None:
        """
        A server's C{tls}: its CA must be PEM certificates, its server name
        a host name, its client certificate a name.
        """
        server = {"name": "s", "addr": "10.0.0.1:443"}
        parsed = parseResource("servers", dict(server, tls={}))
        self.assertTrue(parsed.tls.verify)
        self.assertEqual(errorsOf("servers", dict(server, tls={"ca": "x"}))[0][0], "tls.ca")
        self.assertEqual(
            errorsOf("servers", dict(server, tls={"serverName": "a b"}))[0][0], "tls.serverName"
        )
        self.assertEqual(
            errorsOf("servers", dict(server, tls={"clientCertificate": "a/b"}))[0][0],
            "tls.clientCertificate",
        )


def _encrypted() -> str:
    return API_CERT.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()


def _weakRSA() -> str:
    key = rsa.generate_private_key(65537, 1024)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def catalog(**kinds: List[Dict[str, Any]]) -> Catalog:
    return Catalog(
        **{
            kind: {item["name"]: parseResource(kind, item) for item in items}
            for kind, items in kinds.items()
        }
    )


class CatalogTests(SynchronousTestCase):
    """
    A server names its client certificate; two certificates cannot claim
    one SNI.
    """

    def test_clientCertificateReference(self) -> None:
        """
        A server naming a missing certificate is a broken reference; the
        certificate it names is used by it.
        """
        server = {"name": "s", "addr": "h:1", "tls": {"clientCertificate": "client"}}
        broken = catalog(servers=[server])
        self.assertEqual(
            broken.brokenReferences(),
            [("servers", "s", "tls.clientCertificate", "certificates", "client")],
        )
        self.assertRaises(ReferenceError, broken.check)
        whole = catalog(servers=[server], certificates=[CLIENT_CERT.resource("client")])
        whole.check()
        self.assertEqual(
            whole.usersOf("certificates", "client"), [("servers", "s", "tls.clientCertificate")]
        )

    def test_sniConflict(self) -> None:
        """
        Two certificates claiming one SNI conflict; the one written last is
        the one at fault.
        """
        both = catalog(
            certificates=[
                API_CERT.resource("a", ["api.example.com"]),
                OTHER_CERT.resource("b", ["other.example.com", "API.example.com"]),
            ]
        )
        self.assertEqual(both.sniConflicts(), [("b", 1, "api.example.com", "a")])
        self.assertEqual(both.sniConflicts(last="a"), [("a", 0, "api.example.com", "b")])
        error = self.assertRaises(ReferenceError, both.check)
        self.assertEqual(error.field, "certificates/b:snis[1]")


class AdminCertificateTests(APITestCase):
    """
    The admin keeps a certificate's key and never answers it.
    """

    def test_keyWriteOnly(self) -> None:
        """
        No answer (the create's, the item's, the list's, a replace's)
        shows the key, but the store keeps it; the answers show the
        certificate's subject, names, SNIs, expiry and fingerprint.
        """
        key = API_CERT.keyBody()
        answers = []
        code, _, created = self.call(
            "POST", "/certificates", API_CERT.resource("api", ["api.example.com"])
        )
        self.assertEqual(code, 201, created)
        answers.append(created)
        answers.append(self.call("GET", "/certificates/api")[2])
        answers.append(self.call("GET", "/certificates")[2])
        code, _, replaced = self.call(
            "PUT", "/certificates/api", API_CERT.resource("api", ["www.example.com"])
        )
        self.assertEqual(code, 200, replaced)
        answers.append(replaced)
        for answer in answers:
            self.assertNotIn(key, json.dumps(answer))
            self.assertNotIn("PRIVATE KEY", json.dumps(answer))
        self.assertEqual(created["sans"], ["api.example.com"])
        self.assertEqual(replaced["snis"], ["www.example.com"])
        self.assertIn("notAfter", created)
        self.assertIn("fingerprint", created)
        self.assertEqual(self.state().get("certificates", "api")["key"], API_CERT.keyPEM)

    def test_keyKeptWhenLeftOut(self) -> None:
        """
        A replace without the key keeps the stored one (a new SNI list, a
        renewed certificate of the same key); a certificate of another key
        sent without its key is refused on C{key}; a create without a key
        is refused.
        """
        self.call("POST", "/certificates", API_CERT.resource("api"))
        body = {"cert": API_CERT.chain, "snis": ["x.example.com"]}
        code, _, answer = self.call("PUT", "/certificates/api", body)
        self.assertEqual(code, 200, answer)
        stored = self.state().get("certificates", "api")
        self.assertEqual((stored["key"], stored["snis"]), (API_CERT.keyPEM, ["x.example.com"]))

        code, _, answer = self.call("PUT", "/certificates/api", {"cert": OTHER_CERT.chain})
        self.assertEqual(code, 400, answer)
        self.assertEqual(answer["field"], "key")
        self.assertIn("the stored one", answer["error"])

        code, _, answer = self.call(
            "POST", "/certificates", {"name": "new", "cert": API_CERT.chain}
        )
        self.assertEqual(code, 400, answer)
        self.assertEqual(
            answer["errors"], [{"field": "key", "error": answer["error"], "rule": True}]
        )

    def test_conflicts(self) -> None:
        """
        An SNI another certificate serves is a 409 naming the SNI; a server
        naming a missing client certificate is a 409 naming the field; a
        certificate a server uses cannot be deleted (409).
        """
        self.call("POST", "/certificates", API_CERT.resource("a", ["api.example.com"]))
        code, _, answer = self.call(
            "POST",
            "/certificates",
            OTHER_CERT.resource("b", ["other.example.com", "api.example.com"]),
        )
        self.assertEqual((code, answer["field"]), (409, "snis[1]"), answer)
        server = {"name": "s", "addr": "h:443", "tls": {"clientCertificate": "client"}}
        code, _, answer = self.call("POST", "/servers", server)
        self.assertEqual((code, answer["field"]), (409, "tls.clientCertificate"), answer)
        self.call("POST", "/certificates", CLIENT_CERT.resource("client"))
        self.assertEqual(self.call("POST", "/servers", server)[0], 201)
        code, _, answer = self.call("DELETE", "/certificates/client")
        self.assertEqual(code, 409, answer)
        self.assertIn("servers/s", answer["error"])


class AdminExpiredCertificateTests(APITestCase):
    """
    The admin refuses a certificate that has expired when it is written,
    by itself or in a batch; one stored before it expired stays writable
    with the same C{cert}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.clock.advance(API_CERT.certificate.not_valid_before_utc.timestamp() + 60)
        self.expired = CA.issue(["old.example.com"], expired=True)

    def assertExpiredRefused(self, code: int, answer: Any, fieldName: str) -> None:
        self.assertEqual(code, 400, answer)
        self.assertEqual(answer["field"], fieldName)
        self.assertIn("expired on ", answer["error"])
        notAfter = self.expired.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.assertIn(notAfter, answer["error"])
        self.assertTrue(answer["errors"][0]["rule"])
        self.assertEqual(self.call("GET", "/certificates")[2], [])

    def test_refused(self) -> None:
        """
        A C{PUT}, a C{POST} and a batch of an expired certificate are each
        a 400 naming C{cert} (with its C{notAfter}), and store nothing.
        """
        body = self.expired.resource("old", ["old.example.com"])
        code, _, answer = self.call("PUT", "/certificates/old", body)
        self.assertExpiredRefused(code, answer, "cert")
        code, _, answer = self.call("POST", "/certificates", body)
        self.assertExpiredRefused(code, answer, "cert")
        code, _, answer = self.call(
            "POST",
            "/batch",
            {"changes": [{"op": "put", "kind": "certificates", "name": "old", "value": body}]},
        )
        self.assertExpiredRefused(code, answer, "changes[0].value.cert")

    def test_storedStaysWritable(self) -> None:
        """
        A certificate that expired in the store may be written again with
        the same C{cert} (its SNIs changed), and replaced by its renewal.
        """
        body = API_CERT.resource("api", ["api.example.com"])
        code, _, answer = self.call("PUT", "/certificates/api", body)
        self.assertEqual(code, 201, answer)
        self.clock.advance(
            API_CERT.certificate.not_valid_after_utc.timestamp() + 60 - self.clock.seconds()
        )
        del body["key"]
        code, _, answer = self.call("PUT", "/certificates/api", dict(body, snis=["a.example.com"]))
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["snis"], ["a.example.com"])
        code, _, answer = self.call("PUT", "/certificates/api", OTHER_CERT.resource("api"))
        self.assertEqual(code, 400, answer)
        self.assertIn("expired on", answer["error"])


class ConfigTLSTests(SynchronousTestCase):
    """
    The config's TLS keys: C{proxy.listen} and C{proxy.tlsListen} as
    strings or lists, C{proxy.tlsDefaultCertificate}, certificates seeded
    from PEM files.
    """

    def parse(self, proxy: Dict[str, Any], **extra: Any) -> Any:
        return parseConfig(dict({"proxy": proxy, "store": "memory:"}, **extra), "test.yaml")

    def test_lists(self) -> None:
        """
        Both keys take one endpoint string or a list of them.
        """
        config = self.parse({"listen": ["tcp:8080", "tcp:8081"], "tlsListen": "tcp:8443"})
        self.assertEqual(config.proxy.listen, ("tcp:8080", "tcp:8081"))
        self.assertEqual(config.proxy.tlsListen, ("tcp:8443",))
        self.assertEqual(proxyEndpoints(config.proxy), ("tcp:8080", "tcp:8081", "tcp:8443"))
        self.assertEqual(self.parse({"tlsListen": "tcp:8443"}).proxy.listen, ())

    def test_errors(self) -> None:
        """
        A TLS endpoint in C{tlsListen}, an endpoint given twice, none at
        all, a bad endpoint in a list and a bad default certificate name
        are refused naming the key.
        """
        cases = [
            (
                {"tlsListen": "ssl:8443:privateKey=k.pem"},
                "proxy.tlsListen",
                "tlsListen takes a plain",
            ),
            (
                {"listen": "tcp:8080", "tlsListen": "tcp:8080"},
                "proxy.tlsListen",
                "also an endpoint",
            ),
            ({}, "proxy.listen", "is required (or proxy.tlsListen)"),
            ({"listen": ["tcp:8080", "htp:1"]}, "proxy.listen[1]", "not a valid"),
            ({"listen": ["tcp:8080", "tcp:8080"]}, "proxy.listen[1]", "duplicate"),
            (
                {"listen": "tcp:8080", "tlsDefaultCertificate": "a/b"},
                "proxy.tlsDefaultCertificate",
                "letters",
            ),
        ]
        for proxy, key, words in cases:
            error = self.assertRaises(ConfigError, self.parse, proxy)
            self.assertEqual(error.key, key, error)
            self.assertIn(words, error.message)

    def test_workersNeedTCPEverywhere(self) -> None:
        """
        Several workers need every endpoint, plain and TLS, to be TCP.
        """
        self.assertTrue(workersCanShare(("tcp:1", "tcp:2"), "file:x"))
        self.assertFalse(workersCanShare(("tcp:1", "unix:/x"), "file:x"))
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {"proxy": {"listen": "tcp:1", "tlsListen": "unix:/tmp/x", "workers": 2}},
            "t",
        )
        self.assertEqual(error.key, "proxy.workers")

    def test_seededFromFiles(self) -> None:
        """
        A seeded certificate may name PEM files relative to the config
        file; a missing file, or a certificate without its key, is an
        error naming it.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "api.crt").write_text(API_CERT.chain)
        (directory / "api.key").write_text(API_CERT.keyPEM)
        source = str(directory / "gateway.yaml")
        seed = {"name": "api", "certFile": "api.crt", "keyFile": "api.key", "snis": ["a.example"]}
        config = parseConfig(
            {"proxy": {"listen": "tcp:1"}, "store": "memory:", "certificates": [seed]}, source
        )
        self.assertEqual(config.seed["certificates"][0].key, API_CERT.keyPEM)
        for item, key, words in (
            (dict(seed, keyFile="missing.key"), "certificates[0].keyFile", "cannot read"),
            ({"name": "api", "cert": API_CERT.chain}, "certificates[0].key", "is required"),
            (dict(seed, cert=API_CERT.chain), "certificates[0].certFile", "not both"),
        ):
            error = self.assertRaises(
                ConfigError,
                parseConfig,
                {"proxy": {"listen": "tcp:1"}, "store": "memory:", "certificates": [item]},
                source,
            )
            self.assertEqual(error.key, key)
            self.assertIn(words, error.message)

    def test_inlineNothing(self) -> None:
        """
        An entry that names no file is returned as it is.
        """
        item = {"name": "x"}
        self.assertIs(inlineCertificateFiles(item, None), item)


class CLITests(SynchronousTestCase):
    """
    The CLI never compares nor shows a key, and reads certificate files.
    """

    def test_planIgnoresKeys(self) -> None:
        """
        A file's certificate with its key equals the admin's without it
        (its key changes only with its cert); an update's diff shows the
        key as hidden.
        """
        withKey = API_CERT.resource("api", ["api.example.com"])
        shown = publicJSON("certificates", toJSON(parseResource("certificates", withKey)))
        plan = computePlan({"certificates": {"api": shown}}, {"certificates": {"api": withKey}})
        self.assertEqual((plan.steps, plan.unchanged), ((), 1))
        changed = dict(withKey, snis=["www.example.com"])
        plan = computePlan({"certificates": {"api": shown}}, {"certificates": {"api": changed}})
        (step,) = plan.steps
        diff = "\n".join(step.diff())
        self.assertIn(HIDDEN, diff)
        self.assertNotIn(API_CERT.keyBody()[:20], diff)
        self.assertEqual(step.after["key"], API_CERT.keyPEM)

    def test_missingKeyRefusedBeforeAnyChange(self) -> None:
        """
        C{apply}'s checks before any change refuse a certificate of the
        file without its key that the admin does not hold (an export of
        another gateway), naming its C{key}; one the admin holds keeps its
        stored key, and one with its key is taken.
        """
        from gateway.cli.main import missingSecrets

        keyless = {"name": "api", "cert": API_CERT.chain}
        resourceFile = parseResourceFile(
            {"certificates": [keyless, OTHER_CERT.resource("other")]}, "f"
        )
        empty: Dict[str, Dict[str, Any]] = {"certificates": {}, "consumers": {}}
        problems = missingSecrets(empty, resourceFile)
        self.assertEqual([p.where for p in problems], ["certificates[0] (api).key"])
        self.assertIn("add key or keyFile", problems[0].message)
        held = dict(empty, certificates={"api": publicJSON("certificates", keyless)})
        self.assertEqual(missingSecrets(held, resourceFile), [])

    def test_resourceFileReadsPEMFiles(self) -> None:
        """
        A resource file's certificate may name PEM files, relative to the
        file.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "c.pem").write_text(API_CERT.chain)
        parsed = parseResourceFile(
            {"certificates": [{"name": "c", "certFile": "c.pem"}]}, "f.yaml", str(directory)
        )
        self.assertEqual(parsed.resources["certificates"]["c"]["cert"], API_CERT.chain)

    def test_validateWarnsOfExpired(self) -> None:
        """
        C{gateway validate} warns of a certificate that has expired (naming
        its C{cert} and its C{notAfter}), and of none that has not; the
        file stays valid (an export holds what the admin has).
        """
        from test_cli import runInProcess

        expired = CA.issue(["old.example.com"], expired=True)
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "resources.json"
        path.write_text(
            json.dumps(
                {
                    "certificates": [
                        expired.resource("old", ["old.example.com"]),
                        API_CERT.resource("api", ["api.example.com"]),
                    ]
                }
            )
        )
        code, out, err = runInProcess(["validate", str(path)])
        self.assertEqual(code, 0, err)
        notAfter = expired.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
        self.assertIn("certificates[0] (old).cert: expired on " + notAfter, warning)


class SnapshotTLSTests(SynchronousTestCase):
    """
    The snapshot compiles certificates and servers' TLS once, and keeps
    them while their resources stay.
    """

    def state(self, revision: int, **kinds: List[Dict[str, Any]]) -> StoreState:
        return StoreState(
            revision, {kind: {i["name"]: i for i in items} for kind, items in kinds.items()}
        )

    def test_compiled(self) -> None:
        """
        A snapshot serves its certificates; a server with C{tls} gets an
        L{UpstreamTLS} (the same one while its settings stay); one without
        gets none.
        """
        manager = SnapshotManager(FilterRegistry({}), Clock())
        certificates = [CLIENT_CERT.resource("client"), API_CERT.resource("api", ["a.example"])]
        servers = [
            {"name": "s", "addr": "h.internal:443", "tls": {"clientCertificate": "client"}},
            {"name": "p", "addr": "h.internal:80"},
        ]
        snapshot = manager.apply(self.state(1, certificates=certificates, servers=servers))
        self.assertEqual(sorted(snapshot.certificates), ["api", "client"])
        self.assertEqual(snapshot.certificates["api"].snis, ("a.example",))
        tls = snapshot.backends["s"].tls
        self.assertEqual(tls.serverName, "h.internal")
        self.assertIsNone(snapshot.backends["p"].tls)
        servers.append({"name": "q", "addr": "q:1"})
        snapshot = manager.apply(self.state(2, certificates=certificates, servers=servers))
        self.assertIs(snapshot.backends["s"].tls, tls)
        servers[0] = dict(servers[0], tls={"serverName": "other.internal"})
        snapshot = manager.apply(self.state(3, certificates=certificates, servers=servers))
        self.assertEqual(snapshot.backends["s"].tls.serverName, "other.internal")

    def test_keylessOffline(self) -> None:
        """
        By default a certificate without its key does not compile; the
        CLI's offline checks accept it.
        """
        from gateway.routing.tls import TLSCompiler

        keyless = {"name": "k", "cert": API_CERT.chain}
        manager = SnapshotManager(FilterRegistry({}), Clock())
        error = self.assertRaises(
            ValidationError, manager.validate, catalog(certificates=[keyless])
        )
        self.assertEqual(error.field, "certificates/k:key")
        lenient = SnapshotManager(FilterRegistry({}), Clock(), tls=TLSCompiler(requireKeys=False))
        lenient.validate(catalog(certificates=[keyless]))

    def test_stats(self) -> None:
        """
        The stats show each certificate's info, its SNIs and the seconds
        left, never its key.
        """
        manager = SnapshotManager(FilterRegistry({}), Clock())
        snapshot = manager.apply(
            self.state(1, certificates=[API_CERT.resource("api", ["a.example"])])
        )
        now = 1_000_000.0
        stats = certificateStats(snapshot, now)
        self.assertEqual(stats["api"]["snis"], ["a.example"])
        self.assertEqual(stats["api"]["expiresIn"], stats["api"]["expiresAt"] - now)
        self.assertNotIn("key", stats["api"])
        self.assertEqual(certificateStats(None, now), {})


class HTTPSRedirectTests(SynchronousTestCase):
    """
    L{HTTPSRedirect} sends a plain-HTTP request to the same URL over HTTPS.
    """

    def location(self, port: Any, host: Any, uri: bytes = b"/a?b=c") -> bytes:
        request = DummyRequest([b""])
        request.uri = uri
        if host is not None:
            request.requestHeaders.setRawHeaders(b"host", [host])
        return HTTPSRedirect(httpsPort(port)).location(request)

    def test_location(self) -> None:
        """
        The Host without its port, the TLS listener's port (none for 443),
        the path and query as sent.
        """
        self.assertEqual(
            self.location(8443, b"api.example.com:8080"), b"https://api.example.com:8443/a?b=c"
        )
        self.assertEqual(self.location(443, b"api.example.com"), b"https://api.example.com/a?b=c")
        self.assertEqual(self.location(None, b"[::1]:8080"), b"https://[::1]/a?b=c")
        self.assertEqual(self.location(8443, b"h", b"http://h/x/y?z=1"), b"https://h:8443/x/y?z=1")

    def test_badHost(self) -> None:
        """
        A Host that is not a host name is not repeated: the address the
        request reached stands in.
        """
        location = self.location(8443, b"evil.example/<script>")
        self.assertTrue(location.startswith(b"https://"))
        self.assertNotIn(b"<script>", location)

    def test_answer(self) -> None:
        """
        The filter answers 308 with Location, and marks the exchange as a
        redirect (neither an error nor a rejection in the stats).
        """
        from gateway.telemetry.stats import classify

        class Exchange:
            outcome = None
            request = DummyRequest([b""])

        exchange = Exchange()
        exchange.request.uri = b"/x"
        exchange.request.requestHeaders.setRawHeaders(b"host", [b"h"])
        answer = HTTPSRedirect(8443).before(exchange)  # type: ignore[arg-type]
        self.assertEqual(answer.code, 308)
        self.assertEqual(answer.headers[b"location"], [b"https://h:8443/x"])
        self.assertEqual(exchange.outcome, OUTCOME)
        self.assertEqual(classify(308, OUTCOME), (None, None))
