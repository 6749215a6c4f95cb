"""
The embedded store: every resource in one JSON file, in the gateway's process.

The file is small (the whole routing table of one gateway) and is rewritten
whole on every commit: the new content goes to a temporary file in the same
directory, which is flushed and fsync'ed, renamed over the old one with
L{os.replace}, and the directory is fsync'ed too.  A crash at any moment
therefore leaves either the old file or the new one, never a mix, and a
commit is only acknowledged once it would survive a power cut.

The store serves one process: it holds the current state in memory and only
reads the file once, when it is first loaded (making a store reads nothing,
so a bad file is found when the gateway starts its services, not while it
is being put together).  Other processes of the same gateway (the proxy
workers) do not read the file: the gateway process relays every new state
to them (L{gateway.store.relayed}).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from gateway.interfaces import IStore
from gateway.store import KINDS, Change, ConflictError, StoreError, StoreState, emptyState

#: The version of the file format this module writes and reads.
FORMAT = 1

_TEMP_SUFFIX = ".tmp"


def _tempPrefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _checkResources(path: str, resources: Any) -> Dict[str, Dict[str, Any]]:
    if not isinstance(resources, dict):
        raise StoreError(f"{path}: 'resources' must be an object")
    checked: Dict[str, Dict[str, Any]] = {}
    for kind, items in resources.items():
        if kind not in KINDS:
            raise StoreError(f"{path}: unknown kind {kind!r} in 'resources'")
        if not isinstance(items, dict):
            raise StoreError(f"{path}: resources.{kind} must be an object")
        for name, value in items.items():
            if not isinstance(value, dict):
                raise StoreError(f"{path}: resources.{kind}.{name} must be an object")
        checked[kind] = items
    return checked


def parseStoreFile(path: str, data: bytes) -> StoreState:
    """
    Parse the content of a store file.

    @param path: the file's path, for error messages.
    @param data: the file's content.
    @return: the L{StoreState} it holds.
    @raise StoreError: when it is not a store file of a format this module
        reads; the message names C{path} and the problem.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise StoreError(f"{path}: not a valid store file (invalid JSON: {e})")
    if not isinstance(document, dict):
        raise StoreError(f"{path}: not a valid store file (expected a JSON object)")
    if document.get("format") != FORMAT:
        raise StoreError(
            f"{path}: unsupported store file format {document.get('format')!r} "
            f"(this gateway reads format {FORMAT})"
        )
    revision = document.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise StoreError(f"{path}: 'revision' must be an integer >= 0, not {revision!r}")
    return StoreState(revision, _checkResources(path, document.get("resources", {})))


def _line(name: str, value: Mapping[str, Any]) -> str:
    key = json.dumps(name, ensure_ascii=False)
    return "      " + key + ": " + json.dumps(value, sort_keys=True, ensure_ascii=False)


def _block(kind: str, rows: Mapping[str, str]) -> str:
    if not rows:
        return f"    {json.dumps(kind)}: {{}}"
    return f"    {json.dumps(kind)}: {{\n" + ",\n".join(rows[n] for n in sorted(rows)) + "\n    }"


class StoreText:
    """
    The text of a store file, kept from one commit to the next so that a
    commit encodes only what it changed: the lines of the resources it
    wrote, and the blocks of the kinds it touched.  (Encoded whole, the
    file of 10,000 APIs took 270 ms a commit.)

    The file is JSON with sorted keys, each resource on a line of its own,
    so that two revisions diff well, resource by resource.
    """

    def __init__(self) -> None:
        self._rows: Dict[str, Dict[str, str]] = {}
        self._blocks: Dict[str, str] = {}

    def render(
        self, state: StoreState, changes: Optional[Sequence[Change]] = None
    ) -> Tuple[bytes, Callable[[], None]]:
        """
        @param state: the state to write.
        @param changes: what made C{state} from the state rendered last
            (ignored when none was: it is rendered whole), or L{None} to
            render it whole.
        @return: C{(the file's content, keep)}: call C{keep()} once the
            content is written, to render the next state from this one.
        """
        if changes is None or not self._blocks:
            dirty = set(KINDS)
            rows: Dict[str, Dict[str, str]] = {kind: {} for kind in KINDS}
            for kind in KINDS:
                items = state.resources[kind]
                rows[kind] = {name: _line(name, items[name]) for name in items}
        else:
            dirty = {change.kind for change in changes}
            rows = dict(self._rows)
            for kind in dirty:
                rows[kind] = dict(rows.get(kind, {}))
            for change in changes:
                if change.value is None:
                    rows[change.kind].pop(change.name, None)
                else:
                    rows[change.kind][change.name] = _line(change.name, change.value)
        blocks = dict(self._blocks)
        for kind in dirty:
            blocks[kind] = _block(kind, rows[kind])
        text = (
            f'{{\n  "format": {FORMAT},\n  "resources": {{\n'
            + ",\n".join(blocks[kind] for kind in sorted(KINDS))
            + f'\n  }},\n  "revision": {state.revision}\n}}\n'
        )

        def keep() -> None:
            self._rows, self._blocks = rows, blocks

        return text.encode("utf-8"), keep


def dumpStoreState(state: StoreState) -> bytes:
    """
    @return: the content of the store file for C{state} (see L{StoreText}).
    """
    return StoreText().render(state)[0]


