"""``/docs``: the API's Swagger UI page, served with its assets by the API itself.

FastAPI's default docs page loads Swagger UI's script and stylesheet (and a favicon) from
public hosts, so on a machine without internet access it is a blank page. Here the same
page (:func:`fastapi.openapi.docs.get_swagger_ui_html`) points at copies mounted under
:data:`ASSETS_URL`, taken from the ``fastapi-offline`` package (only its files are used:
Swagger UI 5, which renders the OpenAPI 3.1 document FastAPI writes; Swagger UI 4, as in
``swagger-ui-bundle``, refuses it). The app must be built with ``docs_url=None`` so the
default route does not shadow this one.

No OAuth2 redirect page is served: the API authenticates with a bearer key, no OAuth2 flow
that would need one.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs-assets"
#: Swagger UI's files (swagger-ui-bundle.js, swagger-ui.css, favicon.png).
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """Serve Swagger UI at :data:`DOCS_URL` over the app's own ``openapi_url``."""
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that serves the API under a prefix, every URL carries it.
        root = str(request.scope.get("root_path", ""))
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=None, swagger_ui_parameters=app.swagger_ui_parameters)
