"""The FastAPI application: the page in ``static/`` and the JSON API it calls.

``create_app`` loads the model once; every request then reads images through
:func:`digitrec.images.load_image` and :mod:`digitrec.recognize`, the same path as
``digitrec predict``. For kNN models the stored samples join the reference set at once
(:class:`digitrec.samples.PersonalModel`). Bad input is answered with a status and
``{"detail": "..."}``: 413 for bodies and images over the limits, 415 for media types that are
not images, 422 for malformed requests; never a 500.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from threadpoolctl import ThreadpoolController

from .. import __version__, config, models
from ..errors import ImageError
from ..images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, load_image
from ..models import Model
from ..preprocess import to_mnist_tile
from ..recognize import Reading, find_digits, read_tiles, readings_of, tiles_to_model_input
from ..samples import (
    Neighbor,
    PersonalModel,
    Sample,
    SampleError,
    SampleStore,
    database_path,
    encode_png,
    learns_from_samples,
)
from ..search import numba_threads
from .offline import add_offline_routes

STATIC = Path(__file__).parent / "static"
# Base64 makes a JSON body 4/3 of the image; the rest is room for the JSON or multipart frame.
_BODY_OVERHEAD = 64 * 1024


# --- response shapes (they are also the OpenAPI documentation) -----------------------------


class NeighborOut(BaseModel):
    label: int
    distance: float
    image: str = Field(description="data: URL of a PNG")
    sample_id: int | None = Field(description="the stored sample, or null for a training image")


class DigitOut(BaseModel):
    digit: int
    probability: float
    probabilities: list[float] = Field(description="one per digit 0-9")
    box: list[int] = Field(description="x, y, width, height in the image")
    tile: str = Field(description="data: URL of the 28x28 PNG tile the model saw")
    neighbors: list[NeighborOut] = Field(description="kNN models: the nearest references")


class ImageSize(BaseModel):
    width: int
    height: int


class PredictionOut(BaseModel):
    """What ``digitrec predict --json`` prints, plus tiles, neighbours and the image size."""

    text: str
    digit: int | None
    probability: float | None
    digits: list[DigitOut]
    diagnosis: str | None
    image: ImageSize


class SampleIn(BaseModel):
    image: str = Field(
        description="data: URL (or bare base64) of a PNG, JPEG or WebP of one digit: "
        "usually the tile from /api/predict"
    )
    label: int = Field(ge=0, le=9, strict=True)


class SampleOut(BaseModel):
    id: int
    label: int
    created: str
    tile: str = Field(description="data: URL of the 28x28 PNG tile")


class SampleList(BaseModel):
    count: int
    samples: list[SampleOut]


class Deleted(BaseModel):
    deleted: int


class Health(BaseModel):
    status: str
    model: str
    samples: int


class ModelOut(BaseModel):
    kind: str
    params: dict[str, Any]
    accuracy: float | None
    training_size: int | None
    dataset: str | None
    input_shape: list[int]
    classes: list[int]
    learns_from_samples: bool
    samples: int


class Problem(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "body or image over the limits"},
    415: {"model": Problem, "description": "not a PNG, JPEG or WebP image"},
    422: {"model": Problem, "description": "malformed request"},
}

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "string",
                            "description": "data:image/png;base64,... (a canvas' toDataURL)",
                        }
                    },
                    "required": ["image"],
                }
            },
        },
    }
}


# --- limits and errors ---------------------------------------------------------------------


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before reading them when the
    Content-Length says so, and while streaming when it does not (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            problem = None
            if not declared.isdigit():
                problem = (422, "Content-Length is not a number")
            elif int(declared) > self.max_bytes:
                problem = (413, self._too_large(int(declared)))
            if problem:
                response = JSONResponse({"detail": problem[1]}, status_code=problem[0])
                await response(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large(received, more=True))
            return message

        await self.app(scope, limited, send)

    def _too_large(self, size: int, more: bool = False) -> str:
        return (
            f"request body is {'over ' if more else ''}{size / 1e6:.1f} MB, "
            f"over the {self.max_bytes / 1e6:.1f} MB limit"
        )


def image_error_status(exc: ImageError) -> int:
    """The HTTP status for each kind of :class:`ImageError` that ``load_image`` raises."""
    message = str(exc)
    if message.endswith(" limit"):  # "... over the 20.0 MB limit", "... megapixel limit"
        return 413
    if "images are not supported" in message or "not a recognised image" in message:
        return 415
    return 422  # empty file, broken header, undecodable pixels, no ink


def decode_image_text(text: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL, or of bare base64."""
    payload = text
    if text.startswith("data:"):
        header, comma, payload = text.partition(",")
        if not comma:
            raise HTTPException(422, "data URL has no comma before its data")
        media_type, *options = header[len("data:") :].split(";")
        if "base64" not in options:
            raise HTTPException(422, "data URL must be base64-encoded (data:image/png;base64,...)")
        if media_type and not media_type.lower().startswith("image/"):
            raise HTTPException(415, f"data URL holds {media_type}, not an image")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "image is not valid base64") from None
    if not data:
        raise HTTPException(422, "image is empty")
    return data


