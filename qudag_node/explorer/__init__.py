"""The explorer: a live page of the node (``/explorer``) made of the files in this
package, served as they are: no build step, nothing fetched from elsewhere.

The page reads the node's own API with relative URLs only, so it works behind any
proxy and against any node of a network. Each of its files is served with a strict
Content-Security-Policy: scripts, styles and connections to this origin only, no
inline script or style, no framing.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

#: The page's address; ``/`` redirects here.
PAGE = "/explorer"
#: Each file of the page: its URL, its name in this package and its content type.
ASSETS = (
    (PAGE, "index.html", "text/html"),
    (f"{PAGE}/explorer.js", "explorer.js", "text/javascript"),
    (f"{PAGE}/explorer.css", "explorer.css", "text/css"),
)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> bytes:
    """The bytes of one of the page's files, as kept in the package."""
    return resources.files(__name__).joinpath(name).read_bytes()


def _serve(body: bytes, content_type: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        """GET a file of the explorer page."""
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_HEADERS)

    return handler


async def _to_page(request: web.Request) -> web.Response:
    """GET /: the explorer page is the node's front page."""
    return web.Response(status=302, headers={"Location": PAGE})


def add_routes(router: web.UrlDispatcher) -> None:
    """Serve the page's files (read once, at start) and redirect ``/`` to the page."""
    router.add_get("/", _to_page)
    for url, name, content_type in ASSETS:
        router.add_get(url, _serve(asset(name), content_type))
