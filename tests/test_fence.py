"""
The fence around Twisted's private names, and the model's and stores'
distance from any transport, checked on the source (STYLE.md).

Only the engine, C{gateway/http}, may touch Twisted's private names, behind
documented functions (L{tests.test_twisted_internals} fails when a Twisted
release changes one).  Ruff's banned-API rule (C{TID251}, pyproject.toml)
stops the rest of the tree from importing the private names the engine
uses; this module catches what a linter cannot resolve:

  - any import of a C{_name} from a C{twisted} module, or of a
    C{twisted.*._module}, outside C{gateway/http};
  - any attribute access C{x._name} outside C{gateway/http} where C{_name}
    is defined nowhere in the gateway's own code: a private attribute of a
    foreign object, such as C{request._disconnected} or
    C{headers._rawHeaders};
  - in C{gateway/model} and C{gateway/store}, an import of a transport
    (L{TRANSPORT}); the import contracts in setup.cfg check the gateway's
    own packages (C{lint-imports}), these the modules of Twisted, which
    import-linter sees only as one external package.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"

#: The package allowed to touch Twisted's private names.
ENGINE = "gateway/http/"

#: What "transport" means for the model and the stores: an HTTP server
#: (Twisted's web server and resources, Klein) and the channel and request
#: classes of C{twisted.web.http}; Twisted's HTTP client internals below
#: treq (C{twisted.web._newclient}) are private names, fenced off above.  A
#: store may be an HTTP client through treq (as the etcd store is), with
#: the public names treq is configured with and answers in
#: (C{twisted.web.client}'s C{Agent}, C{HTTPConnectionPool},
#: C{ResponseDone}; C{twisted.web.http}'s C{PotentialDataLoss}); the model
#: may not (L{MODEL_TRANSPORT}).  Neither may use the gateway's own engine,
#: which the import contracts forbid.
TRANSPORT: FrozenSet[str] = frozenset(
    {
        "klein",
        "twisted.web.proxy",
        "twisted.web.resource",
        "twisted.web.server",
        "twisted.web.static",
        "twisted.web.vhost",
        "twisted.web.wsgi",
        "twisted.web.http.HTTPChannel",
        "twisted.web.http.HTTPFactory",
        "twisted.web.http.Request",
    }
)

#: The model reads and checks resources and config: no HTTP at all.
MODEL_TRANSPORT: FrozenSet[str] = TRANSPORT | {"treq", "twisted.web"}


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _sources() -> Dict[str, ast.Module]:
    return {
        _relative(path): ast.parse(path.read_bytes(), str(path))
        for path in sorted(GATEWAY.rglob("*.py"))
    }


def _isPrivate(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _assignedNames(target: ast.AST) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            yield node.attr


def ownNames(trees: Dict[str, ast.Module]) -> Set[str]:
    """
    @return: every name the gateway's code defines: functions, classes,
        names assigned or imported, attributes assigned on C{self} or
        C{cls}, C{__slots__} entries.  An attribute assigned on another
        object (C{headers._rawHeaders = ...}) defines nothing: that is a
        use of someone else's attribute.
    """
    names: Set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(_assignedNames(target))
                    if (
                        isinstance(target, ast.Name)
                        and target.id == "__slots__"
                        and node.value is not None
                    ):
                        names.update(
                            c.value
                            for c in ast.walk(node.value)
                            if isinstance(c, ast.Constant) and isinstance(c.value, str)
                        )
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _isTwisted(module: str) -> bool:
    return module == "twisted" or module.startswith("twisted.")


def _privateImports(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """
    @return: C{(line, name)} of each private Twisted module or name that
        C{tree} imports, the name dotted in full.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _isTwisted(alias.name) and any(map(_isPrivate, alias.name.split("."))):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and _isTwisted(node.module):
            if any(map(_isPrivate, node.module.split("."))):
                yield node.lineno, node.module
                continue
            for alias in node.names:
                if _isPrivate(alias.name):
                    yield node.lineno, f"{node.module}.{alias.name}"


#: Names of the standard library that are public API despite their
#: underscore, as C{(module, name)}.
_PUBLIC_UNDERSCORED = frozenset([("os", "_exit")])


