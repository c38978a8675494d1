"""The FastAPI application: the page in ``static/`` and the JSON API it calls.

``create_app`` loads the model once; every request then reads images through
:func:`digitrec.data.images.load_image` and :mod:`digitrec.reading.recognize`, the same path
as ``digitrec predict``. For kNN models the stored samples join the reference set at once
(:class:`digitrec.neighbors.personal.PersonalModel`). Bad input is answered with a status
and ``{"detail": "..."}``: 413 for bodies and images over the limits, 415 for media types
that are not images, 422 for malformed requests, 408 for bodies that arrive too slowly, 503
with Retry-After when too many images are being read; anything unforeseen is a JSON 500,
never plain text (the guards against abusive clients are in :mod:`digitrec.apps.web.guards`).
Errors raised by digitrec carry their status (:mod:`digitrec.errors`): the app maps them by
class, never by message.

Samples belong to their owner (:mod:`digitrec.apps.web.access` says who that is): a user's
corrections change only that user's answers. Writes may need a token, are rate-limited per
client, and a user may store at most ``max_samples_per_user``. When the sample database is
deleted it is created again; when it is locked or unreadable, the sample routes answer 503
while predictions go on with the samples last loaded, and ``/api/health`` says "degraded".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from threadpoolctl import ThreadpoolController

from digitrec import __version__, config, models
from digitrec.apps.web.access import (
    RateLimit,
    check_token,
    identity_from,
    remember_identity,
)
from digitrec.apps.web.guards import (
    RequestGuard,
    WorkPool,
    answer_json_errors,
    lower_priority,
)
from digitrec.apps.web.offline import add_offline_routes
from digitrec.data.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    declared_pixels,
    load_image,
)
from digitrec.errors import DigitrecError, ImageError
from digitrec.explanation import Reference
from digitrec.models import Model
from digitrec.neighbors.personal import PersonalModel, learns_from_samples
from digitrec.neighbors.search import numba_threads
from digitrec.persistence.sample_db import (
    Sample,
    SampleError,
    SampleStore,
    SampleStoreUnavailable,
    database_path,
    encode_png,
)
from digitrec.reading.framing import to_mnist_tile
from digitrec.reading.page import LAYOUTS
from digitrec.reading.recognize import read_images

STATIC = Path(__file__).parent / "static"
MAX_SAMPLES_PER_USER = 10_000
# Writes per client address: a burst of 30, then one every 2 s (a person correcting digits
# by hand saves far fewer; a script posting 22 a second is held to 0.5).
WRITE_BURST, WRITES_PER_SECOND = 30, 0.5
_log = logging.getLogger(__name__)
# Base64 makes a JSON body 4/3 of the image; the rest is room for the JSON or multipart frame.
_BODY_OVERHEAD = 64 * 1024
# Images with more pixels are read in the work pool's heavy lane, one at a time.
_HEAVY_PIXELS = 4_000_000


# --- response shapes (they are also the OpenAPI documentation) -----------------------------


class NeighborOut(BaseModel):
    label: int
    distance: float
    image: str = Field(description="data: URL of a PNG")
    sample_id: int | None = Field(description="the stored sample, or null for a training image")


class ReferenceOut(BaseModel):
    label: int
    distance: float | None = Field(description="the model's distance to it (see meaning)")
    weight: float | None = Field(description="its weight in the vote, for models that vote")
    sample_id: int | None
    image: str | None = Field(description="data: URL of a PNG")


class ClassOut(BaseModel):
    label: int
    nearest: ReferenceOut | None = Field(description="its nearest reference")
    vote: float | None = Field(description="its share of the vote (kNN models)")
    hyperplane: float | None = Field(description="knn-idm-hknn: its hyperplane distance")
    network: float | None = Field(
        None, description="knn-idm-hknn: the shipped network's probability of this class"
    )
    score: float | None = Field(
        description="knn-idm-hknn: IDM + weight x hyperplane + weight x -log network; lowest wins"
    )


class ExplanationOut(BaseModel):
    """Why the model answered so, from what it used to decide (digitrec.explanation)."""

    method: str = Field(description='"vote", "hybrid" or "occlusion"')
    answer: int
    summary: str = Field(description="one sentence on why the answer won")
    meaning: str = Field(description="what the distances mean, in words")
    distance_name: str = Field(description='"distance" or "IDM distance"')
    voters: list[ReferenceOut] = Field(description="the references that voted")
    classes: list[ClassOut] = Field(description="the best classes, best first")
    heatmap: str | None = Field(description="occlusion: data: URL of the tile with its heat")


class DigitOut(BaseModel):
    digit: int
    probability: float
    probabilities: list[float] = Field(description="one per digit 0-9")
    box: list[int] = Field(description="x, y, width, height in the image")
    confidence: float = Field(description="the model's probability of its answer")
    tile: str = Field(description="data: URL of the 28x28 PNG tile the model saw")
    neighbors: list[NeighborOut] = Field(
        description="kNN models: the references shown in the explanation"
    )
    explanation: ExplanationOut | None


class ImageSize(BaseModel):
    width: int
    height: int


class FieldDigitOut(BaseModel):
    digit: int
    probability: float
    probabilities: list[float]
    box: list[int]
    confidence: float


class FieldOut(BaseModel):
    """One number of a page read by layout."""

    text: str
    box: list[int]
    confidence: float = Field(description="the product of its digits' confidences")
    needs_review: bool
    diagnosis: str | None = Field(description="why a person should check it")
    column: int | None
    digits: list[FieldDigitOut]


class PredictionOut(BaseModel):
    """What ``digitrec predict --json`` prints, plus tiles, neighbours and the image size."""

    text: str
    digit: int | None
    probability: float | None
    digits: list[DigitOut]
    diagnosis: str | None
    needs_review: bool
    lines: list[list[FieldOut]] = Field(description="a page's lines of numbers, when read so")
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
    shared: bool = Field(description="in the shared set (everyone's answers), not yours")
    tile: str = Field(description="data: URL of the 28x28 PNG tile")


class SampleList(BaseModel):
    count: int
    samples: list[SampleOut]


class Deleted(BaseModel):
    deleted: int


class Health(BaseModel):
    status: str = Field(description='"ok", or "degraded" when the sample database is not')
    model: str
    samples: int | str = Field(description='samples stored, or "unavailable"')
    detail: str | None = None


class MergeIn(BaseModel):
    user: str = Field(description="the user whose samples join the shared set")


class Merged(BaseModel):
    user: str
    merged: int


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

_LAYOUT_SCHEMA = {
    "type": "string",
    "enum": list(LAYOUTS),
    "default": "number",
    "description": "number: all digits as one number; lines: lines of numbers (`lines` "
    "in the answer); table: lines aligned into columns (each field's `column`); auto: "
    "lines, with one number read as one number",
}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "layout": _LAYOUT_SCHEMA,
                    },
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
                        },
                        "layout": _LAYOUT_SCHEMA,
                    },
                    "required": ["image"],
                }
            },
        },
    }
}


# --- limits and errors ---------------------------------------------------------------------




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
    """The loaded model and the sample store, shared by all requests, and who may write."""

    def __init__(
        self,
        model: Model,
        store: SampleStore,
        max_image_bytes: int,
        max_pixels: int,
        *,
        write_token: str | None = None,
        admin_token: str | None = None,
        write_limit: RateLimit | None = None,
        max_samples_per_user: int = MAX_SAMPLES_PER_USER,
    ):
        self.base = model
        self.store = store
        self.max_image_bytes = max_image_bytes
        self.max_pixels = max_pixels
        self.write_token = write_token
        self.admin_token = admin_token
        self.write_limit = write_limit or RateLimit(WRITE_BURST, WRITES_PER_SECOND)
        self.max_samples_per_user = max_samples_per_user
        self.one_at_a_time = _OneAtATime()
        self.personal = (
            PersonalModel(
                model,
                search_context=self.one_at_a_time,
                # Sample indexes are built behind the answers: below the requests' priority.
                index_executor=ThreadPoolExecutor(1, "digitrec-index", initializer=lower_priority),
            )
            if learns_from_samples(model)
            else None
        )
        self.sync(None)

    def model_for(self, owner: str) -> Model:
        return self.personal.for_owner(owner) if self.personal is not None else self.base

    def sync(self, owner: str | None) -> None:
        """Pick up samples that another process (``digitrec samples import``) stored. A
        database that cannot be read now leaves the samples last loaded in use: answers go
        on, and ``/api/health`` reports it."""
        if self.personal is None:
            return
        try:
            self.personal.sync(self.store, owner)
        except SampleStoreUnavailable as exc:
            _log.warning("answering with the samples last loaded: %s", exc)

    def load(self, data: bytes, name: str) -> np.ndarray:
        """The image, or an :class:`ImageError` whose class carries the HTTP status."""
        return load_image(
            data, max_bytes=self.max_image_bytes, max_pixels=self.max_pixels, name=name
        )

    def predict(
        self,
        data: bytes,
        name: str,
        owner: str,
        abandoned: threading.Event | None = None,
        layout: str = "number",
    ) -> dict[str, Any]:
        image = self.load(data, name)
        if abandoned is not None and abandoned.is_set():
            raise HTTPException(499, "client closed the request")
        self.sync(owner)
        # One search gives the answer and the neighbours shown with it; the personal model's
        # searches lock only themselves, any other model's call runs one at a time.
        context = contextlib.nullcontext if self.personal is not None else self.one_at_a_time
        model = self.model_for(owner)
        (reading,) = read_images(model, [image], explain=True, model_context=context, layout=layout)
        body = reading.to_json()
        for out, digit in zip(body["digits"], reading.digits, strict=True):
            out["tile"] = png_data_url(digit.tile)
            explained = digit.explanation
            out["neighbors"] = self._neighbors_json(explained.references if explained else [])
            out["explanation"] = explained.to_json(self.base.max_value) if explained else None
        body["image"] = {"width": int(image.shape[1]), "height": int(image.shape[0])}
        return body

    def _neighbors_json(self, neighbors: list[Reference]) -> list[dict[str, Any]]:
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

    def add_sample(
        self, data: bytes, label: int, owner: str, abandoned: threading.Event | None = None
    ) -> Sample:
        if label not in {int(c) for c in self.base.classes}:
            raise HTTPException(422, f"this model does not know the digit {label}")
        image = self.load(data, "sample image")
        if abandoned is not None and abandoned.is_set():
            # Nobody hears the answer: store nothing the client could not know about.
            raise HTTPException(499, "client closed the request")
        try:
            # A tile from /api/predict passes through unchanged; any other picture of one
            # digit is made into a tile the way training folders are.
            tile = to_mnist_tile(image)
        except ImageError as exc:
            raise HTTPException(422, f"sample image: {exc}") from None
        (sample,) = self.store.add_many([tile], [label], owner, self.max_samples_per_user)
        if self.personal is not None:
            self.personal.add_sample(sample, self.store.revision(owner))
        return sample

    def delete_sample(self, sample_id: int, owner: str) -> None:
        """Delete one of ``owner``'s samples (another user's, or the shared set's, is a 404:
        it is none of theirs)."""
        if not self.store.delete(sample_id, owner):
            raise HTTPException(404, f"no sample {sample_id} of yours")
        if self.personal is not None:
            self.personal.remove_sample(sample_id, self.store.revision(owner), owner)

    def health(self) -> dict[str, Any]:
        """What ``/api/health`` says: never an error, whatever the database's state."""
        try:
            count = self.store.writable_count()
        except SampleError as exc:
            return {
                "status": "degraded",
                "model": self.base.kind,
                "samples": "unavailable",
                "detail": str(exc),
            }
        return {"status": "ok", "model": self.base.kind, "samples": count, "detail": None}


