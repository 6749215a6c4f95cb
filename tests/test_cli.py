"""
Tests for L{gateway.cli.main}, the C{gateway} command: C{validate} offline, the
plan C{apply} computes from two states, the admin client's error messages,
C{export}'s compact YAML, and (marked C{integration}) the real command run
as a subprocess against a real gateway.
"""

from __future__ import annotations

import copy
import email.message
import io
import json
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple
from unittest.mock import ANY

import pytest
import yaml
from harness import REPO, GatewayProcess, freePort, subprocessEnv
from tlsfixtures import CertificateAuthority, selfSigned, writePEM
from twisted.trial.unittest import SynchronousTestCase

from gateway.cli.checks import checkResources
from gateway.cli.client import DEFAULT_ADMIN, AdminClient, normaliseAdminURL
from gateway.cli.export import compactResource, exportDocument
from gateway.cli.main import makeParser, run
from gateway.cli.plan import (
    Plan,
    Step,
    applyBatch,
    applyPlan,
    batchTimeout,
    computePlan,
    renderPlan,
)
from gateway.cli.problems import AdminError, CLIError, Problem
from gateway.cli.resources import jsonEqual, normalise, parseResourceFile
from gateway.store import KINDS

TOKEN = "cli-token"

#: A resource file with every kind, nested objects and non-default values.
BASE: Dict[str, List[Dict[str, Any]]] = {
    "servers": [
        {"name": "s1", "addr": "127.0.0.1:9001"},
        {"name": "s2", "addr": "127.0.0.1:9002", "weight": 3},
        {
            "name": "s3",
            "addr": "127.0.0.1:9003",
            "maxQPS": 50,
            "healthCheck": {"path": "/health", "body": "ok", "interval": 2, "timeout": 1},
            "circuitBreaker": {"failureRateToOpen": 30, "minRequests": 5},
        },
    ],
    "clusters": [
        {"name": "c1", "servers": ["s1", "s2"], "loadBalance": "weighted-round-robin"},
        {"name": "c2", "servers": ["s3"]},
    ],
    "apis": [
        {
            "name": "a-users",
            "method": "GET",
            "urlPattern": "/users/{id}",
            "nodes": [{"cluster": "c1", "urlRewrite": "/v1/users/{id}"}],
        },
        {
            "name": "a-overview",
            "method": "GET",
            "urlPattern": "/users/{id}/overview",
            "nodes": [
                {"cluster": "c1", "urlRewrite": "/v1/users/{id}", "attrName": "user"},
                {"cluster": "c2", "attrName": "extra", "required": False, "timeout": 2},
            ],
            "rateLimit": {"rate": 10, "key": "ip"},
        },
    ],
    "routings": [
        {
            "name": "r-canary",
            "api": "a-users",
            "cluster": "c2",
            "trafficRate": 10,
            "conditions": [{"source": "header", "name": "X-Canary", "op": "eq", "value": "yes"}],
        },
        {
            "name": "r-mirror",
            "cluster": "c2",
            "strategy": "mirror",
            "conditions": [{"source": "query", "name": "debug", "op": "exists"}],
        },
    ],
}


def edited() -> Dict[str, List[Dict[str, Any]]]:
    """
    @return: L{BASE} with one server changed, one API added and one routing
        removed.
    """
    data = copy.deepcopy(BASE)
    data["servers"][1]["addr"] = "127.0.0.1:9012"
    data["apis"].append({"name": "a-orders", "urlPattern": "/orders", "nodes": [{"cluster": "c2"}]})
    data["routings"] = [r for r in data["routings"] if r["name"] != "r-mirror"]
    return data


