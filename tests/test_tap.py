"""
Tests for L{gateway.process.tap}: the options of C{twistd gateway}.
"""

from __future__ import annotations

import io
import sys

from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from gateway.process import tap


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{tap.Options}.
    """

    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.missing = self.mktemp() + ".yaml"

    def test_refusedAlone(self) -> None:
        """
        Parsed by themselves, options naming a config file that does not
        exist raise L{usage.UsageError} naming the file, whatever the
        version of Twisted.
        """
        for exitsZero in (True, False):
            self.patch(tap, "_twistdExitsZeroOnUsageError", exitsZero)
            error = self.assertRaises(
                usage.UsageError, tap.Options().parseOptions, ["--config", self.missing]
            )
            self.assertIn(self.missing, str(error))

    def test_refusedUnderTwistd(self) -> None:
        """
        Under twistd (the gateway's options as a subcommand), a refused
        start is a L{usage.UsageError} on a Twisted whose twistd exits 1 on
        those, and an exit with status 1 after twistd's usage and the
        message otherwise (twistd before Twisted 26.10 exits 0).
        """
        args = ["gateway", "--config", self.missing]
        self.patch(tap, "_twistdExitsZeroOnUsageError", False)
        self.assertRaises(usage.UsageError, ServerOptions().parseOptions, args)
        self.assertEqual(self.stdout.getvalue(), "")

        self.patch(tap, "_twistdExitsZeroOnUsageError", True)
        exit = self.assertRaises(SystemExit, ServerOptions().parseOptions, args)
        self.assertEqual(exit.code, 1)
        output = self.stdout.getvalue()
        self.assertIn("--config=", output)
        self.assertIn(self.missing, output.splitlines()[-1])