def sample_json(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "label": sample.label,
        "created": sample.created,
        "shared": sample.owner == "",
        "tile": png_data_url(sample.tile),
    }


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "malformed request"


# --- reading the request ------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_json(request: Request) -> None:
    # A dependency runs before FastAPI validates the body, which would call any other media
    # type a malformed object (422) rather than an unsupported one.
    media_type = _media_type(request)
    if media_type != "application/json":
        sent = media_type or "a body without a content type"
        raise HTTPException(415, f"send the sample as application/json, not {sent}")


T = TypeVar("T")


async def _in_work_pool(
    request: Request, data: bytes, job: Callable[[threading.Event], T]
) -> T:
    """``job(abandoned)`` in the work pool's lane for an upload of ``data``: the heavy lane
    when its header declares over ``_HEAVY_PIXELS`` pixels."""
    work: WorkPool = request.app.state.work
    return await work.run(request, declared_pixels(data) > _HEAVY_PIXELS, job)


def _layout_choice(value: object) -> str:
    """The request's ``layout``, checked: one of :data:`~digitrec.reading.page.LAYOUTS`."""
    if value is None:
        return "number"
    if value not in LAYOUTS:
        raise HTTPException(422, f"layout must be one of {', '.join(LAYOUTS)}, not {value!r}")
    return value