def normalisedState(data: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """
    @return: C{{kind: {name: normalised JSON}}} of a resource file's lists.
    """
    return {
        kind: {item["name"]: normalise(kind, item) for item in data.get(kind) or []}
        for kind in KINDS
    }


def byName(data: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """
    @return: C{{kind: {name: JSON as written}}} of a resource file's lists.
    """
    return {kind: {item["name"]: item for item in data.get(kind) or []} for kind in KINDS}


def writeFile(directory: Path, name: str, data: Any) -> str:
    """
    Write C{data} as YAML (or C{data} itself, when it is text).

    @return: the path.
    """
    path = Path(directory) / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return str(path)


def runInProcess(
    argv: List[str], environ: Optional[Mapping[str, str]] = None, stdin: str = ""
) -> Tuple[int, str, str]:
    """
    Run the command in this process.

    @return: C{(exit status, stdout, stderr)}.
    """
    out, err = io.StringIO(), io.StringIO()
    code = run(argv, out, err, environ if environ is not None else {}, io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


# -- validate -------------------------------------------------------------------


class ValidateTests(SynchronousTestCase):
    """
    C{gateway validate FILE} checks a file offline and names every problem
    by resource and field.
    """

    def validate(self, data: Any) -> Tuple[int, str, str]:
        directory = Path(self.mktemp())
        directory.mkdir()
        return runInProcess(["validate", writeFile(directory, "resources.yaml", data)])

    def assertErrors(self, data: Any, expected: List[str]) -> str:
        """
        Validating C{data} fails with exit status 1 and exactly the
        C{expected} problem lines on stderr, and nothing on stdout.
        """
        code, out, err = self.validate(data)
        self.assertEqual(code, 1, err)
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertTrue(lines[0].startswith("error: "), err)
        self.assertTrue(
            lines[0].endswith(f": {len(expected)} error{'s' if len(expected) != 1 else ''}"), err
        )
        self.assertEqual([line.strip() for line in lines[1:]], expected)
        return err

    def test_goodFile(self) -> None:
        """
        A valid file passes with exit status 0 and a count of each kind.
        """
        code, out, err = self.validate(BASE)
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(
            out,
            r"resources\.yaml: OK \(0 certificates, 3 servers, 2 clusters, 0 consumers, 2 apis,"
            r" 2 routings\)\n$",
        )

    def test_gatewayConfigFile(self) -> None:
        """
        A gateway config file is a resource file: its resource lists are
        checked and its C{proxy}, C{admin} and C{store} keys ignored with a
        note.  The demo's config passes.
        """
        code, out, err = runInProcess(["validate", str(REPO / "demo" / "gateway.yaml")])
        self.assertEqual(code, 0, err)
        self.assertIn(
            "gateway.yaml: OK (0 certificates, 3 servers, 3 clusters, 0 consumers, 3 apis,"
            " 1 routings)",
            out,
        )
        self.assertIn("ignoring proxy, admin, store", err)

    def test_gatewayConfigWithLimits(self) -> None:
        """
        A gateway config file's C{limits} (the fleet's limits on Redis) is
        process configuration too: ignored with the others.
        """
        data = dict(BASE, limits={"store": "redis://127.0.0.1:6379/0"})
        code, out, err = runInProcess(["validate", "-"], stdin=json.dumps(data))
        self.assertEqual(code, 0, err)
        self.assertIn("ignoring limits", err)

    def test_stdinAndJSON(self) -> None:
        """
        C{-} reads the file from stdin, and JSON is accepted (it is YAML).
        """
        code, out, err = runInProcess(["validate", "-"], stdin=json.dumps(BASE))
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out,
            "<stdin>: OK (0 certificates, 3 servers, 2 clusters, 0 consumers, 2 apis,"
            " 2 routings)\n",
        )

    def test_invalidResources(self) -> None:
        """
        Every invalid resource is reported in one run, named by its list,
        position and name, with the field at fault: a bad value, an unknown
        field, a missing name, an item that is not an object, and a nested
        field.
        """
        data = copy.deepcopy(BASE)
        data["servers"][1]["addr"] = "nope"
        data["servers"].append({"addr": "127.0.0.1:1"})
        data["servers"].append(42)
        data["clusters"][0]["bogus"] = 1
        data["apis"][1]["nodes"][1]["timeout"] = -1
        self.assertErrors(
            data,
            [
                "servers[1] (s2).addr: must be host:port",
                "servers[3].name: is required",
                "servers[4]: must be an object, not number",
                "clusters[0] (c1).bogus: is not a known field",
                "apis[1] (a-overview).nodes[1].timeout: must be at least 0.001",
            ],
        )

    def test_everyErrorOfAResource(self) -> None:
        """
        A resource with several errors has each of them reported, not only
        the first (a server's address and weight, a nested field, and an
        API's nodes).
        """
        data = copy.deepcopy(BASE)
        data["servers"][0].update(addr="nope", weight="heavy")
        data["servers"][2]["healthCheck"]["path"] = "health"
        data["apis"][1]["nodes"][1].pop("attrName")
        data["apis"][1]["maxQPS"] = -1
        self.assertErrors(
            data,
            [
                "servers[0] (s1).addr: must be host:port",
                "servers[0] (s1).weight: must be an integer, not string",
                "servers[2] (s3).healthCheck.path: must start with / and hold no spaces or"
                " control characters",
                "apis[1] (a-overview).maxQPS: must be at least 0",
                "apis[1] (a-overview).nodes[1].attrName: is required when an API has several nodes",
            ],
        )

    def test_duplicateName(self) -> None:
        """
        A name given twice in one list is an error at the second one.
        """
        data = copy.deepcopy(BASE)
        data["clusters"].append({"name": "c1", "servers": ["s1"]})
        self.assertErrors(data, ["clusters[2] (c1).name: duplicate name 'c1' (as clusters[0])"])

    def test_brokenReferences(self) -> None:
        """
        Every reference to a resource that is not in the file is reported:
        a cluster's server, an API node's cluster, a routing's cluster and
        API.
        """
        data = copy.deepcopy(BASE)
        data["clusters"][1]["servers"] = ["s3", "s9"]
        data["apis"].append({"name": "users", "urlPattern": "/u", "nodes": [{"cluster": "x"}]})
        data["routings"][0]["api"] = "gone"
        data["routings"][1]["cluster"] = "c7"
        self.assertErrors(
            data,
            [
                "clusters[1] (c2).servers[1]: names server 's9', which does not exist",
                "apis[2] (users).nodes[0].cluster: names cluster 'x', which does not exist",
                "routings[0] (r-canary).api: names api 'gone', which does not exist",
                "routings[1] (r-mirror).cluster: names cluster 'c7', which does not exist",
            ],
        )

    def test_authReferences(self) -> None:
        """
        An API's C{auth.anonymous} naming a consumer the file does not
        have, and an C{acl} on an API without C{auth}, are each refused
        with exit status 1 and an error naming the field; the file with
        both fixed (the consumer given, the API given C{auth}) passes.
        """
        anonymous = copy.deepcopy(BASE)
        anonymous["apis"].append(
            {
                "name": "a-guest",
                "urlPattern": "/guest",
                "nodes": [{"cluster": "c1"}],
                "auth": {"methods": ["key"], "anonymous": "ghost"},
            }
        )
        self.assertErrors(
            anonymous,
            ["apis[2] (a-guest).auth.anonymous: names consumer 'ghost', which does not exist"],
        )
        acl = copy.deepcopy(BASE)
        acl["apis"].append(
            {
                "name": "a-gold",
                "urlPattern": "/gold",
                "nodes": [{"cluster": "c1"}],
                "acl": {"allow": ["gold"]},
            }
        )
        self.assertErrors(
            acl,
            ["apis[2] (a-gold).acl: needs auth: an ACL decides by the consumer's groups"],
        )
        fixed = copy.deepcopy(anonymous)
        fixed["consumers"] = [{"name": "ghost", "groups": ["gold"]}]
        fixed["apis"].append(dict(acl["apis"][2], auth={"methods": ["key"]}))
        code, out, err = self.validate(fixed)
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(out, r"resources\.yaml: OK \(.*, 1 consumers, 4 apis, 2 routings\)\n$")

    def test_everyProblemInOnePass(self) -> None:
        """
        A resource that is not valid, a reference to a missing resource and
        a route conflict are all reported by one run: the resources that
        name the invalid one are not reported as naming a missing one (it
        exists), and those that cannot be compiled (they name what is
        missing or invalid) are left out of the compilation, the rest
        compiled.
        """
        data = copy.deepcopy(BASE)
        # Not valid: a bad address.
        data["servers"].append({"name": "s4", "addr": "nowhere"})
        # Names the invalid server: not a broken reference.
        data["clusters"].append({"name": "c3", "servers": ["s4"]})
        data["apis"] += [
            # Names a cluster that does not exist.
            {"name": "a-lost", "urlPattern": "/lost", "nodes": [{"cluster": "c9"}]},
            # Names the cluster of the invalid server: not compiled, so
            # its bad rewrite is not reported until that server is fixed.
            {
                "name": "a-later",
                "urlPattern": "/later",
                "nodes": [{"cluster": "c3", "urlRewrite": "/{nope}"}],
            },
            # Conflicts with a-users, both valid: compiled, refused.
            {
                "name": "a-users2",
                "method": "GET",
                "urlPattern": "/users/{uid}",
                "nodes": [{"cluster": "c1"}],
            },
        ]
        conflict = (
            "apis[4] (a-users2).urlPattern: 'a-users' and 'a-users2' have the same"
            " URL pattern /users/{}, method GET and host any host"
        )
        self.assertErrors(
            data,
            [
                "servers[3] (s4).addr: must be host:port",
                "apis[2] (a-lost).nodes[0].cluster: names cluster 'c9', which does not exist",
                conflict,
            ],
        )
        data["servers"][3]["addr"] = "127.0.0.1:9004"
        self.assertErrors(
            data,
            [
                "apis[2] (a-lost).nodes[0].cluster: names cluster 'c9', which does not exist",
                "apis[3] (a-later).nodes[0].urlRewrite: {nope} is not a parameter of the URL"
                " pattern",
                conflict,
            ],
        )

    def test_conflictsWithCompileErrors(self) -> None:
        """
        Two consumers holding one API key and an API whose rewrite cannot
        compile are reported by one run.
        """
        data = copy.deepcopy(BASE)
        key = {"type": "key", "id": "k", "key": "the-same-key-0123456789"}
        data["consumers"] = [
            {"name": "u1", "credentials": [key]},
            {"name": "u2", "credentials": [key]},
        ]
        data["apis"][0]["nodes"][0]["urlRewrite"] = "/v1/users/{idd}"
        errors = self.assertErrors(data, [ANY, ANY])
        self.assertIn(
            "consumers[1] (u2).credentials[0]: the API key is already a credential of"
            " consumer 'u1'",
            errors,
        )
        self.assertIn("apis[0] (a-users).nodes[0].urlRewrite: {idd} is not a parameter", errors)

    def test_routeConflict(self) -> None:
        """
        Two APIs with the same pattern, method and host are refused, as the
        gateway would refuse them.
        """
        data = copy.deepcopy(BASE)
        data["apis"].append(
            {
                "name": "a-users2",
                "method": "get",
                "urlPattern": "/users/{uid}",
                "nodes": [{"cluster": "c1"}],
            }
        )
        self.assertErrors(
            data,
            [
                "apis[2] (a-users2).urlPattern: 'a-users' and 'a-users2' have the same"
                " URL pattern /users/{}, method GET and host any host"
            ],
        )

    def test_urlRewriteChecked(self) -> None:
        """
        An API that would not compile in the gateway (a rewrite naming a
        parameter its pattern lacks) is refused, naming the field.
        """
        data = copy.deepcopy(BASE)
        data["apis"][0]["nodes"][0]["urlRewrite"] = "/v1/users/{nope}"
        self.assertErrors(
            data,
            [
                "apis[0] (a-users).nodes[0].urlRewrite:"
                " {nope} is not a parameter of the URL pattern (it has: id)"
            ],
        )

    def test_urlRewriteVariables(self) -> None:
        """
        A rewrite using a variable it does not know (one of the header
        transformations', or none at all) is refused, naming the field and
        the variable, as the admin refuses it.
        """
        data = copy.deepcopy(BASE)
        known = (
            "; a urlRewrite knows {NAME} and {*} (of the URL pattern), $param.NAME,"
            " $query.NAME, $header.NAME, $depend.ATTR.FIELD, each also as ${...}; write %24"
            " for a $ before a letter"
        )
        data["apis"][0]["nodes"][0]["urlRewrite"] = "/v1/users/{id}?r=$requestId"
        self.assertErrors(
            data,
            [
                "apis[0] (a-users).nodes[0].urlRewrite: $requestId is a header transformation"
                " variable, not a urlRewrite one (send it in a header with"
                " transform.request.set)" + known
            ],
        )
        data["apis"][0]["nodes"][0]["urlRewrite"] = "/v1/$nope.z/{id}"
        self.assertErrors(
            data,
            ["apis[0] (a-users).nodes[0].urlRewrite: unknown variable $nope.z" + known],
        )

    def test_filters(self) -> None:
        """
        A filter whose plugin is installed has its config checked; one whose
        plugin is not installed here is a warning, not an error (the
        gateway may have it).
        """
        data = copy.deepcopy(BASE)
        data["apis"][0]["filters"] = [{"name": "access-log", "config": {"a": 1}}]
        self.assertErrors(
            data,
            [
                "apis[0] (a-users).filters[0].name:"
                " filter 'access-log' refused its config: access-log takes no config"
            ],
        )
        data["apis"][0]["filters"] = [{"name": "request-id"}, {"name": "not-here"}]
        code, out, err = self.validate(data)
        self.assertEqual(code, 0, err)
        self.assertIn("OK", out)
        self.assertTrue(err.startswith("warning: "), err)
        self.assertIn(
            "apis[0] (a-users).filters[1].name:"
            " no filter plugin named 'not-here' is installed here",
            err,
        )

    def test_unworkableWarned(self) -> None:
        """
        A valid file whose cluster has no server (and no discovery), or
        whose certificate claims an SNI that is none of its names, or whose
        API allows every origin with credentials by CORS, passes with a
        warning naming each; SNIs its names cover (exactly, or by its
        wildcard), and CORS for every origin without credentials or for
        listed origins with them, are not warned of.
        """
        data = copy.deepcopy(BASE)
        data["clusters"].append({"name": "c-empty", "servers": []})
        issued = CertificateAuthority().issue(["api.example.com", "*.example.org"])
        data["certificates"] = [
            {
                "name": "cert",
                "cert": issued.chain,
                "key": issued.keyPEM,
                "snis": ["api.example.com", "x.example.org", "*.example.org", "other.example.com"],
            }
        ]
        data["apis"][0]["cors"] = {"origins": ["*"], "credentials": True}
        data["apis"][1]["cors"] = {"origins": ["*"]}
        data["apis"].append(
            {
                "name": "a-listed",
                "urlPattern": "/listed",
                "nodes": [{"cluster": "c1"}],
                "cors": {"origins": ["https://app.example.com"], "credentials": True},
            }
        )
        code, out, err = self.validate(data)
        self.assertEqual(code, 0, err)
        self.assertIn("OK", out)
        warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
        self.assertEqual(len(warnings), 3, err)
        self.assertIn(
            "clusters[2] (c-empty).servers: is empty and the cluster has no discovery", warnings[0]
        )
        self.assertIn(
            "certificates[0] (cert).snis[3]: 'other.example.com' is not a name of the"
            " certificate (it has: api.example.com, *.example.org)",
            warnings[1],
        )
        self.assertIn(
            "apis[0] (a-users).cors.origins: allows every origin (*) with credentials",
            warnings[2],
        )

    def test_fileShape(self) -> None:
        """
        An unknown top-level key (a typo), a kind that is not a list, an
        empty file and a file with none of the four lists are refused.
        """
        self.assertErrors(
            {"srevers": [], "servers": []},
            [
                "srevers: is not a known key; known keys: certificates, servers, clusters,"
                " consumers, apis, routings (proxy, admin, store, resolver, tracing, limits"
                " are ignored)"
            ],
        )
        self.assertErrors({"servers": {"s1": {}}}, ["servers: must be a list of resources"])
        self.assertErrors("", ["the file is empty"])
        self.assertErrors(
            "- a\n- b\n",
            [
                "must be a mapping of resource lists: certificates:, servers:, clusters:,"
                " consumers:, apis:, routings:"
            ],
        )
        self.assertErrors(
            {"store": "memory:"},
            ["has none of the lists certificates, servers, clusters, consumers, apis, routings"],
        )

    def test_emptyLists(self) -> None:
        """
        Explicit empty (or null) lists are a valid, empty file.
        """
        code, out, err = self.validate("servers: []\nclusters:\n")
        self.assertEqual(code, 0, err)
        self.assertIn(
            "OK (0 certificates, 0 servers, 0 clusters, 0 consumers, 0 apis, 0 routings)", out
        )

    def test_badYAML(self) -> None:
        """
        A YAML syntax error names the line; a key given twice is refused.
        """
        self.assertErrors(
            "servers:\n  - {name: a\n",
            [
                "invalid YAML at line 3, column 1: while parsing a flow mapping"
                " expected ',' or '}', but got '<stream end>'"
            ],
        )
        err = self.validate("servers: []\nservers: []\n")[2]
        self.assertIn("found duplicate key 'servers'", err)

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is an error with the reason.
        """
        code, out, err = runInProcess(["validate", "no-such-file.yaml"])
        self.assertEqual(code, 1)
        self.assertIn("no-such-file.yaml: 1 error", err)
        self.assertIn("cannot read the file: No such file or directory", err)


class CheckResourcesTests(SynchronousTestCase):
    """
    L{checkResources} checks a whole proposed state, which for C{apply}
    without C{--prune} includes what only the admin holds.
    """

    def test_adminResourcesCount(self) -> None:
        """
        A file's resource may name one that only the admin holds; messages
        name the file's resources by position, the admin's by kind/name.
        """
        resourceFile = parseResourceFile(
            {"clusters": [{"name": "c", "servers": ["s1", "s9"]}]}, "partial.yaml"
        )
        admin = normalisedState(BASE)
        merged = {kind: {**admin[kind], **resourceFile.resources[kind]} for kind in KINDS}
        self.assertEqual(
            checkResources(merged, resourceFile.label),
            (
                [Problem("clusters[0] (c).servers[1]", "names server 's9', which does not exist")],
                [],
            ),
        )
        merged["servers"]["s9"] = normalise("servers", {"name": "s9", "addr": "h:9"})
        self.assertEqual(checkResources(merged, resourceFile.label), ([], []))
        self.assertEqual(resourceFile.label("servers", "s9"), "servers/s9")

    def test_unreadableResource(self) -> None:
        """
        A resource the model cannot read (written by another version of the
        gateway) is an error, not a crash.
        """
        resources: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
        resources["servers"]["x"] = {"name": "x", "addr": "h:1", "future": True}
        errors, warnings = checkResources(resources, lambda kind, name: f"{kind}/{name}")
        self.assertEqual(
            errors, [Problem("servers/x.future", "cannot be read: is not a known field")]
        )


# -- usage ----------------------------------------------------------------------


class UsageTests(SynchronousTestCase):
    """
    The command line: subcommands, exit status 2 for usage errors, and the
    admin's address and token from the environment.
    """

    def test_helpListsCommands(self) -> None:
        """
        C{gateway --help} lists the three commands and exits 0.
        """
        code, out, err = runInProcess(["--help"])
        self.assertEqual(code, 0)
        for command in ("validate", "apply", "export"):
            self.assertRegex(out, rf"\n\s+{command}\s+\w")

    def test_usageErrors(self) -> None:
        """
        No command, an unknown command, a missing file, an unknown option,
        an admin URL that is not http(s) and a bad timeout exit with 2 and
        a usage message.
        """
        for argv in (
            [],
            ["frobnicate"],
            ["validate"],
            ["apply", "f.yaml", "--force"],
            ["export", "--admin", "ftp://host"],
            ["export", "--admin", "http://host:99999"],
            ["export", "--timeout", "0"],
        ):
            code, out, err = runInProcess(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn("usage: gateway", err, argv)
            self.assertIn("error:", err, argv)

    def test_adminDefaults(self) -> None:
        """
        C{--admin} defaults to C{$GATEWAY_ADMIN}, else the local admin, and
        C{--token} to C{$GATEWAY_TOKEN}; an explicit option wins, and a
        trailing C{/api/v1} is dropped.
        """
        args = makeParser({}).parse_args(["export"])
        self.assertEqual((args.admin, args.token, args.timeout), (DEFAULT_ADMIN, None, 10.0))
        environ = {"GATEWAY_ADMIN": "http://admin.example:9999/api/v1/", "GATEWAY_TOKEN": "t0"}
        args = makeParser(environ).parse_args(["apply", "f.yaml"])
        self.assertEqual((args.admin, args.token), ("http://admin.example:9999", "t0"))
        args = makeParser(environ).parse_args(
            ["export", "--admin", "https://other/", "--token", "t1"]
        )
        self.assertEqual((args.admin, args.token), ("https://other", "t1"))

    def test_normaliseAdminURL(self) -> None:
        """
        Admin URLs keep a path prefix (an admin behind a reverse proxy) but
        lose the API prefix and trailing slashes; others are refused.
        """
        self.assertEqual(normaliseAdminURL("http://h:1/gw/api/v1"), "http://h:1/gw")
        self.assertEqual(normaliseAdminURL(" http://h/ "), "http://h")
        for bad in ("h:9090", "http://", "file:///x", "http://h:0"):
            self.assertRaises(ValueError, normaliseAdminURL, bad)


# -- plans ----------------------------------------------------------------------


def steps(plan: Plan) -> List[str]:
    """
    @return: the C{+}, C{~} and C{-} lines of a plan's steps.
    """
    return [step.describe() for step in plan.steps]


class PlanTests(SynchronousTestCase):
    """
    L{computePlan} compares two states, normalised, and orders the changes
    so that no reference ever breaks; L{renderPlan} shows them.
    """

    def test_defaultsAreNoChange(self) -> None:
        """
        A file that leaves defaults out matches an admin that holds them
        written out; numbers compare by value and methods case-blind.
        """
        current = normalisedState(BASE)
        current["servers"]["s3"]["healthCheck"]["interval"] = 2.0
        desired = copy.deepcopy(BASE)
        desired["apis"][0]["method"] = "get"
        plan = computePlan(current, byName(desired))
        self.assertEqual(plan.steps, ())
        self.assertEqual(plan.unchanged, 9)
        self.assertEqual(renderPlan(plan), ["no changes (9 resources up to date)"])

    def test_order(self) -> None:
        """
        Creates and updates come in the order servers, clusters, apis,
        routings (what is named exists first); deletes, with C{prune}, in
        the reverse order (what names something goes first); each kind by
        name.
        """
        current = normalisedState(
            {
                "servers": [{"name": "old-s", "addr": "h:1"}, {"name": "s1", "addr": "h:1"}],
                "clusters": [{"name": "old-c", "servers": ["old-s"]}],
                "apis": [{"name": "old-a", "urlPattern": "/old", "nodes": [{"cluster": "old-c"}]}],
                "routings": [{"name": "old-r", "cluster": "old-c"}],
            }
        )
        desired = normalisedState(
            {
                "servers": [{"name": "s2", "addr": "h:2"}, {"name": "s1", "addr": "h:9"}],
                "clusters": [{"name": "c", "servers": ["s1", "s2"]}],
                "apis": [{"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}],
                "routings": [{"name": "r", "cluster": "c"}],
            }
        )
        plan = computePlan(current, desired, prune=True)
        self.assertEqual(
            steps(plan),
            [
                "~ servers/s1",
                "+ servers/s2",
                "+ clusters/c",
                "+ apis/a",
                "+ routings/r",
                "- routings/old-r",
                "- apis/old-a",
                "- clusters/old-c",
                "- servers/old-s",
            ],
        )
        self.assertEqual(
            (plan.count("create"), plan.count("update"), plan.count("delete")), (4, 1, 4)
        )
        self.assertEqual(plan.unmanaged, ())

    def test_withoutPruneNothingIsDeleted(self) -> None:
        """
        Without C{prune} the admin's resources that the file lacks are kept
        and listed as unmanaged.
        """
        current = normalisedState(BASE)
        desired = normalisedState(edited())
        plan = computePlan(current, desired)
        self.assertEqual(steps(plan), ["~ servers/s2", "+ apis/a-orders"])
        self.assertEqual(plan.unmanaged, ("routings/r-mirror",))
        self.assertEqual(
            steps(computePlan(current, desired, prune=True)),
            ["~ servers/s2", "+ apis/a-orders", "- routings/r-mirror"],
        )

    def test_stepsCarryNormalisedJSON(self) -> None:
        """
        Each step carries the normalised JSON of both sides, which is what
        C{apply} sends.
        """
        plan = computePlan(normalisedState(BASE), byName(edited()), prune=True)
        update, create, delete = plan.steps
        self.assertEqual(update.before, normalise("servers", BASE["servers"][1]))
        self.assertEqual(update.after, normalise("servers", edited()["servers"][1]))
        self.assertEqual(create.before, None)
        self.assertEqual(create.after, normalise("apis", edited()["apis"][2]))
        self.assertEqual(delete.after, None)
        self.assertEqual(delete.before, normalise("routings", BASE["routings"][1]))

    def test_render(self) -> None:
        """
        A plan shows one line per change, each update followed by the
        unified diff of its JSON indented by four spaces, a summary and a
        note about unmanaged resources.
        """
        plan = computePlan(normalisedState(BASE), byName(edited()))
        self.assertEqual(
            renderPlan(plan),
            [
                "~ servers/s2",
                "    --- servers/s2 (admin)",
                "    +++ servers/s2 (file)",
                "    @@ -1,6 +1,6 @@",
                "     {",
                '       "name": "s2",',
                '    -  "addr": "127.0.0.1:9002",',
                '    +  "addr": "127.0.0.1:9012",',
                '       "weight": 3,',
                '       "maxQPS": 0,',
                '       "healthCheck": null,',
                "+ apis/a-orders",
                "1 to create, 1 to update, 0 to delete (7 unchanged)",
                "note: 1 resource(s) of the admin are not in the file and are kept"
                " (--prune deletes them): routings/r-mirror",
            ],
        )

    def test_jsonEqual(self) -> None:
        """
        Numbers compare by value, but a boolean is not a number, and
        containers compare item by item.
        """
        self.assertTrue(jsonEqual({"a": [1, 2.0]}, {"a": [1.0, 2]}))
        self.assertFalse(jsonEqual(True, 1))
        self.assertFalse(jsonEqual(0, False))
        self.assertFalse(jsonEqual(None, 0))
        self.assertFalse(jsonEqual({"a": 1}, {"a": 1, "b": None}))
        self.assertFalse(jsonEqual([1], [1, 1]))
        self.assertFalse(jsonEqual("1", 1))


class FakeClient:
    """
    Records the writes of L{applyPlan}; fails the write to C{failOn}.
    """

    def __init__(self, failOn: Optional[str] = None) -> None:
        self.calls: List[Tuple[str, str, Any]] = []
        self.failOn = failOn

    def _call(self, method: str, kind: str, name: str, value: Any) -> None:
        if f"{kind}/{name}" == self.failOn:
            raise AdminError("409 cluster 'c9' does not exist (field nodes[0].cluster)", 409)
        self.calls.append((method, f"{kind}/{name}", value))

    def put(self, kind: str, name: str, value: Any) -> None:
        self._call("PUT", kind, name, value)

    def delete(self, kind: str, name: str) -> None:
        self._call("DELETE", kind, name, None)


class FakeBatchClient:
    """
    Records the batches of L{applyBatch}; raises C{error} when given one.
    """

    def __init__(self, error: Optional[AdminError] = None) -> None:
        self.calls: List[Tuple[Any, Any, float]] = []
        self.error = error
        self.propagation = "complete"

    def batch(self, changes: Any, revision: Any, timeout: float) -> Tuple[Any, Any]:
        if self.error is not None:
            raise self.error
        self.calls.append((changes, revision, timeout))
        return {}, {"X-Gateway-Propagation": self.propagation}


class ApplyPlanTests(SynchronousTestCase):
    """
    L{applyPlan} makes one request per step, in the plan's order, and stops
    at the first one the admin refuses.
    """

    plan = computePlan(normalisedState(BASE), normalisedState(edited()), prune=True)

    def test_requestsInOrder(self) -> None:
        """
        Creates and updates are C{PUT}s of the file's normalised JSON,
        deletes are C{DELETE}s; a line is written for each.
        """
        client, lines = FakeClient(), []
        self.assertEqual(applyPlan(client, self.plan, lines.append), 3)
        self.assertEqual(
            client.calls,
            [
                ("PUT", "servers/s2", normalise("servers", edited()["servers"][1])),
                ("PUT", "apis/a-orders", normalise("apis", edited()["apis"][2])),
                ("DELETE", "routings/r-mirror", None),
            ],
        )
        self.assertEqual(
            lines, ["updated servers/s2", "created apis/a-orders", "deleted routings/r-mirror"]
        )

    def test_stopsAtFirstError(self) -> None:
        """
        A refused step raises L{CLIError} with the admin's message and
        field and how far it got; no later step is tried.
        """
        client, lines = FakeClient(failOn="apis/a-orders"), []
        error = self.assertRaises(CLIError, applyPlan, client, self.plan, lines.append)
        self.assertEqual(
            error.message,
            "cannot create apis/a-orders: 409 cluster 'c9' does not exist (field nodes[0].cluster)"
            "\nstopped after 1 of 3 change(s); the rest were not made",
        )
        self.assertEqual([call[1] for call in client.calls], ["servers/s2"])
        self.assertEqual(lines, ["updated servers/s2"])

    def test_batch(self) -> None:
        """
        L{applyBatch} sends every step as one batch in the plan's order
        (creates and updates as puts of the file's normalised JSON, deletes
        as deletes), with the revision the plan was made from, waiting
        L{batchTimeout}; once it is done, a line for each step; it says
        whether the change serves on every proxy process.
        """
        client, lines = FakeBatchClient(), []
        self.assertTrue(applyBatch(client, self.plan, 12, 30.0, lines.append))
        self.assertEqual(
            client.calls,
            [
                (
                    [
                        {
                            "op": "put",
                            "kind": "servers",
                            "name": "s2",
                            "value": normalise("servers", edited()["servers"][1]),
                        },
                        {
                            "op": "put",
                            "kind": "apis",
                            "name": "a-orders",
                            "value": normalise("apis", edited()["apis"][2]),
                        },
                        {"op": "delete", "kind": "routings", "name": "r-mirror"},
                    ],
                    12,
                    30.0,
                )
            ],
        )
        self.assertEqual(
            lines, ["updated servers/s2", "created apis/a-orders", "deleted routings/r-mirror"]
        )
        client.propagation = "incomplete"
        self.assertFalse(applyBatch(client, self.plan, 12, 30.0, lines.append))

    def test_batchRefused(self) -> None:
        """
        A refused batch raises L{CLIError} with the admin's status and
        every error, each field of a change named by its step's resource,
        saying that nothing was changed; no line is written.
        """
        error = AdminError(
            "409 cluster 'c9' does not exist (field changes[1].value.nodes[0].cluster)",
            409,
            "changes[1].value.nodes[0].cluster",
            [
                Problem("changes[1].value.nodes[0].cluster", "cluster 'c9' does not exist"),
                Problem("changes[2]", "api 'x' is still used by routings/r (api)"),
            ],
            "cluster 'c9' does not exist",
        )
        client, lines = FakeBatchClient(error), []
        refused = self.assertRaises(
            CLIError, applyBatch, client, self.plan, None, 30.0, lines.append
        )
        self.assertEqual(
            refused.message,
            "cannot apply the 3 change(s): 409\n"
            "  apis/a-orders.nodes[0].cluster: cluster 'c9' does not exist\n"
            "  routings/r-mirror: api 'x' is still used by routings/r (api)\n"
            "nothing was changed (the admin makes all of a plan's changes or none)",
        )
        self.assertEqual(lines, [])
        client = FakeBatchClient(AdminError("409 the configuration changed", 409, "revision"))
        refused = self.assertRaises(CLIError, applyBatch, client, self.plan, 3, 30.0, lines.append)
        self.assertIn("  revision: 409 the configuration changed\n", refused.message)

    def test_batchTimeout(self) -> None:
        """
        A batch waits the command's timeout plus a second per 200 changes.
        """
        self.assertEqual(batchTimeout(10.0, self.plan), 10.0 + 3 / 200)
        many = Plan(tuple(Step("create", "apis", f"a{i}", None, {}) for i in range(10_000)))
        self.assertEqual(batchTimeout(10.0, many), 60.0)

    def test_diffShowsOnlyWhatChanged(self) -> None:
        """
        An update's diff shows the fields that differ only: a number the
        admin holds as written (C{50}) and the file's default of the same
        value (C{50.0}) is no changed line (the diff showed C{- 50} and
        C{+ 50.0} beside the real change).
        """
        breaker = {"failureRateToOpen": 50, "minRequests": 3, "openTimeout": 600}
        before = normalise("servers", {"name": "s", "addr": "h:1", "circuitBreaker": breaker})
        before["circuitBreaker"]["failureRateToOpen"] = 50
        exported = {"minRequests": 3, "openTimeout": 601}
        after = normalise("servers", {"name": "s", "addr": "h:1", "circuitBreaker": exported})
        self.assertEqual(repr(after["circuitBreaker"]["failureRateToOpen"]), "50.0")
        changed = [
            line
            for line in Step("update", "servers", "s", before, after).diff()
            if line[:1] in "+-" and not line.startswith(("---", "+++"))
        ]
        self.assertEqual(changed, ['-    "openTimeout": 600,', '+    "openTimeout": 601,'])

    def test_stepDescribe(self) -> None:
        """
        Steps show as C{+}, C{~} and C{-} lines; only updates have a diff.
        """
        self.assertEqual(Step("create", "servers", "x", None, {}).describe(), "+ servers/x")
        self.assertEqual(Step("delete", "apis", "y", {}, None).describe(), "- apis/y")
        self.assertEqual(Step("create", "servers", "x", None, {"a": 1}).diff(), [])


# -- export ---------------------------------------------------------------------


class ExportTests(SynchronousTestCase):
    """
    C{export} writes the four lists sorted by name, default-valued fields
    left out, in a form C{apply} reads back as the same resources.
    """

    def test_defaultsLeftOut(self) -> None:
        """
        Fields that hold their model default are left out, in nested
        objects and lists of objects too; others are kept, a default of
        C{null} replaced by an object of defaults included.
        """
        server = normalise(
            "servers",
            {
                "name": "s",
                "addr": "h:1",
                "weight": 0,
                "healthCheck": {"path": "/h", "interval": 10},
                "passiveHealth": {},
            },
        )
        self.assertEqual(
            compactResource("servers", server),
            {
                "name": "s",
                "addr": "h:1",
                "weight": 0,
                "healthCheck": {"path": "/h"},
                "passiveHealth": {},
            },
        )
        self.assertEqual(
            compactResource("apis", normalise("apis", BASE["apis"][1])),
            {
                "name": "a-overview",
                "urlPattern": "/users/{id}/overview",
                "nodes": [
                    {"cluster": "c1", "urlRewrite": "/v1/users/{id}", "attrName": "user"},
                    {"cluster": "c2", "attrName": "extra", "timeout": 2, "required": False},
                ],
                "method": "GET",
                "rateLimit": {"rate": 10, "key": "ip"},
            },
        )
        self.assertEqual(
            compactResource("routings", normalise("routings", BASE["routings"][1])),
            {
                "name": "r-mirror",
                "cluster": "c2",
                "conditions": [{"source": "query", "op": "exists", "name": "debug"}],
                "strategy": "mirror",
            },
        )

    def test_compactMeansTheSame(self) -> None:
        """
        Every compact resource normalises back to what it was made from.
        """
        for kind, items in normalisedState(BASE).items():
            for value in items.values():
                self.assertEqual(normalise(kind, compactResource(kind, value)), value)

    def test_document(self) -> None:
        """
        The document lists every kind (empty ones as C{[]}), each sorted by
        name, and parses as a resource file to the same resources.
        """
        state = normalisedState(BASE)
        document = exportDocument(state, "http://127.0.0.1:9090")
        self.assertTrue(
            document.startswith("# Gateway resources exported from http://127.0.0.1:9090")
        )
        data = yaml.safe_load(document)
        self.assertEqual(list(data), list(KINDS))
        self.assertEqual([s["name"] for s in data["servers"]], ["s1", "s2", "s3"])
        self.assertEqual([a["name"] for a in data["apis"]], ["a-overview", "a-users"])
        self.assertEqual(data["servers"][0], {"name": "s1", "addr": "127.0.0.1:9001"})
        self.assertIn("servers: [s1, s2]", document)
        self.assertEqual(parseResourceFile(data, "export").resources, state)

        # A certificate's PEM is a literal block, line for line, and reads
        # back the same.
        issued = selfSigned(["api.example.com"])
        withCertificate = dict(
            state, certificates={"c": {"name": "c", "cert": issued.cert, "snis": []}}
        )
        document = exportDocument(withCertificate)
        self.assertIn("  cert: |\n    -----BEGIN CERTIFICATE-----\n", document)
        self.assertEqual(yaml.safe_load(document)["certificates"][0]["cert"], issued.cert)

        empty = yaml.safe_load(exportDocument({kind: {} for kind in KINDS}))
        self.assertEqual(empty, {kind: [] for kind in KINDS})
        self.assertEqual(
            parseResourceFile(empty, "export").counts(),
            "0 certificates, 0 servers, 0 clusters, 0 consumers, 0 apis, 0 routings",
        )


# -- the admin client -----------------------------------------------------------


class FakeAnswer:
    """
    What L{urllib.request.urlopen} returns.
    """

    def __init__(
        self,
        status: int,
        body: bytes,
        contentType: str = "application/json",
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.status = status
        self.headers = email.message.Message()
        self.headers["Content-Type"] = contentType
        for name, value in (headers or {}).items():
            self.headers[name] = value
        self._body = body

    def read(self) -> bytes:
        return self._body

    def __enter__(self) -> FakeAnswer:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def httpError(
    status: int, body: bytes, contentType: str = "application/json"
) -> urllib.error.HTTPError:
    headers = email.message.Message()
    headers["Content-Type"] = contentType
    return urllib.error.HTTPError("http://x", status, "error", headers, io.BytesIO(body))


class FakeURLOpen:
    """
    Stands in for L{urllib.request.urlopen}: records requests and answers
    (or raises) what it was given.
    """

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.requests: List[Tuple[Any, float]] = []

    def __call__(self, request: Any, timeout: float) -> Any:
        self.requests.append((request, timeout))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class AdminClientTests(SynchronousTestCase):
    """
    L{AdminClient} sends JSON with the bearer token and turns every way a
    request can fail into an L{AdminError} with a clear message.
    """

    def client(
        self, *outcomes: Any, token: Optional[str] = "tok"
    ) -> Tuple[AdminClient, FakeURLOpen]:
        urlopen = FakeURLOpen(*outcomes)
        return AdminClient("http://admin.test:9090/", token, 10.0, urlopen), urlopen

    def failure(self, *outcomes: Any, token: Optional[str] = "tok") -> AdminError:
        client, _ = self.client(*outcomes, token=token)
        return self.assertRaises(AdminError, client.request, "GET", "/servers")

    def test_request(self) -> None:
        """
        A request goes to C{/api/v1} under the admin URL with the token,
        C{Accept} and, with a body, JSON; names are quoted in paths; the
        timeout is passed on; the JSON answer is decoded, C{204} is
        L{None}.
        """
        client, urlopen = self.client(FakeAnswer(201, b'{"name": "a b"}'), FakeAnswer(204, b""))
        self.assertEqual(client.put("servers", "a b", {"name": "a b"}), {"name": "a b"})
        self.assertIsNone(client.delete("servers", "a/b"))
        (put, timeout), (delete, _) = urlopen.requests
        self.assertEqual(
            (put.method, put.full_url), ("PUT", "http://admin.test:9090/api/v1/servers/a%20b")
        )
        self.assertEqual(put.get_header("Authorization"), "Bearer tok")
        self.assertEqual(put.get_header("Content-type"), "application/json")
        self.assertEqual(json.loads(put.data), {"name": "a b"})
        self.assertEqual(timeout, 10.0)
        self.assertEqual(
            (delete.method, delete.full_url),
            ("DELETE", "http://admin.test:9090/api/v1/servers/a%2Fb"),
        )
        self.assertIsNone(delete.data)

    def test_config(self) -> None:
        """
        L{AdminClient.config} reads every resource in one request, C{GET
        /api/v1/config}, keyed by kind and name, with the revision it read
        (C{X-Gateway-Revision}); a kind the admin leaves out has none.
        """
        body = {"servers": [{"name": "s1", "addr": "h:1"}], "apis": []}
        client, urlopen = self.client(
            FakeAnswer(200, json.dumps(body).encode(), headers={"X-Gateway-Revision": "41"})
        )
        state, revision = client.config()
        self.assertEqual(
            state, {kind: {} for kind in KINDS} | {"servers": {"s1": body["servers"][0]}}
        )
        self.assertEqual(revision, 41)
        ((request, _),) = urlopen.requests
        self.assertEqual(
            (request.method, request.full_url), ("GET", "http://admin.test:9090/api/v1/config")
        )

    def test_configNotAConfiguration(self) -> None:
        """
        An answer to C{GET /api/v1/config} that is not a list of resources
        per kind is an L{AdminError} that asks whether the URL is the
        admin's.
        """
        client, _ = self.client(FakeAnswer(200, b'{"servers": [1]}'))
        error = self.assertRaises(AdminError, client.config)
        self.assertIn("the answer is not a configuration", error.message)

    def test_batch(self) -> None:
        """
        L{AdminClient.batch} posts the changes and the revision to C{POST
        /api/v1/batch} with the timeout given, and gives the answer and its
        headers.
        """
        answer = FakeAnswer(200, b'{"created": 1}', headers={"X-Gateway-Propagation": "complete"})
        client, urlopen = self.client(answer)
        changes = [{"op": "delete", "kind": "apis", "name": "a"}]
        body, headers = client.batch(changes, 7, 42.0)
        self.assertEqual(body, {"created": 1})
        self.assertEqual(headers.get("X-Gateway-Propagation"), "complete")
        ((request, timeout),) = urlopen.requests
        self.assertEqual(request.full_url, "http://admin.test:9090/api/v1/batch")
        self.assertEqual(json.loads(request.data), {"changes": changes, "revision": 7})
        self.assertEqual(timeout, 42.0)

    def test_state(self) -> None:
        """
        From an admin without C{GET /api/v1/config} (404: an older
        gateway), L{AdminClient.config} and L{AdminClient.state} read
        every collection instead, keyed by name, and know no revision.
        """
        client, urlopen = self.client(
            httpError(404, b'{"error": "no such resource"}'),
            FakeAnswer(200, b"[]"),
            FakeAnswer(200, b'[{"name": "s1", "addr": "h:1"}]'),
            FakeAnswer(200, b"[]"),
            FakeAnswer(200, b"[]"),
            FakeAnswer(200, b"[]"),
            FakeAnswer(200, b"[]"),
        )
        self.assertEqual(
            client.config(),
            (
                {
                    "certificates": {},
                    "servers": {"s1": {"name": "s1", "addr": "h:1"}},
                    "clusters": {},
                    "consumers": {},
                    "apis": {},
                    "routings": {},
                },
                None,
            ),
        )
        self.assertEqual(
            [r.full_url.rsplit("/", 1)[1] for r, _ in urlopen.requests], ["config", *KINDS]
        )

    def test_noTokenNoHeader(self) -> None:
        """
        Without a token no C{Authorization} header is sent.
        """
        client, urlopen = self.client(FakeAnswer(200, b"[]"), token=None)
        client.request("GET", "/servers")
        self.assertFalse(urlopen.requests[0][0].has_header("Authorization"))

    def test_connectionRefused(self) -> None:
        """
        A refused connection names the admin URL and says so.
        """
        error = self.failure(
            urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        )
        self.assertEqual(
            error.message,
            "cannot reach the admin at http://admin.test:9090: connection refused"
            " (is the gateway's admin running there? see --admin or $GATEWAY_ADMIN)",
        )
        self.assertIsNone(error.status)

    # Connects to a real port on 127.0.0.1: an integration test.
    @pytest.mark.integration
    def test_connectionRefusedForReal(self) -> None:
        """
        With the real L{urllib.request.urlopen}, a port nobody listens on
        gives the same message.
        """
        client = AdminClient(f"http://127.0.0.1:{freePort()}", "tok")
        error = self.assertRaises(AdminError, client.state)
        self.assertIn("connection refused", error.message)

    def test_timeout(self) -> None:
        """
        No answer in time (while connecting or reading) says how long it
        waited.
        """
        for outcome in (
            urllib.error.URLError(socket.timeout("timed out")),
            socket.timeout("timed out"),
        ):
            error = self.failure(outcome)
            self.assertEqual(
                error.message, "the admin at http://admin.test:9090 did not answer within 10 s"
            )

    def test_otherConnectionErrors(self) -> None:
        """
        A connection reset or a broken HTTP answer is reported with its
        reason.
        """
        error = self.failure(ConnectionResetError(104, "Connection reset by peer"))
        self.assertEqual(
            error.message,
            "the connection to the admin at http://admin.test:9090 failed:"
            " Connection reset by peer",
        )

    def test_unauthorized(self) -> None:
        """
        A 401 says whether the token was refused or missing.
        """
        body = b'{"error": "missing or invalid admin token", "field": ""}'
        error = self.failure(httpError(401, body))
        self.assertEqual(
            (error.status, error.message),
            (401, "401 Unauthorized: the admin refused the token; check --token or $GATEWAY_TOKEN"),
        )
        error = self.failure(httpError(401, body), token=None)
        self.assertIn(
            "the admin needs a token; pass it with --token or $GATEWAY_TOKEN", error.message
        )

    def test_notJSON(self) -> None:
        """
        An answer that is not JSON (another web server at that address)
        says so, with the status and content type.
        """
        error = self.failure(FakeAnswer(200, b"<html>hello</html>", "text/html"))
        self.assertEqual(
            error.message,
            "GET http://admin.test:9090/api/v1/servers: the answer (status 200, Content-Type"
            " text/html) is not JSON; is http://admin.test:9090 the gateway's admin?",
        )
        error = self.failure(httpError(502, b"Bad Gateway", "text/plain"))
        self.assertIn("(status 502, Content-Type text/plain) is not JSON", error.message)

    def test_notAList(self) -> None:
        """
        A collection that is not a list of resources is refused.
        """
        client, _ = self.client(FakeAnswer(200, b'{"status": "ok"}'))
        error = self.assertRaises(AdminError, client.listKind, "servers")
        self.assertIn("the answer is not a list of resources", error.message)

    def test_apiError(self) -> None:
        """
        An error answer gives its status, message and field.
        """
        body = b'{"error": "cluster \'c9\' does not exist", "field": "nodes[0].cluster"}'
        client, _ = self.client(httpError(409, body))
        error = self.assertRaises(AdminError, client.put, "apis", "a", {"name": "a"})
        self.assertEqual(
            (error.status, error.field, error.message),
            (409, "nodes[0].cluster", "409 cluster 'c9' does not exist (field nodes[0].cluster)"),
        )

    def test_apiErrors(self) -> None:
        """
        An invalid resource's answer lists every error: the message has
        them one a line, and L{AdminError.errors} holds them.
        """
        body = json.dumps(
            {
                "error": "must be host:port",
                "field": "addr",
                "errors": [
                    {"field": "addr", "error": "must be host:port"},
                    {"field": "weight", "error": "must be at least 0"},
                ],
            }
        ).encode()
        client, _ = self.client(httpError(400, body))
        error = self.assertRaises(AdminError, client.put, "servers", "s", {"name": "s"})
        self.assertEqual(
            error.message, "400: 2 errors\n  addr: must be host:port\n  weight: must be at least 0"
        )
        self.assertEqual(
            error.errors,
            [Problem("addr", "must be host:port"), Problem("weight", "must be at least 0")],
        )
        self.assertEqual(error.field, "addr")

    def test_applyShowsEveryError(self) -> None:
        """
        C{gateway apply} whose batch the admin refuses prints each of the
        admin's errors, each field named by the resource it is about, and
        says that nothing was changed.
        """
        body = json.dumps(
            {
                "error": "has the parameter 'id' twice",
                "field": "changes[0].value.urlPattern",
                "errors": [
                    {
                        "field": "changes[0].value.urlPattern",
                        "error": "has the parameter 'id' twice",
                    },
                    {"field": "changes[0].value.nodes[1].attrName", "error": "duplicate 'x'"},
                    {"field": "revision", "error": "must be an integer >= 0"},
                ],
            }
        ).encode()
        empty = FakeAnswer(200, b"{}", headers={"X-Gateway-Revision": "3"})
        urlopen = FakeURLOpen(empty, httpError(400, body))
        import gateway.cli.main as main

        self.patch(
            main,
            "AdminClient",
            lambda url, token, timeout: AdminClient(url, token, timeout, urlopen),
        )
        directory = Path(self.mktemp())
        directory.mkdir()
        resources = {"servers": [{"name": "s1", "addr": "127.0.0.1:1"}]}
        code, out, err = runInProcess(["apply", writeFile(directory, "r.yaml", resources)])
        self.assertEqual(code, 1)
        self.assertIn(
            "cannot apply the 1 change(s): 400\n"
            "  servers/s1.urlPattern: has the parameter 'id' twice\n"
            "  servers/s1.nodes[1].attrName: duplicate 'x'\n"
            "  revision: must be an integer >= 0\n"
            "nothing was changed (the admin makes all of a plan's changes or none)\n",
            err,
        )
        self.assertEqual(out, "")
        batch = json.loads(urlopen.requests[1][0].data)
        self.assertEqual(batch["revision"], 3)
        self.assertEqual(
            batch["changes"],
            [
                {
                    "op": "put",
                    "kind": "servers",
                    "name": "s1",
                    "value": normalise("servers", resources["servers"][0]),
                }
            ],
        )

    def test_applyOlderAdmin(self) -> None:
        """
        To an admin without C{/api/v1/config} and C{/api/v1/batch} (an
        older gateway), C{gateway apply} reads the collections and writes
        one resource a request, as before.
        """
        empty = FakeAnswer(200, b"[]")
        urlopen = FakeURLOpen(
            httpError(404, b'{"error": "no such resource"}'),
            *[empty for _ in KINDS],
            FakeAnswer(201, b"{}"),
        )
        import gateway.cli.main as main

        self.patch(
            main,
            "AdminClient",
            lambda url, token, timeout: AdminClient(url, token, timeout, urlopen),
        )
        directory = Path(self.mktemp())
        directory.mkdir()
        resources = {"servers": [{"name": "s1", "addr": "127.0.0.1:1"}]}
        code, out, err = runInProcess(["apply", writeFile(directory, "r.yaml", resources)])
        self.assertEqual((code, err), (0, ""))
        self.assertIn("created servers/s1\n", out)
        put = urlopen.requests[-1][0]
        self.assertEqual((put.method, put.full_url.rsplit("/", 2)[1:]), ("PUT", ["servers", "s1"]))

    def test_notFoundCollection(self) -> None:
        """
        A 404 for a collection hints that the URL is not the admin's.
        """
        error = self.failure(httpError(404, b'{"error": "no API matches this request"}'))
        self.assertEqual(
            error.message,
            "404 no API matches this request; is http://admin.test:9090 the gateway's admin?",
        )


# -- integration ------------------------------------------------------------------


def cli(*args: str, env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """
    Run C{python -m gateway.cli.main ARGS} as a subprocess, without any
    C{GATEWAY_*} variable of the test's environment.
    """
    environ = {k: v for k, v in subprocessEnv().items() if not k.startswith("GATEWAY_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def adminState(gateway: GatewayProcess) -> Dict[str, Dict[str, Any]]:
    """
    @return: C{{kind: {name: JSON}}} as the admin serves it.
    """
    state = {}
    for kind in KINDS:
        answer = gateway.admin("GET", f"/api/v1/{kind}")
        assert answer.status == 200, answer
        state[kind] = {item["name"]: item for item in answer.json()}
    return state


def startEmptyGateway(gateways: Any) -> GatewayProcess:
    """
    @return: a gateway (proxy and admin, file store) that holds nothing.
    """
    gateway = gateways({"proxy": {}, "admin": {"token": TOKEN}, "store": "file:data.json"})
    assert adminState(gateway) == {kind: {} for kind in KINDS}
    return gateway


def changeLines(output: str) -> List[str]:
    """
    @return: the C{+}, C{~} and C{-} lines of a plan (diff lines are
        indented, so they are not among them).
    """
    return [line for line in output.splitlines() if line[:2] in ("+ ", "~ ", "- ")]


@pytest.mark.integration
class CLIIntegrationTests:
    """
    The real command, run as a subprocess, against a real gateway's admin.
    """

    def test_applyToEmptyThenExportUnchanged(self, gateways: Any, tmp_path: Path) -> None:
        """
        Applying a file to an empty gateway creates every resource in
        dependency order, and the admin then holds exactly the file's
        resources; exporting gives them back (the exported YAML parses to
        the same resources, defaults left out), and applying the export is
        no change.
        """
        gateway = startEmptyGateway(gateways)
        admin = ["--admin", gateway.adminURL, "--token", TOKEN]
        path = writeFile(tmp_path, "base.yaml", BASE)

        done = cli("apply", path, *admin)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "created servers/s1",
            "created servers/s2",
            "created servers/s3",
            "created clusters/c1",
            "created clusters/c2",
            "created apis/a-overview",
            "created apis/a-users",
            "created routings/r-canary",
            "created routings/r-mirror",
            f"applied 9 change(s) to {gateway.adminURL}: 9 created, 0 updated, 0 deleted"
            " (0 unchanged)",
        ]
        assert adminState(gateway) == normalisedState(BASE)

        exportPath = tmp_path / "exported.yaml"
        done = cli("export", *admin, "-o", str(exportPath))
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert "wrote" in done.stderr
        exported = yaml.safe_load(exportPath.read_text(encoding="utf-8"))
        assert parseResourceFile(exported, "export").resources == normalisedState(BASE)
        assert exported["servers"][0] == {"name": "s1", "addr": "127.0.0.1:9001"}
        toStdout = cli("export", *admin)
        assert toStdout.returncode == 0, toStdout.stderr
        assert toStdout.stdout == exportPath.read_text(encoding="utf-8")

        for extra in ([], ["--prune", "--dry-run"]):
            done = cli("apply", str(exportPath), *admin, *extra)
            assert done.returncode == 0, done.stderr
            assert changeLines(done.stdout) == []
            assert "no changes (9 resources up to date)" in done.stdout
        assert adminState(gateway) == normalisedState(BASE)

    def test_applyEditedFileChangesOnlyTheDiff(self, gateways: Any, tmp_path: Path) -> None:
        """
        With one server changed, one API added and one routing removed, the
        dry run lists exactly those three changes (the routing only with
        C{--prune}) and changes nothing; applying makes exactly them.
        """
        gateway = startEmptyGateway(gateways)
        admin = ["--admin", gateway.adminURL, "--token", TOKEN]
        assert cli("apply", writeFile(tmp_path, "base.yaml", BASE), *admin).returncode == 0
        before = adminState(gateway)
        path = writeFile(tmp_path, "edited.yaml", edited())

        done = cli("apply", path, *admin, "--dry-run")
        assert done.returncode == 0, done.stderr
        assert changeLines(done.stdout) == ["~ servers/s2", "+ apis/a-orders"]
        assert "kept (--prune deletes them): routings/r-mirror" in done.stdout

        done = cli("apply", path, *admin, "--dry-run", "--prune")
        assert done.returncode == 0, done.stderr
        assert changeLines(done.stdout) == [
            "~ servers/s2",
            "+ apis/a-orders",
            "- routings/r-mirror",
        ]
        assert '    -  "addr": "127.0.0.1:9002",' in done.stdout.splitlines()
        assert '    +  "addr": "127.0.0.1:9012",' in done.stdout.splitlines()
        assert "1 to create, 1 to update, 1 to delete (7 unchanged)" in done.stdout
        assert "dry run: nothing was changed" in done.stdout
        assert adminState(gateway) == before

        done = cli("apply", path, *admin, "--prune")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:3] == [
            "updated servers/s2",
            "created apis/a-orders",
            "deleted routings/r-mirror",
        ]
        after = adminState(gateway)
        assert after == normalisedState(edited())
        changed = {
            f"{kind}/{name}"
            for kind in KINDS
            for name in set(before[kind]) | set(after[kind])
            if before[kind].get(name) != after[kind].get(name)
        }
        assert changed == {"servers/s2", "apis/a-orders", "routings/r-mirror"}

    def test_badToken(self, gateways: Any, tmp_path: Path) -> None:
        """
        A wrong or missing token exits 1 with a message about the token,
        and changes nothing.
        """
        gateway = startEmptyGateway(gateways)
        path = writeFile(tmp_path, "base.yaml", BASE)
        done = cli("apply", path, "--admin", gateway.adminURL, "--token", "wrong")
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.strip() == (
            "error: 401 Unauthorized: the admin refused the token; check --token or $GATEWAY_TOKEN"
        )
        done = cli("export", "--admin", gateway.adminURL)
        assert done.returncode == 1
        assert "the admin needs a token" in done.stderr
        assert adminState(gateway) == {kind: {} for kind in KINDS}

    def test_environment(self, gateways: Any, tmp_path: Path) -> None:
        """
        C{$GATEWAY_ADMIN} and C{$GATEWAY_TOKEN} stand in for the options.
        """
        gateway = startEmptyGateway(gateways)
        env = {"GATEWAY_ADMIN": gateway.adminURL + "/api/v1", "GATEWAY_TOKEN": TOKEN}
        done = cli("apply", writeFile(tmp_path, "base.yaml", BASE), env=env)
        assert done.returncode == 0, done.stderr
        assert adminState(gateway) == normalisedState(BASE)

    def test_refusedChangeChangesNothing(self, gateways: Any, tmp_path: Path) -> None:
        """
        When the admin refuses a change (here an API naming a filter plugin
        the gateway lacks, which the command only warns about: 400, a rule
        the schema states in words only), apply exits 1 with the admin's
        message and the field, named by its resource, and nothing was
        changed: the admin applies a plan's changes all or none.
        """
        gateway = startEmptyGateway(gateways)
        data = copy.deepcopy(BASE)
        data["apis"][1]["filters"] = [{"name": "no-such-filter"}]
        done = cli(
            "apply",
            writeFile(tmp_path, "bad.yaml", data),
            "--admin",
            gateway.adminURL,
            "--token",
            TOKEN,
        )
        assert done.returncode == 1
        assert "no filter plugin named 'no-such-filter' is installed here" in done.stderr
        assert "error: cannot apply the 9 change(s): 400\n" in done.stderr
        assert (
            "  apis/a-overview.filters[0].name: no filter plugin named 'no-such-filter'"
            in done.stderr
        )
        assert "nothing was changed" in done.stderr
        assert adminState(gateway) == {kind: {} for kind in KINDS}

    def test_referencesCheckedBeforeAnyChange(self, gateways: Any, tmp_path: Path) -> None:
        """
        Without C{--prune} a file may name resources that only the admin
        holds; with C{--prune} they would be deleted, so the same file is
        refused before any change.
        """
        gateway = startEmptyGateway(gateways)
        admin = ["--admin", gateway.adminURL, "--token", TOKEN]
        assert cli("apply", writeFile(tmp_path, "base.yaml", BASE), *admin).returncode == 0
        partial = {"clusters": [{"name": "c3", "servers": ["s1"]}]}
        path = writeFile(tmp_path, "partial.yaml", partial)

        done = cli("apply", path, *admin, "--prune")
        assert done.returncode == 1
        assert "clusters[0] (c3).servers[0]: names server 's1', which does not exist" in done.stderr
        assert f"nothing was changed on {gateway.adminURL}" in done.stderr
        assert adminState(gateway) == normalisedState(BASE)

        done = cli("apply", path, *admin)
        assert done.returncode == 0, done.stderr
        assert adminState(gateway)["clusters"]["c3"] == normalise(
            "clusters", partial["clusters"][0]
        )

    def test_certificatesAndConsumersInOneBatch(self, gateways: Any, tmp_path: Path) -> None:
        """
        C{apply} sends certificates (their PEM files inlined) and consumers
        in its one batch; C{export} leaves out their keys and secrets;
        applying the export back is no change; an edited export (a
        certificate's SNIs, a consumer's groups) applies as one batch that
        keeps the stored key and secret.
        """
        gateway = startEmptyGateway(gateways)
        assert gateway.configPath is not None
        admin = ["--admin", gateway.adminURL, "--token", TOKEN]
        issued = CertificateAuthority().issue(["api.example.com"])
        writePEM(tmp_path, issued, "api")
        secret = "k7Rj2Qw9Lx4Pz8Vn3Ts6Ym1B"
        resources = {
            "certificates": [
                {"name": "api", "certFile": "api.crt", "keyFile": "api.key", "snis": ["api.test"]}
            ],
            "consumers": [{"name": "app", "credentials": [{"type": "key", "key": secret}]}],
        }
        done = cli("apply", writeFile(tmp_path, "tls.yaml", resources), *admin)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == ["created certificates/api", "created consumers/app"]
        assert "applied 2 change(s)" in done.stdout

        exportPath = tmp_path / "exported.yaml"
        done = cli("export", *admin, "-o", str(exportPath))
        assert done.returncode == 0, done.stderr
        text = exportPath.read_text(encoding="utf-8")
        assert "PRIVATE KEY" not in text and secret not in text
        done = cli("apply", str(exportPath), *admin)
        assert done.returncode == 0, done.stderr
        assert "no changes (2 resources up to date)" in done.stdout
        storePath = gateway.configPath.parent / "data.json"
        before = json.loads(storePath.read_text())["resources"]

        exported = yaml.safe_load(text)
        exported["certificates"][0]["snis"] = ["www.test"]
        exported["consumers"][0]["groups"] = ["gold"]
        done = cli("apply", writeFile(tmp_path, "edited.yaml", exported), *admin, "--dry-run")
        assert done.returncode == 0, done.stderr
        assert issued.keyBody()[:40] not in done.stdout
        done = cli("apply", writeFile(tmp_path, "edited.yaml", exported), *admin)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:2] == ["updated certificates/api", "updated consumers/app"]
        assert adminState(gateway)["certificates"]["api"]["snis"] == ["www.test"]
        stored = json.loads(storePath.read_text())["resources"]
        assert stored["certificates"]["api"]["key"] == issued.keyPEM
        assert stored["consumers"]["app"]["groups"] == ["gold"]
        assert (
            stored["consumers"]["app"]["credentials"] == before["consumers"]["app"]["credentials"]
        )