def _foreignPrivateAttributes(tree: ast.Module, own: Set[str]) -> Iterator[Tuple[int, str]]:
    """
    @return: C{(line, name)} of each access to a private attribute that the
        gateway's code does not define.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _isPrivate(node.attr) and node.attr not in own:
            base = node.value
            if isinstance(base, ast.Name) and (base.id, node.attr) in _PUBLIC_UNDERSCORED:
                continue
            yield node.lineno, node.attr


def fenceOffenders(trees: Dict[str, ast.Module]) -> Dict[Tuple[str, str], List[int]]:
    """
    @return: C{{(file, name): [line, ...]}} of every private Twisted import
        and every foreign private attribute outside the engine.
    """
    own = ownNames(trees)
    found: Dict[Tuple[str, str], List[int]] = {}
    for path, tree in trees.items():
        if path.startswith(ENGINE):
            continue
        for line, name in [*_privateImports(tree), *_foreignPrivateAttributes(tree, own)]:
            found.setdefault((path, name), []).append(line)
    return found


def _imported(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """
    @return: C{(line, name)} of every module and every C{module.name} that
        C{tree} imports.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _matches(name: str, forbidden: FrozenSet[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def transportImports(trees: Dict[str, ast.Module]) -> List[str]:
    """
    @return: C{"file:line: name"} for every transport imported by the model
        or a store.
    """
    found = []
    for path, tree in trees.items():
        if path.startswith("gateway/model/"):
            forbidden = MODEL_TRANSPORT
        elif path.startswith("gateway/store/"):
            forbidden = TRANSPORT
        else:
            continue
        for line, name in _imported(tree):
            if _matches(name, forbidden):
                found.append(f"{path}:{line}: {name}")
    return sorted(set(found))


def _describe(offenders: Dict[Tuple[str, str], List[int]]) -> str:
    return "\n".join(
        f"  {path}:{','.join(map(str, sorted(lines)))}: {name}"
        for (path, name), lines in sorted(offenders.items())
    )


class FenceTests(SynchronousTestCase):
    """
    Twisted's private names stay inside C{gateway/http}.
    """

    def test_noOffenders(self) -> None:
        """
        Outside C{gateway/http}, no module imports a private Twisted name or
        module, or touches a private attribute the gateway does not define.
        """
        offenders = fenceOffenders(_sources())
        if offenders:
            self.fail(
                "Twisted's private names are touched outside gateway/http (STYLE.md: only "
                "the engine may, behind a documented function; use Twisted's public API or "
                "add one to gateway/http):\n" + _describe(offenders)
            )

    def test_modelAndStoresImportNoTransport(self) -> None:
        """
        The model imports no HTTP at all, and a store no HTTP server and
        none of Twisted's HTTP client internals (L{TRANSPORT}).
        """
        found = transportImports(_sources())
        if found:
            self.fail(
                "the model and the stores import no transport (see TRANSPORT in "
                "tests/test_fence.py):\n" + "\n".join("  " + f for f in found)
            )


class FenceCheckerTests(SynchronousTestCase):
    """
    The checks above find what they are meant to, and only that.
    """

    def _offenders(self, sources: Dict[str, str]) -> Dict[Tuple[str, str], List[int]]:
        return fenceOffenders({path: ast.parse(text) for path, text in sources.items()})

    def test_privateImports(self) -> None:
        """
        A private name imported from a Twisted module, a private Twisted
        module imported in any form, are offenders outside the engine; an
        alias that starts with C{_}, a public name, a dunder, are not.
        """
        offenders = self._offenders(
            {
                "gateway/pipeline/x.py": (
                    "from twisted.web.http import _getContentFile, datetimeToString\n"
                    "from twisted.web._newclient import RequestNotSent\n"
                    "import twisted.web._newclient\n"
                    "from twisted.web import _newclient\n"
                    "from twisted.internet import reactor as _reactor\n"
                    "from twisted import __version__\n"
                    "from other._private import _thing\n"
                ),
                "gateway/http/y.py": "from twisted.web.http import _getContentFile\n",
            }
        )
        self.assertEqual(
            offenders,
            {
                ("gateway/pipeline/x.py", "twisted.web.http._getContentFile"): [1],
                ("gateway/pipeline/x.py", "twisted.web._newclient"): [2, 3, 4],
            },
        )

    def test_foreignPrivateAttributes(self) -> None:
        """
        Outside the engine, reading or writing a private attribute that no
        gateway code defines is an offence; one the gateway defines (on
        C{self}, in a class body, in C{__slots__}, as a function) is not,
        nor is a dunder.
        """
        offenders = self._offenders(
            {
                "gateway/pipeline/x.py": (
                    "class Mine:\n"
                    "    __slots__ = ('_slotted',)\n"
                    "    _classLevel = 1\n"
                    "    def __init__(self):\n"
                    "        self._mine = 1\n"
                    "    def _helper(self):\n"
                    "        return self.__class__\n"
                    "def use(other, request, headers):\n"
                    "    other._mine, other._slotted, other._classLevel, other._helper()\n"
                    "    if request._disconnected:\n"
                    "        headers._rawHeaders = {}\n"
                ),
                "gateway/http/y.py": "def engine(request):\n    return request._disconnected\n",
            }
        )
        self.assertEqual(
            offenders,
            {
                ("gateway/pipeline/x.py", "_disconnected"): [10],
                ("gateway/pipeline/x.py", "_rawHeaders"): [11],
            },
        )

    def test_transportImports(self) -> None:
        """
        The model may import no HTTP; a store may be a client through treq
        and the public names it is configured with, but import no HTTP
        server, no server class of C{twisted.web.http}, no client internals.
        """
        found = transportImports(
            {
                path: ast.parse(text)
                for path, text in {
                    "gateway/model/m.py": (
                        "import treq\n"
                        "from twisted.web.http import PotentialDataLoss\n"
                        "from twisted.internet.defer import Deferred\n"
                    ),
                    "gateway/store/s.py": (
                        "import treq\n"
                        "from twisted.web.client import Agent\n"
                        "from twisted.web.http import PotentialDataLoss, Request\n"
                        "from twisted.web import server\n"
                        "from klein import Klein\n"
                    ),
                    "gateway/admin/a.py": "from twisted.web.server import Site\n",
                }.items()
            }
        )
        self.assertEqual(
            found,
            [
                "gateway/model/m.py:1: treq",
                "gateway/model/m.py:2: twisted.web.http",
                "gateway/model/m.py:2: twisted.web.http.PotentialDataLoss",
                "gateway/store/s.py:3: twisted.web.http.Request",
                "gateway/store/s.py:4: twisted.web.server",
                "gateway/store/s.py:5: klein",
                "gateway/store/s.py:5: klein.Klein",
            ],
        )