async def _image_from_request(request: Request) -> tuple[bytes, str, str]:
    """The image's bytes, a name for it, and the layout to read it with."""
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
        return decode_image_text(payload["image"]), "image", _layout_choice(payload.get("layout"))
    raise HTTPException(
        415,
        f"cannot read a {media_type or 'body without a content type'}: send multipart/form-data "
        'with a "file" field, or JSON {"image": "data:image/png;base64,..."}',
    )


async def _image_from_form(request: Request) -> tuple[bytes, str, str]:
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
        layout = _layout_choice(form.get("layout"))
        return await upload.read(), upload.filename or "upload", layout
    finally:
        await form.close()


# --- the routes ----------------------------------------------------------------------------


def get_service(request: Request) -> Service:
    """The app's :class:`Service` (a FastAPI dependency)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_owner(request: Request, response: Response) -> str:
    """The caller's user name; a browser without one gets a new one in a cookie."""
    owner, new = identity_from(request)
    if new:
        remember_identity(response, owner)
    return owner


OwnerDep = Annotated[str, Depends(get_owner)]


def may_write(request: Request, service: ServiceDep) -> None:
    """Writes need the server's token (when it has one) and are rate-limited per client."""
    check_token(request, service.write_token, "writes")
    service.write_limit.check(request.client.host if request.client else "unknown")


pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def page(request: Request) -> FileResponse:
    response = FileResponse(STATIC / "index.html")
    owner, new = identity_from(request)
    if new:  # the first visit: the identity this browser keeps from now on
        remember_identity(response, owner)
    return response


@pages.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=204)


api = APIRouter(prefix="/api")


@api.get("/health", response_model=Health, response_model_exclude_none=True)
def health(service: ServiceDep) -> dict[str, Any]:
    return service.health()


@api.get("/model", response_model=ModelOut)
def model_info(service: ServiceDep) -> dict[str, Any]:
    model = service.base
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


@api.post(
    "/predict",
    response_model=PredictionOut,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
)
async def predict(request: Request, service: ServiceDep, owner: OwnerDep) -> dict[str, Any]:
    """Read the digits in an image: a multipart upload (field ``file``) or JSON
    ``{"image": "data:image/png;base64,..."}`` from a canvas; ``layout`` (a form field or
    JSON key: number, lines, table or auto) reads it as a page of numbers, given in
    ``lines``. The answer includes the caller's own corrections and the shared set's, no
    one else's."""
    data, name, layout = await _image_from_request(request)
    return await _in_work_pool(
        request, data, lambda gone: service.predict(data, name, owner, gone, layout)
    )


samples = APIRouter(prefix="/api/samples")


_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "the server wants its write token"},
    409: {"model": Problem, "description": "you store as many samples as one user may"},
    429: {"model": Problem, "description": "too many writes; see Retry-After"},
    503: {"model": Problem, "description": "the sample database cannot be used now"},
}


