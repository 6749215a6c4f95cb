"""
Tests for L{gateway.store.file}: the embedded, file-backed store.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from tlsfixtures import CertificateAuthority
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.interfaces import IStore
from gateway.store import KINDS, Change, ConflictError, StoreError, storeFromURL
from gateway.store.file import FileStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = {"name": "s1", "addr": "127.0.0.1:9001", "weight": 1}
CLUSTER = {"name": "c1", "servers": ["s1"], "loadBalance": "round-robin"}


def tempDirectory(case) -> str:
    """
    @return: a new directory, removed when the test C{case} ends.
    """
    directory = tempfile.mkdtemp(prefix="gateway-store-")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def tempFiles(directory: str):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


class FileStoreTests(SynchronousTestCase):
    """
    Tests for L{FileStore} backed by a file.
    """

    def setUp(self) -> None:
        self.directory = tempDirectory(self)
        self.path = os.path.join(self.directory, "store.json")
        self.clock = Clock()

    def store(self) -> FileStore:
        return FileStore(self.path)

    def commit(self, store, changes, base=None):
        if base is None:
            base = self.successResultOf(store.load()).revision
        return self.successResultOf(store.commit(changes, base))

    def test_provides(self) -> None:
        """
        L{FileStore} provides L{IStore}.
        """
        self.assertTrue(verifyObject(IStore, self.store()))

    def test_missingFileIsEmpty(self) -> None:
        """
        A store whose file does not exist is empty, at revision 0, and opening
        it creates no file.
        """
        state = self.successResultOf(self.store().load())
        self.assertEqual(state.revision, 0)
        self.assertEqual({k: dict(v) for k, v in state.resources.items()}, {k: {} for k in KINDS})
        self.assertFalse(os.path.exists(self.path))

    def test_roundTrip(self) -> None:
        """
        What is committed is what is loaded, for every kind, and a delete
        removes the resource.
        """
        store = self.store()
        rev = self.commit(
            store,
            [
                Change("servers", "s1", SERVER),
                Change("clusters", "c1", CLUSTER),
                Change("apis", "a1", {"name": "a1", "x": [1, 2]}),
                Change("routings", "r1", {"name": "r1"}),
            ],
        )
        self.assertEqual(rev, 1)
        state = self.successResultOf(store.load())
        self.assertEqual(state.revision, 1)
        self.assertEqual(state.get("servers", "s1"), SERVER)
        self.assertEqual(state.get("clusters", "c1"), CLUSTER)
        self.assertEqual(state.get("apis", "a1"), {"name": "a1", "x": [1, 2]})
        self.assertEqual(state.get("routings", "r1"), {"name": "r1"})
        self.assertEqual(self.commit(store, [Change("routings", "r1", None)]), 2)
        state = self.successResultOf(store.load())
        self.assertIsNone(state.get("routings", "r1"))
        self.assertEqual(state.get("servers", "s1"), SERVER)

    def test_revisionIncrements(self) -> None:
        """
        Every commit, even an empty one, moves the revision up by one.
        """
        store = self.store()
        revisions = [self.commit(store, [Change("servers", f"s{i}", SERVER)]) for i in range(3)]
        revisions.append(self.commit(store, []))
        self.assertEqual(revisions, [1, 2, 3, 4])

    def test_conflict(self) -> None:
        """
        A commit based on a stale revision fails with L{ConflictError} and
        changes nothing, in memory or on disk.
        """
        store = self.store()
        self.commit(store, [Change("servers", "s1", SERVER)])
        with open(self.path, "rb") as f:
            before = f.read()
        failure = self.failureResultOf(
            store.commit([Change("servers", "s2", SERVER)], 0), ConflictError
        )
        self.assertIn("revision 1", str(failure.value))
        state = self.successResultOf(store.load())
        self.assertEqual(state.revision, 1)
        self.assertIsNone(state.get("servers", "s2"))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_restart(self) -> None:
        """
        A new store on the same file finds everything committed before, at the
        same revision, and goes on from there.
        """
        store = self.store()
        self.commit(store, [Change("servers", "s1", SERVER)])
        self.commit(store, [Change("clusters", "c1", CLUSTER)])
        self.successResultOf(store.close())
        again = self.store()
        state = self.successResultOf(again.load())
        self.assertEqual(state.revision, 2)
        self.assertEqual(state.get("servers", "s1"), SERVER)
        self.assertEqual(state.get("clusters", "c1"), CLUSTER)
        self.assertEqual(self.commit(again, [Change("servers", "s1", None)]), 3)

    def test_fileFormat(self) -> None:
        """
        The file is JSON with sorted keys, holding the format number, the
        revision and every kind, each resource on a line of its own.
        """
        store = self.store()
        self.commit(store, [Change("servers", "s1", {"name": "s1", "b": 1, "a": 2})])
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        document = json.loads(text)
        self.assertEqual(
            document,
            {
                "format": 1,
                "revision": 1,
                "resources": {
                    "certificates": {},
                    "servers": {"s1": {"name": "s1", "b": 1, "a": 2}},
                    "clusters": {},
                    "consumers": {},
                    "apis": {},
                    "routings": {},
                },
            },
        )
        self.assertEqual(
            text,
            "{\n"
            '  "format": 1,\n'
            '  "resources": {\n'
            '    "apis": {},\n'
            '    "certificates": {},\n'
            '    "clusters": {},\n'
            '    "consumers": {},\n'
            '    "routings": {},\n'
            '    "servers": {\n'
            '      "s1": {"a": 2, "b": 1, "name": "s1"}\n'
            "    }\n"
            "  },\n"
            '  "revision": 1\n'
            "}\n",
        )

    def test_certificatesLineByLine(self) -> None:
        """
        Certificates are stored as every kind is, one resource a line,
        their multi-line PEM text (and the write-only key, which the store
        keeps) escaped within it: the file reads back the same resources,
        and a commit that changes another kind leaves their lines as they
        were.
        """
        issued = CertificateAuthority().issue(["api.example.com"])
        first = issued.resource("api", ["api.example.com"])
        second = issued.resource("www", ["www.example.com"])
        store = self.store()
        self.commit(
            store,
            [
                Change("certificates", "api", first),
                Change("certificates", "www", second),
                Change("servers", "s1", SERVER),
            ],
        )
        with open(self.path, encoding="utf-8") as f:
            before = f.read().splitlines()
        lines = [line.strip() for line in before]
        for name, value in (("api", first), ("www", second)):
            row = json.dumps(name) + ": " + json.dumps(value, sort_keys=True)
            self.assertTrue(row in lines or row + "," in lines, name)
        self.commit(store, [Change("servers", "s1", dict(SERVER, weight=2))])
        with open(self.path, encoding="utf-8") as f:
            after = f.read().splitlines()
        self.assertEqual(
            [line for line in after if '"cert"' in line],
            [line for line in before if '"cert"' in line],
        )
        # Only the server's line and the revision's changed.
        serverLine = next(i for i, line in enumerate(before) if line.strip().startswith('"s1"'))
        self.assertEqual(
            [i for i, (a, b) in enumerate(zip(before, after)) if a != b],
            [serverLine, len(before) - 2],
        )
        reopened = self.successResultOf(FileStore(self.path).load())
        self.assertEqual(dict(reopened.resources["certificates"]), {"api": first, "www": second})
        self.assertEqual(reopened.get("certificates", "api")["key"], issued.keyPEM)

    def test_createsDirectoryOnWrite(self) -> None:
        """
        The file's directory is created by the first commit, not by opening
        the store.
        """
        self.path = os.path.join(self.directory, "a", "b", "store.json")
        store = self.store()
        self.assertFalse(os.path.exists(os.path.join(self.directory, "a")))
        self.commit(store, [Change("servers", "s1", SERVER)])
        self.assertEqual(self.successResultOf(self.store().load()).revision, 1)

    def test_valuesAreCopied(self) -> None:
        """
        The store keeps its own copy of a committed value: changing the
        caller's object afterwards changes nothing in the store.
        """
        store = self.store()
        value = {"name": "c1", "servers": ["s1"]}
        self.commit(store, [Change("clusters", "c1", value)])
        value["servers"].append("s2")
        self.assertEqual(
            self.successResultOf(store.load()).get("clusters", "c1"),
            {"name": "c1", "servers": ["s1"]},
        )

    def assertCorrupt(self, content: bytes, problem: str) -> None:
        """
        A store on a file holding C{content} is made without reading it;
        its load and its commits fail with L{StoreError} naming the file
        and C{problem}, and the file is left as it is.
        """
        with open(self.path, "wb") as f:
            f.write(content)
        store = self.store()
        failure = self.failureResultOf(store.load(), StoreError)
        message = failure.getErrorMessage()
        self.assertIn(self.path, message)
        self.assertIn(problem, message)
        self.failureResultOf(store.commit([Change("servers", "s1", SERVER)], 0), StoreError)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), content)

    def test_corruptJSON(self) -> None:
        """
        A file that is not JSON raises L{StoreError} naming the file and the
        problem, and the file is left as it is.
        """
        self.assertCorrupt(b'{"format": 1, "revision": 3, "resources": {', "invalid JSON")

    def test_emptyFile(self) -> None:
        """
        An empty file is corrupt, not an empty store.
        """
        self.assertCorrupt(b"", "invalid JSON")

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 is corrupt.
        """
        self.assertCorrupt(b'{"format": 1, "x": "\xff\xfe"}', "invalid JSON")

    def test_notAnObject(self) -> None:
        """
        A JSON file that is not an object is corrupt.
        """
        self.assertCorrupt(b"[1, 2]", "expected a JSON object")

    def test_wrongFormat(self) -> None:
        """
        A file of another format number is refused.
        """
        self.assertCorrupt(
            b'{"format": 2, "revision": 1, "resources": {}}', "unsupported store file format 2"
        )

    def test_badRevision(self) -> None:
        """
        A revision that is not an integer >= 0 is refused.
        """
        self.assertCorrupt(b'{"format": 1, "revision": "7", "resources": {}}', "'revision'")
        self.assertCorrupt(b'{"format": 1, "revision": -1, "resources": {}}', "'revision'")
        self.assertCorrupt(b'{"format": 1, "revision": true, "resources": {}}', "'revision'")

    def test_badResources(self) -> None:
        """
        Resources of an unknown kind or that are not objects are refused.
        """
        self.assertCorrupt(b'{"format": 1, "revision": 1, "resources": []}', "'resources'")
        self.assertCorrupt(
            b'{"format": 1, "revision": 1, "resources": {"widgets": {}}}', "unknown kind"
        )
        self.assertCorrupt(
            b'{"format": 1, "revision": 1, "resources": {"servers": {"s1": 3}}}',
            "resources.servers.s1",
        )

    def test_unreadable(self) -> None:
        """
        A path that cannot be read as a file (here a directory) raises
        L{StoreError} naming it.
        """
        os.mkdir(self.path)
        message = self.failureResultOf(self.store().load(), StoreError).getErrorMessage()
        self.assertIn(self.path, message)
        self.assertIn("cannot read", message)

    def test_madeWithoutReading(self) -> None:
        """
        Making a store reads nothing: the file is read by the first load
        (so a file written after the store was made is what it holds), and
        stale temporary files are removed only then.
        """
        stale = os.path.join(self.directory, ".store.json.abc123.tmp")
        with open(stale, "wb") as f:
            f.write(b"partial")
        store = self.store()
        self.assertTrue(os.path.exists(stale))
        with open(self.path, "wb") as f:
            f.write(b'{"format": 1, "revision": 4, "resources": {}}')
        self.assertEqual(self.successResultOf(store.load()).revision, 4)
        self.assertFalse(os.path.exists(stale))

    def test_staleTempFiles(self) -> None:
        """
        Temporary files a killed writer left behind are ignored on load and
        removed; other files in the directory are not.
        """
        self.commit(self.store(), [Change("servers", "s1", SERVER)])
        stale = os.path.join(self.directory, ".store.json.abc123.tmp")
        with open(stale, "wb") as f:
            f.write(b'{"format": 1, "revision": 99, "resources": {"ser')
        other = os.path.join(self.directory, ".other.json.abc123.tmp")
        with open(other, "wb") as f:
            f.write(b"not ours")
        state = self.successResultOf(self.store().load())
        self.assertEqual(state.revision, 1)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(other))

    def test_writeFailureParentIsFile(self) -> None:
        """
        When the file cannot be written (its directory became a regular file),
        the commit fails with L{StoreError} and the store stays at its old
        state; once the directory is back, commits work again from there.
        """
        self.path = os.path.join(self.directory, "sub", "store.json")
        store = self.store()
        self.commit(store, [Change("servers", "s1", SERVER)])
        sub = os.path.join(self.directory, "sub")
        os.rename(sub, sub + ".away")
        with open(sub, "wb") as f:
            f.write(b"in the way")
        failure = self.failureResultOf(
            store.commit([Change("servers", "s2", SERVER)], 1), StoreError
        )
        self.assertIn(self.path, str(failure.value))
        state = self.successResultOf(store.load())
        self.assertEqual(state.revision, 1)
        self.assertIsNone(state.get("servers", "s2"))
        os.unlink(sub)
        os.rename(sub + ".away", sub)
        self.assertEqual(self.commit(store, [Change("servers", "s2", SERVER)], 1), 2)
        self.assertEqual(self.successResultOf(self.store().load()).revision, 2)

    def test_writeFailureTargetIsDirectory(self) -> None:
        """
        When the final rename fails (the target is now a non-empty
        directory), the commit fails with L{StoreError}, the state is
        unchanged, watchers are not called, and no temporary file is left.
        """
        store = self.store()
        self.commit(store, [Change("servers", "s1", SERVER)])
        seen = []
        store.watch(seen.append)
        os.unlink(self.path)
        os.makedirs(os.path.join(self.path, "x"))
        self.failureResultOf(store.commit([Change("servers", "s2", SERVER)], 1), StoreError)
        self.assertEqual(self.successResultOf(store.load()).revision, 1)
        self.assertEqual(seen, [])
        self.assertEqual(tempFiles(self.directory), [])

    def test_watch(self) -> None:
        """
        Watchers are called with the whole new state after each commit, in
        the order they registered; the callable L{FileStore.watch} returns
        stops the watch.
        """
        store = self.store()
        first, second = [], []
        stopFirst = store.watch(lambda s: first.append((s.revision, s.get("servers", "s1"))))
        store.watch(lambda s: second.append(s.revision))
        self.commit(store, [Change("servers", "s1", SERVER)])
        self.assertEqual(first, [(1, SERVER)])
        self.assertEqual(second, [1])
        stopFirst()
        stopFirst()
        self.commit(store, [Change("servers", "s1", None)])
        self.assertEqual(first, [(1, SERVER)])
        self.assertEqual(second, [1, 2])

    def test_watcherSeesStateOnDisk(self) -> None:
        """
        When a watcher is called, the new state is already durable: a store
        opened on the file from inside the watcher sees it.
        """
        store = self.store()
        seen = []
        store.watch(lambda s: seen.append(self.successResultOf(self.store().load()).revision))
        self.commit(store, [Change("servers", "s1", SERVER)])
        self.assertEqual(seen, [1])

    def test_failingWatcher(self) -> None:
        """
        A watcher that raises is logged; the others are still called and the
        commit still succeeds.
        """
        store = self.store()
        seen = []
        store.watch(lambda s: 1 / 0)
        store.watch(lambda s: seen.append(s.revision))
        self.assertEqual(self.commit(store, [Change("servers", "s1", SERVER)]), 1)
        self.assertEqual(seen, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_close(self) -> None:
        """
        After L{FileStore.close}, watchers are no longer called and loads and
        commits fail with L{StoreError}.
        """
        store = self.store()
        seen = []
        store.watch(seen.append)
        self.assertIsNone(self.successResultOf(store.close()))
        self.failureResultOf(store.load(), StoreError)
        self.failureResultOf(store.commit([Change("servers", "s1", SERVER)], 0), StoreError)
        self.assertEqual(seen, [])


class MemoryStoreTests(SynchronousTestCase):
    """
    Tests for L{FileStore} in memory only (C{path=None}).
    """

    def test_memory(self) -> None:
        """
        An in-memory store commits, conflicts and notifies like a file store,
        and writes no file.
        """
        directory = tempDirectory(self)
        cwd = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        store = FileStore(None)
        self.assertTrue(verifyObject(IStore, store))
        seen = []
        store.watch(lambda s: seen.append(s.revision))
        self.assertEqual(
            self.successResultOf(store.commit([Change("servers", "s1", SERVER)], 0)), 1
        )
        self.failureResultOf(store.commit([], 0), ConflictError)
        state = self.successResultOf(store.load())
        self.assertEqual((state.revision, state.get("servers", "s1")), (1, SERVER))
        self.assertEqual(seen, [1])
        self.assertEqual(os.listdir(directory), [])

    def test_fromURL(self) -> None:
        """
        C{memory:} URLs make an in-memory store and C{file:} URLs a store on
        that path.
        """
        memory = storeFromURL("memory:", reactor=Clock())
        self.assertIsInstance(memory, FileStore)
        self.assertIsNone(memory.path)
        path = os.path.join(tempDirectory(self), "s.json")
        onFile = storeFromURL("file:" + path, reactor=Clock())
        self.assertEqual(onFile.path, path)


CHILD = """
import sys
from twisted.internet.task import Clock
from gateway.store import Change
from gateway.store.file import FileStore

store = FileStore(sys.argv[1])
blob = "x" * 2000
while True:
    states = []
    store.load().addCallback(states.append)
    base = states[0].revision
    revisions = []
    value = {"name": "s%d" % (base % 20), "seq": base + 1, "blob": blob}
    store.commit([Change("servers", value["name"], value)], base).addCallback(revisions.append)
    sys.stdout.write("%d\\n" % revisions[0])
    sys.stdout.flush()
"""


def readLine(stream, timeout: float) -> bytes:
    """
    @return: one line from a pipe, waiting at most C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise AssertionError("the child printed nothing in time")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise AssertionError("the child exited early")
        line += chunk
    return line


@pytest.mark.integration
def test_crashSafety(tmp_path) -> None:
    """
    A writer killed with SIGKILL at random moments never leaves a broken
    file: each time the file loads, its revision is at least the last one
    the writer acknowledged, its content is of that one revision, and the
    temporary file a killed write left is cleaned up on load.
    """
    path = str(tmp_path / "store.json")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    lastRevision = 0
    for kill in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, cwd=ROOT, env=env
        )
        try:
            first = int(readLine(child.stdout, 30))
            assert first == lastRevision + 1, (seed, first, lastRevision)
            time.sleep(rng.uniform(0.05, 0.3))
            child.send_signal(signal.SIGKILL)
            rest = child.stdout.read()
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
        acknowledged = [first] + [int(line) for line in rest.split(b"\n")[:-1]]
        store = FileStore(path)
        states = []
        store.load().addCallback(states.append)
        state = states[0]
        assert state.revision >= acknowledged[-1], (seed, kill, state.revision, acknowledged[-1])
        assert state.revision <= acknowledged[-1] + 1, (seed, kill)
        seqs = [value["seq"] for value in state.resources["servers"].values()]
        assert max(seqs) == state.revision, (seed, kill)
        assert tempFiles(str(tmp_path)) == [], (seed, kill)
        lastRevision = state.revision
    assert lastRevision > 5
