"""
Tests for L{gateway.routing.rewrite}: the variables a C{urlRewrite} knows,
the C{$} it keeps as it is, and what it refuses, through L{Rewrite} itself,
a proxy in memory, the admin and C{gateway validate}.
"""

from __future__ import annotations

from typing import Any, Dict

from memorygateway import MemoryGateway
from test_admin_api import CLUSTER, SERVER
from test_admin_batch import BatchTestCase
from twisted.trial.unittest import SynchronousTestCase

from gateway.routing.rewrite import Rewrite

#: The rewrite of the user review: known variables, header transformation
#: ones and a braced one.
REVIEWED = "/y/{id}?p=$param.id&c=$consumer.name&q=$query.x&r=$requestId&t=${query.x}"


def rewriteAPI(rewrite: str, pattern: str = "/x2/{id}") -> Dict[str, Any]:
    """
    @return: an API of the memory gateway's cluster C{c} with one rewrite.
    """
    return {"name": "a2", "urlPattern": pattern, "nodes": [{"cluster": "c", "urlRewrite": rewrite}]}


class KnownVariableTests(SynchronousTestCase):
    """
    What a rewrite expands, as a backend receives it.
    """

    def sent(self, rewrite: str, target: str, pattern: str = "/x2/{id}") -> bytes:
        gateway = MemoryGateway([rewriteAPI(rewrite, pattern)])
        answer = gateway.request("GET", target, [("X-Lang", "de fr")])
        self.assertEqual(answer.code, 200, answer.body)
        return gateway.lastSent()[2]

    def test_param(self) -> None:
        """
        C{$param.NAME} and C{${param.NAME}} are the URL pattern's parameter,
        as C{{NAME}} is, percent-encoded.
        """
        self.assertEqual(
            self.sent("/y/{id}/$param.id/${param.id}x", "/x2/a%20b"), b"/y/a%20b/a%20b/a%20bx"
        )

    def test_braces(self) -> None:
        """
        Braces end a name where text follows it: C{${query.x}.json} is the
        query parameter C{x} then C{.json}, where C{$query.x.json} is the
        parameter C{x.json}; every family may be braced.
        """
        self.assertEqual(
            self.sent(
                "/y/${query.x}.json?a=$query.x.json&h=${header.X-Lang}", "/x2/5?x=1&x.json=2"
            ),
            b"/y/1.json?a=2&h=de%20fr",
        )

    def test_depend(self) -> None:
        """
        C{$depend} variables, braced or not, name the nodes they read.
        """
        rewrite = Rewrite("/u/$depend.user.id/${depend.account.items.0}", ())
        self.assertEqual(rewrite.depends, ("user", "account"))

    def test_literalDollar(self) -> None:
        """
        A C{$} that is not followed by a letter or C{{} is sent as it is:
        at the end, before a digit, a C{-}, another C{$}, a C{/}; a C{$}
        before a letter is written C{%24} (sent as it is, too).  (Without a
        C{?}, the client's query follows.)
        """
        self.assertEqual(
            self.sent("/price$/a$5/b$-c/$$query.x/$/%24query.x", "/x2/1?x=q"),
            b"/price$/a$5/b$-c/$q/$/%24query.x?x=q",
        )


class UnknownVariableTests(SynchronousTestCase):
    """
    A C{$} followed by a letter or a brace must start a variable a rewrite
    knows: anything else is refused with an error naming it and listing
    what a rewrite knows, never sent literally.
    """

    def refused(self, template: str) -> str:
        error = self.assertRaises(ValueError, Rewrite, template, ("id",))
        message = str(error)
        self.assertIn("$param.NAME, $query.NAME, $header.NAME, $depend.ATTR.FIELD", message)
        return message

    def test_unknownFamily(self) -> None:
        """
        C{$nope.z} and C{${nope.z}} are unknown variables.
        """
        self.assertIn("unknown variable $nope.z;", self.refused("/x/$nope.z"))
        self.assertIn("unknown variable ${nope.z};", self.refused("/x?a=${nope.z}"))
        self.assertIn("unknown variable $Query;", self.refused("/x/$Query"))

    def test_transformVariables(self) -> None:
        """
        The header transformations' own variables are refused, saying so
        and how to send them instead.
        """
        for variable in ("$consumer.name", "$consumer.id", "$requestId", "${clientIp}"):
            message = self.refused(f"/x?v={variable}")
            self.assertIn(
                f"{variable} is a header transformation variable, not a urlRewrite one"
                " (send it in a header with transform.request.set)",
                message,
            )

    def test_malformed(self) -> None:
        """
        A family without a name, an unclosed brace, a pattern parameter
        braced after a C{$} (which says how to write it).
        """
        self.assertIn("$query is not a valid variable: write $query.NAME", self.refused("/$query"))
        self.assertIn("$header is not a valid variable", self.refused("/$header./x"))
        self.assertIn("$depend is not a valid variable", self.refused("/$depend"))
        self.assertIn(
            "unclosed ${ at position 3", str(self.assertRaises(ValueError, Rewrite, "/x/${a", ()))
        )
        self.assertIn("(write {id} for a parameter", self.refused("/x/${id}"))

    def test_unknownParam(self) -> None:
        """
        C{$param.NAME} names a parameter of the pattern, as C{{NAME}} does.
        """
        error = self.assertRaises(ValueError, Rewrite, "/x/$param.nope", ("id",))
        self.assertEqual(
            str(error), "$param.nope is not a parameter of the URL pattern (it has: id)"
        )


class EverywhereRefusedTests(BatchTestCase):
    """
    The admin (validated by a real snapshot manager) refuses an unknown
    rewrite variable, naming the field (C{gateway validate}: see
    L{test_cli}).
    """

    def test_admin(self) -> None:
        """
        The rewrite of the review is a 400 at C{nodes[0].urlRewrite}, as a
        rule, naming the first variable a rewrite does not know; nothing is
        stored.  Without the unknown ones, it is accepted.
        """
        self.call("PUT", "/servers/s1", SERVER)
        self.call("PUT", "/clusters/c1", CLUSTER)
        before = self.snapshot()
        api = {"urlPattern": "/x2/{id}", "nodes": [{"cluster": "c1", "urlRewrite": REVIEWED}]}
        code, _, body = self.call("PUT", "/apis/a2", api)
        self.assertEqual(code, 400, body)
        self.assertEqual(body["field"], "nodes[0].urlRewrite")
        self.assertTrue(body["errors"][0]["rule"])
        self.assertIn("$consumer.name is a header transformation variable", body["error"])
        self.assertUnchanged(before)
        for bad in ("/y/$nope.z", "/y/$requestId", "/y/${query.x"):
            api["nodes"][0]["urlRewrite"] = bad
            code, _, body = self.call("PUT", "/apis/a2", api)
            self.assertEqual((code, body["field"]), (400, "nodes[0].urlRewrite"), body)
        api["nodes"][0]["urlRewrite"] = "/y/{id}?p=$param.id&q=$query.x&t=${query.x}&d=a$5"
        code, _, body = self.call("PUT", "/apis/a2", api)
        self.assertEqual(code, 201, body)
