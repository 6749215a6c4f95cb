"""
What the README shows works as shown: the filter plugin it prints loads as
a Twisted plugin and filters, and its configuration example is a valid
config file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

import twisted.plugins
from gateway.filters import FilterRegistry
from gateway.model.config import parseConfig
from gateway.pipeline.exchange import EarlyResponse, Exchange, ResponseInfo

README = Path(__file__).resolve().parent.parent / "README.md"


def codeBlockAfter(marker: str, language: str) -> str:
    """
    @return: the first C{language} code block of the README after the line
        holding C{marker}.
    """
    text = README.read_text(encoding="utf-8")
    start = text.index(marker)
    match = re.compile(r"```" + language + r"\n(.*?)\n```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {marker!r}"
    return match.group(1)


class FilterPluginTests(SynchronousTestCase):
    """
    The README's filter plugin.
    """

    def setUp(self) -> None:
        plugins = Path(self.mktemp()) / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        code = codeBlockAfter("A complete filter", "python")
        (plugins / "hello_filter.py").write_text(code, encoding="utf-8")
        twisted.plugins.__path__.append(str(plugins))
        self.addCleanup(twisted.plugins.__path__.remove, str(plugins))

    def exchange(self, path: bytes) -> Exchange:
        request = DummyRequest(path.split(b"/")[1:])
        if b"?" in path:
            request.args = {b"deny": [b"1"]}
        return Exchange(request, None, None, {}, "127.0.0.1", 0.0, Headers())

    def test_loadsAndFilters(self) -> None:
        """
        The plugin is found by name among Twisted's plugins, refuses an
        unknown config key, says hello upstream and back, and answers a
        denied request itself.
        """
        registry = FilterRegistry.fromPlugins()
        self.assertIn("hello", registry.names())
        made = registry.makeFilter("hello", {"greeting": "hi"}, Clock())
        passing = self.exchange(b"/x")
        self.assertIsNone(made.before(passing))
        self.assertEqual(passing.upstreamHeaders.getRawHeaders(b"x-hello"), [b"hi"])
        response = ResponseInfo(200, Headers())
        made.after(passing, response)
        self.assertEqual(response.headers.getRawHeaders(b"x-hello"), [b"hi"])
        answer = made.before(self.exchange(b"/x?deny=1"))
        self.assertIsInstance(answer, EarlyResponse)
        self.assertEqual(answer.code, 403)
        error = self.assertRaises(
            ValueError, registry.makeFilter, "hello", {"nope": 1}, Clock(), "filters[0].name"
        )
        self.assertIn("nope", str(error))


class ConfigExampleTests(SynchronousTestCase):
    """
    The README's configuration example.
    """

    def test_parses(self) -> None:
        """
        The config file of I{Running it} is valid as it is, and so is it
        with the store it names in its comment (quoted, as YAML needs).
        """
        text = codeBlockAfter("## Running it", "yaml")
        config: Any = parseConfig(yaml.safe_load(text))
        self.assertEqual(config.store, "file:./gateway-data.json")
        memory = text.replace("store: file:./gateway-data.json", 'store: "memory:"')
        self.assertEqual(parseConfig(yaml.safe_load(memory)).store, "memory:")

    def test_tracing(self) -> None:
        """
        The C{tracing:} section of I{Tracing} is valid as it is, and so is
        it with every commented setting on; the one-line form in the comment
        of I{Running it} is valid too.
        """
        text = codeBlockAfter("## Tracing", "yaml")
        proxy = {"listen": "tcp:8080:interface=127.0.0.1"}
        tracing = parseConfig(dict(yaml.safe_load(text), proxy=proxy)).tracing
        self.assertEqual(tracing.sampleRatio, 0.1)
        everything = re.sub(r"(?m)^  # ", "  ", text)
        tracing = parseConfig(dict(yaml.safe_load(everything), proxy=proxy)).tracing
        self.assertEqual(tracing.headers, {"Authorization": "Bearer ..."})
        running = codeBlockAfter("## Running it", "yaml")
        [line] = [line for line in running.splitlines() if line.startswith("# tracing:")]
        inline = yaml.safe_load(line[2:].split("  #")[0])
        self.assertEqual(parseConfig(dict(inline, proxy=proxy)).tracing.sampleRatio, 0.1)

    def test_fleetParses(self) -> None:
        """
        The config file of I{A fleet} (limits on Redis) is valid as it is.
        """
        text = codeBlockAfter("## A fleet: limits held by every gateway, on Redis", "yaml")
        config: Any = parseConfig(yaml.safe_load(text))
        self.assertEqual(config.limits.store, "redis://10.0.0.20:6379/0")
        self.assertEqual(config.limits.onFailure, "local")