def png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(pixels)).decode("ascii")


# --- the model, its samples, and how requests use them -------------------------------------


class _OneAtATime:
    """Model searches run one at a time, each on one thread.

    A single query is a few milliseconds of work that multithreading slows down (thread
    start-up, and cores that other requests or processes are using). Running them one at a
    time also matters for correctness: BLAS's thread count is process-wide, and numba's
    workqueue threading layer must not be entered from two threads at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blas = ThreadpoolController()  # finds the BLAS libraries once, not per query

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock, self._blas.limit(limits=1, user_api="blas"), numba_threads(1):
            yield


class Service:
    """The loaded model and the sample store, shared by all requests."""

    def __init__(self, model: Model, store: SampleStore, max_image_bytes: int, max_pixels: int):
        self.base = model
        self.store = store
        self.max_image_bytes = max_image_bytes
        self.max_pixels = max_pixels
        self.one_at_a_time = _OneAtATime()
        self.personal = (
            PersonalModel(model, search_context=self.one_at_a_time)
            if learns_from_samples(model)
            else None
        )
        if self.personal is not None:
            self.personal.sync(store)

    @property
    def model(self) -> Model:
        return self.personal if self.personal is not None else self.base

    def sync(self) -> None:
        """Pick up samples that another process (``digitrec samples import``) stored."""
        if self.personal is not None:
            self.personal.sync(self.store)

    def load(self, data: bytes, name: str) -> np.ndarray:
        try:
            return load_image(
                data, max_bytes=self.max_image_bytes, max_pixels=self.max_pixels, name=name
            )
        except ImageError as exc:
            raise HTTPException(image_error_status(exc), str(exc)) from None

    def predict(self, data: bytes, name: str) -> dict[str, Any]:
        image = self.load(data, name)
        self.sync()
        found = find_digits(image)
        nearest: list[list[Neighbor]] = [[] for _ in found.tiles]
        if found.diagnosis:
            reading = Reading(diagnosis=found.diagnosis)
        elif self.personal is not None:
            # One search gives the answer and the neighbours shown with it; searches lock
            # only themselves.
            inputs = tiles_to_model_input(found.tiles, self.base)
            probabilities, nearest = self.personal.explain(inputs)
            reading = Reading(
                readings_of(probabilities, self.personal.classes, found.tiles, found.boxes)
            )
        else:
            with self.one_at_a_time():
                reading = Reading(read_tiles(self.base, found.tiles, found.boxes))
        body = reading.to_json()
        for out, neighbors, digit in zip(body["digits"], nearest, reading.digits, strict=True):
            out["tile"] = png_data_url(digit.tile)
            out["neighbors"] = self._neighbors_json(neighbors)
        body["image"] = {"width": int(image.shape[1]), "height": int(image.shape[0])}
        return body

    def _neighbors_json(self, neighbors: list[Neighbor]) -> list[dict[str, Any]]:
        scale = 255.0 / self.base.max_value
        return [
            {
                "label": n.label,
                "distance": round(n.distance, 3),
                "image": png_data_url(np.rint(n.image * scale).astype(np.uint8)),
                "sample_id": n.sample_id,
            }
            for n in neighbors
            if n.image is not None
        ]

    def add_sample(self, data: bytes, label: int) -> Sample:
        if label not in {int(c) for c in self.base.classes}:
            raise HTTPException(422, f"this model does not know the digit {label}")
        image = self.load(data, "sample image")
        try:
            # A tile from /api/predict passes through unchanged; any other picture of one
            # digit is made into a tile the way training folders are.
            tile = to_mnist_tile(image)
        except ImageError as exc:
            raise HTTPException(422, f"sample image: {exc}") from None
        sample = self.store.add(tile, label)
        if self.personal is not None:
            self.personal.add_sample(sample, self.store.revision())
        return sample

    def delete_sample(self, sample_id: int) -> None:
        if not self.store.delete(sample_id):
            raise HTTPException(404, f"no sample {sample_id}")
        if self.personal is not None:
            self.personal.remove_sample(sample_id, self.store.revision())


def sample_json(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "label": sample.label,
        "created": sample.created,
        "tile": png_data_url(sample.tile),
    }


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "malformed request"


# --- the app -------------------------------------------------------------------------------


def create_app(
    model_dir: Path | None = None,
    model: Model | None = None,
    home: Path | None = None,
    *,
    max_image_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    """The web app for ``model`` (or the model in ``model_dir``, by default the default model),
    keeping samples in ``home`` (by default the data directory)."""
    if model is None:
        model = models.load(Path(model_dir) if model_dir else config.default_model_dir())
    service = Service(model, SampleStore(database_path(home)), max_image_bytes, max_pixels)
    app = FastAPI(
        title="digitrec",
        version=__version__,
        description="Read handwritten digits from drawings and photos; correct the answers.",
        # /docs comes from the package (web.offline); ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=max_image_bytes * 4 // 3 + _BODY_OVERHEAD)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(SampleError)
    async def sample_error(request: Request, exc: SampleError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    add_offline_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", response_model=Health)
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.kind, "samples": service.store.count()}

    @app.get("/api/model", response_model=ModelOut)
    def model_info() -> dict[str, Any]:
        dataset = model.info.get("dataset", {})
        return {
            "kind": model.kind,
            "params": model.params,
            "accuracy": model.info.get("metrics", {}).get("accuracy"),
            "training_size": dataset.get("n_train"),
            "dataset": dataset.get("name"),
            "input_shape": list(model.input_shape),
            "classes": [int(c) for c in model.classes],
            "learns_from_samples": service.personal is not None,
            "samples": service.store.count(),
        }

    @app.post(
        "/api/predict",
        response_model=PredictionOut,
        responses=_ERRORS,
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(request: Request) -> dict[str, Any]:
        """Read the digits in an image: a multipart upload (field ``file``) or JSON
        ``{"image": "data:image/png;base64,..."}`` from a canvas."""
        data, name = await _image_from_request(request)
        return await run_in_threadpool(service.predict, data, name)

    @app.get("/api/samples", response_model=SampleList)
    def list_samples() -> dict[str, Any]:
        stored = service.store.all()
        return {"count": len(stored), "samples": [sample_json(s) for s in reversed(stored)]}

    @app.post(
        "/api/samples",
        status_code=201,
        response_model=SampleOut,
        responses=_ERRORS,
        dependencies=[Depends(_require_json)],
    )
    def add_sample(body: SampleIn) -> dict[str, Any]:
        """Store a corrected digit; kNN models use it from the next prediction on."""
        return sample_json(service.add_sample(decode_image_text(body.image), body.label))

    @app.get("/api/samples/{sample_id}", response_model=SampleOut, responses={404: {}})
    def get_sample(sample_id: int) -> dict[str, Any]:
        sample = service.store.get(sample_id)
        if sample is None:
            raise HTTPException(404, f"no sample {sample_id}")
        return sample_json(sample)

    @app.delete("/api/samples/{sample_id}", response_model=Deleted, responses={404: {}})
    def delete_sample(sample_id: int) -> dict[str, Any]:
        service.delete_sample(sample_id)
        return {"deleted": sample_id}

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    return app


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_json(request: Request) -> None:
    # A dependency runs before FastAPI validates the body, which would call any other media
    # type a malformed object (422) rather than an unsupported one.
    media_type = _media_type(request)
    if media_type != "application/json":
        sent = media_type or "a body without a content type"
        raise HTTPException(415, f"send the sample as application/json, not {sent}")


async def _image_from_request(request: Request) -> tuple[bytes, str]:
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        return await _image_from_form(request)
    if media_type == "application/json":
        body = await request.body()
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPException(422, f"body is not valid JSON ({exc})") from None
        if not isinstance(payload, dict) or "image" not in payload:
            raise HTTPException(422, 'JSON body must be an object with an "image" field')
        if not isinstance(payload["image"], str):
            raise HTTPException(422, '"image" must be a data URL string')
        return decode_image_text(payload["image"]), "image"
    raise HTTPException(
        415,
        f"cannot read a {media_type or 'body without a content type'}: send multipart/form-data "
        'with a "file" field, or JSON {"image": "data:image/png;base64,..."}',
    )


async def _image_from_form(request: Request) -> tuple[bytes, str]:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        # Starlette answers 400 for a broken multipart body; to this API it is malformed input.
        raise HTTPException(422, f"malformed multipart body: {exc.detail}") from None
    except Exception as exc:
        raise HTTPException(422, f"malformed multipart body: {exc}") from None
    try:
        upload = form.get("file")
        if upload is None:
            raise HTTPException(422, 'multipart body has no "file" field')
        if isinstance(upload, str):
            raise HTTPException(422, '"file" must be a file upload, not a text field')
        return await upload.read(), upload.filename or "upload"
    finally:
        await form.close()
