"""
How many proxy workers a config asks for (L{gateway.process.pool.workerCount}).
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from gateway.model.config import workersCanShare
from gateway.process.pool import workerCount

CORES = max(1, os.cpu_count() or 1)


class WorkerCountTests(SynchronousTestCase):
    def test_unsetIsOnePerCore(self) -> None:
        self.assertEqual(workerCount(None, shareable=True), CORES)

    def test_unsetCannotShare(self) -> None:
        """
        Unset, with an endpoint or store workers cannot share: one process.
        """
        self.assertEqual(workerCount(None, shareable=False), 1)

    def test_zeroIsOnePerCore(self) -> None:
        self.assertEqual(workerCount(0), CORES)

    def test_count(self) -> None:
        self.assertEqual(workerCount(3, shareable=False), 3)


class CanShareTests(SynchronousTestCase):
    def test_tcpAndFile(self) -> None:
        self.assertTrue(workersCanShare("tcp:8080", "file:./g.json"))
        self.assertTrue(workersCanShare("tcp6:8080", "etcd://127.0.0.1:2379/gw"))

    def test_memoryStore(self) -> None:
        self.assertFalse(workersCanShare("tcp:8080", "memory:"))

    def test_unixEndpoint(self) -> None:
        self.assertFalse(workersCanShare("unix:/tmp/g.sock", "file:./g.json"))
