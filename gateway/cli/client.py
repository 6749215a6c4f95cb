"""
The admin API as the CLI talks to it (L{AdminClient}).
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
)

import attrs

from gateway.cli.problems import AdminError, Problem
from gateway.store import KINDS

#: Where C{apply} and C{export} find the admin when neither C{--admin} nor
#: C{$GATEWAY_ADMIN} says.
DEFAULT_ADMIN = "http://127.0.0.1:9090"


#: Seconds to wait for each answer of the admin.
DEFAULT_TIMEOUT = 10.0


_API_PREFIX = "/api/v1"


def _describeReason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _problems(errors: Any) -> List[Problem]:
    """
    @return: the admin's C{errors} list as L{Problem}s (what of it is
        well-formed).
    """
    if not isinstance(errors, list):
        return []
    return [
        Problem(str(error.get("field") or ""), str(error.get("error") or ""))
        for error in errors
        if isinstance(error, dict)
    ]


@attrs.define
class AdminClient:
    """
    A synchronous client of the admin REST API.

    @ivar url: the admin's base URL, e.g. C{http://127.0.0.1:9090}.
    @ivar token: the bearer token, or L{None}.
    @ivar timeout: seconds to wait for each answer.
    @ivar urlopen: L{urllib.request.urlopen} or a stand-in, for tests.
    """

    url: str = attrs.field(converter=lambda url: normaliseAdminURL(url))
    token: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT
    urlopen: Callable[..., Any] = urllib.request.urlopen

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """
        Make one request and read its JSON answer.

        @param path: under C{/api/v1}, e.g. C{/servers}.
        @return: the decoded JSON, or L{None} for a C{204}.
        @raise AdminError: when the admin cannot be reached, does not answer
            in time, refuses the token, answers with something that is not
            JSON, or answers with an error (its message and field).
        """
        return self.call(method, path, body)[0]

    def call(
        self, method: str, path: str, body: Any = None, timeout: Optional[float] = None
    ) -> Tuple[Any, Any]:
        """
        Make one request and read its JSON answer, as L{request}.

        @param timeout: how long to wait for the answer, in seconds; by
            default C{self.timeout}.
        @return: C{(decoded JSON, the answer's headers)}.
        """
        timeout = self.timeout if timeout is None else timeout
        target = self.url + _API_PREFIX + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(target, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            try:
                with self.urlopen(request, timeout=timeout) as answer:
                    status, headers, raw = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as e:
                status, headers = e.code, e.headers
                try:
                    raw = e.read()
                finally:
                    e.close()
        except urllib.error.URLError as e:
            if isinstance(e.reason, socket.timeout):
                raise self._timedOut(timeout)
            raise AdminError(
                f"cannot reach the admin at {self.url}: {_describeReason(e.reason)}"
                " (is the gateway's admin running there? see --admin or $GATEWAY_ADMIN)"
            )
        except socket.timeout:
            raise self._timedOut(timeout)
        except (OSError, http.client.HTTPException) as e:
            raise AdminError(
                f"the connection to the admin at {self.url} failed: {_describeReason(e)}"
            )
        return self._decode(method, path, status, headers, raw), headers

    def _timedOut(self, timeout: float) -> AdminError:
        return AdminError(f"the admin at {self.url} did not answer within {timeout:g} s")

    def _decode(self, method: str, path: str, status: int, headers: Any, raw: bytes) -> Any:
        if status == 401:
            if self.token:
                hint = "the admin refused the token; check --token or $GATEWAY_TOKEN"
            else:
                hint = "the admin needs a token; pass it with --token or $GATEWAY_TOKEN"
            raise AdminError(f"401 Unauthorized: {hint}", 401)
        if status == 204:
            return None
        try:
            value = json.loads(raw.decode("utf-8"))
        except ValueError:
            contentType = (headers.get("Content-Type") if headers is not None else None) or "none"
            raise AdminError(
                f"{method} {self.url}{_API_PREFIX}{path}: the answer (status {status},"
                f" Content-Type {contentType}) is not JSON; is {self.url} the gateway's admin?",
                status,
            )
        if status >= 400:
            message, fieldName, error = str(status), "", ""
            problems: List[Problem] = []
            if isinstance(value, dict):
                error = str(value.get("error", ""))
                message = f"{status} {error}".rstrip()
                fieldName = str(value.get("field") or "")
                problems = _problems(value.get("errors"))
            if len(problems) > 1:
                # Every error of the resource, one a line.
                message = f"{status}: {len(problems)} errors" + "".join(
                    f"\n  {problem}" for problem in problems
                )
            elif fieldName:
                message += f" (field {fieldName})"
            if status == 404 and method == "GET" and path.count("/") == 1:
                message += f"; is {self.url} the gateway's admin?"
            raise AdminError(message, status, fieldName, problems, error)
        return value

    def listKind(self, kind: str) -> List[Dict[str, Any]]:
        """
        @return: every resource of one kind, as the admin holds it.
        """
        items = self.request("GET", f"/{kind}")
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
        ):
            raise AdminError(
                f"GET {self.url}{_API_PREFIX}/{kind}: the answer is not a list of resources;"
                f" is {self.url} the gateway's admin?"
            )
        return items

    def state(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """
        @return: C{{kind: {name: JSON}}} of every resource the admin holds.
        """
        return self.config()[0]

    def config(self) -> Tuple[Dict[str, Dict[str, Dict[str, Any]]], Optional[int]]:
        """
        Read every resource the admin holds, in one request at one store
        revision (C{GET /api/v1/config}); from an admin without it (an
        older gateway), one request per kind.

        @return: C{({kind: {name: JSON}}, the store revision read)}; the
            revision is L{None} from an older admin.
        """
        try:
            value, headers = self.call("GET", "/config")
        except AdminError as e:
            if e.status != 404:
                raise
            state = {kind: {item["name"]: item for item in self.listKind(kind)} for kind in KINDS}
            return state, None
        if not isinstance(value, dict) or not all(
            isinstance(value.get(kind, []), list)
            and all(
                isinstance(item, dict) and isinstance(item.get("name"), str)
                for item in value.get(kind, [])
            )
            for kind in KINDS
        ):
            raise AdminError(
                f"GET {self.url}{_API_PREFIX}/config: the answer is not a configuration;"
                f" is {self.url} the gateway's admin?"
            )
        revision = headers.get("X-Gateway-Revision") if headers is not None else None
        state = {kind: {item["name"]: item for item in value.get(kind, [])} for kind in KINDS}
        return state, int(revision) if revision and revision.isdigit() else None

    def batch(
        self, changes: List[Dict[str, Any]], revision: Optional[int], timeout: float
    ) -> Tuple[Any, Any]:
        """
        Put and delete many resources in one revision, all or none
        (C{POST /api/v1/batch}), provided nothing changed since
        C{revision} (when given).

        @param changes: C{{"op": "put"|"delete", "kind", "name"[, "value"]}}.
        @param timeout: how long to wait for the answer, in seconds.
        @return: C{(the admin's answer, its headers)}.
        """
        body: Dict[str, Any] = {"changes": changes}
        if revision is not None:
            body["revision"] = revision
        return self.call("POST", "/batch", body, timeout)

    def _itemPath(self, kind: str, name: str) -> str:
        return f"/{kind}/{urllib.parse.quote(name, safe='')}"

    def put(self, kind: str, name: str, value: Mapping[str, Any]) -> Any:
        """
        Create or replace one resource.
        """
        return self.request("PUT", self._itemPath(kind, name), dict(value))

    def delete(self, kind: str, name: str) -> None:
        """
        Delete one resource.
        """
        self.request("DELETE", self._itemPath(kind, name))

    def purgeCache(self, api: str) -> Dict[str, Any]:
        """
        Purge an API's response cache.

        @return: what the admin says it did (see
            L{gateway.admin.api.AdminAPI.purgeCache}).
        """
        answer = self.request("DELETE", self._itemPath("apis", api) + "/cache")
        if not isinstance(answer, dict):
            raise AdminError(
                f"DELETE {self.url}{_API_PREFIX}/apis/{api}/cache: the answer is not a JSON"
                f" object; is {self.url} the gateway's admin?"
            )
        return answer


def normaliseAdminURL(url: str) -> str:
    """
    @return: the admin's base URL without a trailing C{/} or C{/api/v1}.
    @raise ValueError: when it is not an C{http(s)://host[:port]} URL.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an admin URL such as {DEFAULT_ADMIN}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{url!r} has an invalid port")
    path = parts.path.rstrip("/")
    if path.endswith(_API_PREFIX):
        path = path[: -len(_API_PREFIX)]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