@samples.get("", response_model=SampleList)
def list_samples(service: ServiceDep, owner: OwnerDep) -> dict[str, Any]:
    """Your samples (the shared set's are not listed)."""
    stored = service.store.all(owner)
    return {"count": len(stored), "samples": [sample_json(s) for s in reversed(stored)]}


@samples.post(
    "",
    status_code=201,
    response_model=SampleOut,
    responses=_ERRORS | _WRITE_ERRORS,
    dependencies=[Depends(_require_json), Depends(may_write)],
)
async def add_sample(
    body: SampleIn, request: Request, service: ServiceDep, owner: OwnerDep
) -> dict[str, Any]:
    """Store a corrected digit as yours; from the next prediction on it changes your
    answers, and no one else's."""
    data = decode_image_text(body.image)
    # Decoded in the same lanes as /api/predict: a bomb sent as a sample is bounded alike.
    sample = await _in_work_pool(
        request, data, lambda gone: service.add_sample(data, body.label, owner, gone)
    )
    return sample_json(sample)


@samples.post("/merge", response_model=Merged, responses=_WRITE_ERRORS)
def merge_samples(body: MergeIn, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Move a user's samples into the shared set, where they change everyone's answers:
    an operator's decision, so it needs the admin token (``DIGITREC_ADMIN_TOKEN``)."""
    if service.admin_token is None:
        raise HTTPException(
            403, "this server has no admin token; merge with `digitrec samples merge --user U`"
        )
    check_token(request, service.admin_token, "merges")
    return {"user": body.user, "merged": service.store.merge(body.user)}


@samples.get("/{sample_id}", response_model=SampleOut, responses={404: {}})
def get_sample(sample_id: int, service: ServiceDep, owner: OwnerDep) -> dict[str, Any]:
    sample = service.store.get(sample_id)
    if sample is None or sample.owner not in ("", owner):
        raise HTTPException(404, f"no sample {sample_id}")
    return sample_json(sample)


@samples.delete(
    "/{sample_id}",
    response_model=Deleted,
    responses={404: {}} | _WRITE_ERRORS,
    dependencies=[Depends(may_write)],
)
def delete_sample(sample_id: int, service: ServiceDep, owner: OwnerDep) -> dict[str, Any]:
    service.delete_sample(sample_id, owner)
    return {"deleted": sample_id}


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return answer_json_errors(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)


async def _digitrec_error(request: Request, exc: DigitrecError) -> JSONResponse:
    """Every digitrec error answers with the status its class carries."""
    return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)


# --- the app -------------------------------------------------------------------------------


def create_app(
    model_dir: Path | None = None,
    model: Model | None = None,
    home: Path | None = None,
    *,
    max_image_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    write_token: str | None = None,
    admin_token: str | None = None,
    write_limit: RateLimit | None = None,
    max_samples_per_user: int = MAX_SAMPLES_PER_USER,
) -> FastAPI:
    """The web app for ``model`` (or the model in ``model_dir``, by default the default model),
    keeping samples in ``home`` (by default the data directory).

    With ``write_token`` every write needs ``Authorization: Bearer write_token``; with
    ``admin_token`` ``POST /api/samples/merge`` is open to whoever holds it. ``write_limit``
    (default: bursts of 30, one every 2 s) applies per client address."""
    if model is None:
        model = models.load(Path(model_dir) if model_dir else config.default_model_dir())
    app = FastAPI(
        title="digitrec",
        version=__version__,
        description="Read handwritten digits from drawings and photos; correct the answers.",
        # /docs comes from the package (web.offline); ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = Service(
        model,
        SampleStore(database_path(home)),
        max_image_bytes,
        max_pixels,
        write_token=write_token,
        admin_token=admin_token,
        write_limit=write_limit,
        max_samples_per_user=max_samples_per_user,
    )
    app.state.work = WorkPool()
    app.add_middleware(RequestGuard, max_bytes=max_image_bytes * 4 // 3 + _BODY_OVERHEAD)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DigitrecError, _digitrec_error)
    add_offline_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (pages, api, samples):
        app.include_router(router)
    return app
