"""What makes the page an installable app that works with no network, and ``/docs`` offline.

- ``/manifest.webmanifest`` and the icons: the browser's install criteria;
- ``/sw.js``: the service worker, served from the root so that it controls the whole site;
  its cache is named for the package version and the on-device model, so a new release or
  model replaces the old copies;
- ``/model.onnx`` and ``/model.json``: the on-device model the page uses when the server
  cannot be reached: the ``cnn-robust`` network digitrec ships
  (:data:`digitrec.nets.onnx_network.SHIPPED_DIRECTORY`; its ``model.json`` says how it was
  made), which the server's default model also asks for a second opinion;
- onnxruntime-web's WebAssembly file, kept gzipped in the package and sent as such;
- ``/docs``: Swagger UI from a vendored copy (``static/vendor``), not a CDN.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from digitrec import __version__
from digitrec.nets.onnx_network import SHIPPED_DIRECTORY

STATIC = Path(__file__).parent / "static"
ON_DEVICE = Path(str(SHIPPED_DIRECTORY))
ORT = STATIC / "vendor" / "onnxruntime-web"
WASM_NAME = "ort-wasm-simd-threaded.wasm"
SWAGGER = "/static/vendor/swagger-ui"


@cache
def _model_digest() -> str:
    # The description records the network's sha256 (checked by nets.onnx_network.shipped).
    return on_device_model()["sha256"][:12]


def cache_name() -> str:
    """The service worker's cache: one per release and on-device model."""
    return f"digitrec-{__version__}-{_model_digest()}"


def on_device_model() -> dict:
    """The description of the shipped on-device model (kind, classes, accuracy, origin)."""
    return json.loads((ON_DEVICE / "model.json").read_text())


def add_offline_routes(app: FastAPI) -> None:
    """Add the app manifest, service worker, on-device model and offline ``/docs`` routes.
    Call before mounting ``/static``, which would otherwise answer the WebAssembly path."""

    @app.get("/manifest.webmanifest", include_in_schema=False)
    async def manifest() -> FileResponse:
        return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")

    @app.get("/sw.js", include_in_schema=False)
    async def service_worker() -> Response:
        script = (STATIC / "sw.js").read_text().replace("__CACHE_NAME__", cache_name())
        # Browsers check for a new worker on each visit; no-cache makes that check real.
        headers = {"Cache-Control": "no-cache"}
        return Response(script, media_type="text/javascript", headers=headers)

    @app.get("/model.onnx", include_in_schema=False)
    async def model_file() -> FileResponse:
        return FileResponse(ON_DEVICE / "model.onnx", media_type="application/octet-stream")

    @app.get("/model.json", include_in_schema=False)
    async def model_description() -> FileResponse:
        return FileResponse(ON_DEVICE / "model.json", media_type="application/json")

    @app.get(f"/static/vendor/onnxruntime-web/{WASM_NAME}", include_in_schema=False)
    async def wasm(request: Request) -> Response:
        packed = _packed_wasm()
        headers = {"Cache-Control": "public, max-age=86400"}
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return Response(packed, media_type="application/wasm", headers=headers)
        return Response(gzip.decompress(packed), media_type="application/wasm", headers=headers)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER}/swagger-ui.css",
            swagger_favicon_url="/static/icon-192.png",
        )


@cache
def _packed_wasm() -> bytes:
    return (ORT / f"{WASM_NAME}.gz").read_bytes()