def _fsyncDirectory(directory: str) -> None:
    # The rename is only durable once the directory entry is; not every
    # platform or file system lets a directory be opened and synced.
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(directory, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeFileAtomically(path: str, data: bytes) -> None:
    """
    Replace the file at C{path} with C{data}, durably and atomically.

    @raise OSError: when the file could not be written; the old file is then
        untouched, and no temporary file is left behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tempPath = tempfile.mkstemp(dir=directory, prefix=_tempPrefix(path), suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tempPath, path)
    except BaseException:
        try:
            os.unlink(tempPath)
        except OSError:
            pass
        raise
    try:
        _fsyncDirectory(directory)
    except OSError:
        # The new file is in place and its data is on disk; only the
        # directory entry might not be yet.  Failing the commit now would
        # leave a file newer than what the caller was told, so go on.
        FileStore.log.warn("could not fsync directory {directory}", directory=directory)


def _copyJSON(value: Mapping[str, Any]) -> Dict[str, Any]:
    # A deep copy through JSON: the stored state never shares objects with
    # the caller, and it is exactly what the file holds (tuples become lists).
    return json.loads(json.dumps(value, ensure_ascii=False))


@implementer(IStore)
class FileStore:
    """
    An L{IStore} kept in one JSON file, or only in memory.

    @ivar path: the file's path, or L{None} for a store in memory only.
    """

    log = Logger()

    def __init__(self, path: Optional[str]) -> None:
        """
        Make a store; its file is read by the first L{load} or L{commit}.

        @param path: the file's path; a missing file is an empty store (the
            file and its directory are created on the first commit).  L{None}
            keeps everything in memory only.
        """
        self.path = path
        self._listeners: List[Callable[[StoreState], Any]] = []
        self._closed = False
        self._state: Optional[StoreState] = None
        #: The text of the file this store wrote last.
        self._text = StoreText()

    def _current(self) -> StoreState:
        """
        @return: the current state, reading the file the first time.
        @raise StoreError: when the file exists but cannot be read or is not
            a valid store file.  The file is left as it is, and the next
            call tries again.
        """
        if self._state is None:
            self._state = self._open()
        return self._state

    def _open(self) -> StoreState:
        if self.path is None:
            return emptyState()
        self._removeStaleTempFiles()
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return emptyState()
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the store file: {e.strerror or e}")
        return parseStoreFile(self.path, data)

    def _removeStaleTempFiles(self) -> None:
        # A writer killed between mkstemp and os.replace leaves its temporary
        # file behind; it never holds the current state, so it can go.
        assert self.path is not None
        directory = os.path.dirname(os.path.abspath(self.path))
        prefix = _tempPrefix(self.path)
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix) and name.endswith(_TEMP_SUFFIX):
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass

    def load(self) -> Deferred:
        """
        @return: a Deferred firing with the current L{StoreState}; the
            first load reads the file, and fails with L{StoreError} when it
            exists but cannot be read or is not a valid store file.
        """
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            return succeed(self._current())
        except StoreError as e:
            return fail(e)

    def commit(self, changes: Sequence[Change], baseRevision: int) -> Deferred:
        """
        Apply C{changes}, write them to the file, then tell the watchers.

        @return: a Deferred firing with the new revision once it is on disk;
            it fails with L{ConflictError} when the store is no longer at
            C{baseRevision}, and with L{StoreError} when the file could not
            be written (the store then stays as it was).
        """
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            state = self._current()
        except StoreError as e:
            return fail(e)
        if baseRevision != state.revision:
            return fail(ConflictError(f"store is at revision {state.revision}, not {baseRevision}"))
        try:
            changes = [
                Change(c.kind, c.name, None if c.value is None else _copyJSON(c.value))
                for c in changes
            ]
        except (TypeError, ValueError) as e:
            return fail(e)
        newState = state.withChanges(changes, state.revision + 1)
        if self.path is not None:
            # Rendered from the last file written (the first commit since
            # the file was read renders it whole).
            content, keep = self._text.render(newState, changes)
            try:
                writeFileAtomically(self.path, content)
            except OSError as e:
                return fail(
                    StoreError(f"{self.path}: cannot write the store file: {e.strerror or e}")
                )
            keep()
        self._state = newState
        self._notify(newState)
        return succeed(newState.revision)

    def _notify(self, state: StoreState) -> None:
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                self.log.failure(
                    "store watcher {listener!r} failed at revision {revision}",
                    listener=listener,
                    revision=state.revision,
                )

    def watch(self, listener: Callable[[StoreState], Any]) -> Callable[[], None]:
        """
        Call C{listener} with the new state after every commit.

        @return: a callable that stops the watch; calling it again does
            nothing.
        """
        self._listeners.append(listener)

        def stop() -> None:
            try:
                self._listeners.remove(listener)
            except ValueError:
                pass

        return stop

    def close(self) -> Deferred:
        """
        Stop the watches; later loads and commits fail with L{StoreError}.

        @return: a Deferred firing with L{None}.
        """
        self._closed = True
        del self._listeners[:]
        return succeed(None)

    def __repr__(self) -> str:
        where = self.path or "in memory"
        if self._state is None:
            return f"<FileStore {where}, not loaded yet>"
        return f"<FileStore {where} at revision {self._state.revision}>"
