"""
The admin web UI: the static files of C{webui/} (plain ES modules and CSS,
no build step), served by the admin beside its REST API.

L{webuiResource} serves the files with the content types browsers insist on
for modules (C{text/javascript}), a strict Content-Security-Policy and
C{Cache-Control: no-cache} (the file names carry no content hash, so the
browser revalidates with C{If-Modified-Since} and gets a 304 when nothing
changed).  L{withWebUI} puts it at the root of the admin site: C{/} and the
UI's own files go to the UI, every other path (C{/api/v1/...}, C{/healthz},
C{/metrics}) to the admin's resource untouched, and C{/ui} redirects to C{/}.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional

from twisted.logger import Logger
from twisted.python.filepath import InsecurePath
from twisted.web import pages, static
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.util import Redirect

log = Logger()


def _findWebUI() -> str:
    """
    The UI's folder: C{webui/} of a source checkout (or an editable
    install), else where a regular install puts its data files.
    """
    checkout = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "webui"
    )
    installed = os.path.join(sys.prefix, "share", "twisted-gateway", "webui")
    if not os.path.isdir(checkout) and os.path.isdir(installed):
        return installed
    return checkout


#: Where the UI's files are.
WEBUI_ROOT = _findWebUI()

#: Content types by extension, over the system's C{mime.types}: a module
#: script must be served as JavaScript or the browser refuses to run it.
CONTENT_TYPES: Dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

#: Everything comes from the admin itself: no CDN, no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class WebUIFile(static.File):
    """
    A L{static.File} for the UI: known content types, C{index.html} for a
    directory, no directory listings, no dot-files, and cache and security
    headers on every answer.
    """

    contentTypes = dict(static.File.contentTypes, **CONTENT_TYPES)
    indexNames = ["index.html"]
    # (static.File declares the deprecated resource class it uses here; any
    # IResource serves.)
    childNotFound = pages.notFound("Not found", "No such file in the web UI.")  # type: ignore[assignment]

    def directoryListing(self) -> IResource:
        """
        A directory without C{index.html} is not listed.
        """
        return self.childNotFound

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """
        Hide dot-files (editor swap files, C{.gitignore}, ...).
        """
        if path.startswith(b"."):
            return self.childNotFound
        return super().getChild(path, request)

    def render_GET(self, request: IRequest) -> Any:
        """
        Serve the file, with C{Cache-Control: no-cache}, C{nosniff} and, for
        pages, the Content-Security-Policy.
        """
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        if self.basename().endswith(".html") or self.isdir():
            request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode("ascii"))
            request.setHeader(b"X-Frame-Options", b"DENY")
        return super().render_GET(request)

    render_HEAD = render_GET


def webuiResource(root: Optional[str] = None) -> IResource:
    """
    The resource that serves the web UI's files.

    @param root: the folder of the UI (C{index.html}, C{style.css},
        C{js/...}); by default L{WEBUI_ROOT}.
    @return: a L{WebUIFile} for it, or a resource answering 404 with an
        explanation when the folder is missing (an installation without
        the UI's files).
    """
    root = root or WEBUI_ROOT
    if not os.path.isfile(os.path.join(root, "index.html")):
        log.warn("no web UI at {root}: the admin serves its API only", root=root)
        return pages.notFound("No web UI", f"The web UI files are not installed ({root}).")
    return WebUIFile(root)


class AdminRoot(Resource):
    """
    The root of the admin site: the web UI's files at C{/}, and every other
    path served by the admin's own resource (a Klein app routing on the
    whole path).

    @ivar admin: the admin's resource (L{gateway.admin.api.AdminAPI.resource}).
    @ivar webui: the UI's resource (L{webuiResource}).
    """

    def __init__(self, admin: IResource, webui: IResource) -> None:
        super().__init__()
        self.admin = admin
        self.webui = webui

    def _isUIPath(self, name: bytes) -> bool:
        if name == b"":
            return True
        if name.startswith(b".") or not isinstance(self.webui, static.File):
            return False
        try:
            return self.webui.child(name.decode("utf-8")).exists()
        except (InsecurePath, UnicodeDecodeError):
            return False

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        """
        Route on the first path segment.
        """
        if self._isUIPath(name):
            return self.webui.getChildWithDefault(name, request)
        if name == b"ui" and not [s for s in request.postpath if s]:
            parent = request.prepath[:-1]
            return Redirect(b"/" + b"".join(s + b"/" for s in parent))
        # Give the segment back: the admin routes on the whole path.
        request.postpath.insert(0, request.prepath.pop())
        return self.admin

    def render(self, request: IRequest) -> Any:
        # Only reached for a request with no path at all.
        return self.admin.render(request)


def withWebUI(admin: IResource, root: Optional[str] = None) -> IResource:
    """
    The admin site's root resource with the web UI beside the admin's own
    resource: C{AdminSite(withWebUI(adminAPI.resource()))}.

    @param admin: the admin's resource.
    @param root: the UI's folder, by default L{WEBUI_ROOT}.
    """
    return AdminRoot(admin, webuiResource(root))
