"""Two-stage nearest-neighbour search with a deformation-tolerant second stage.

Stage 1 (fast, exact in its own space): the images are deskewed and optionally blurred,
projected on their first principal components, and the ``n_candidates`` references nearest
in euclidean distance are kept. With augmentation stage 1 also matches shifted copies of the
query; a training image's distance is the smallest over the copies. Shifting the query by
``s`` compares as shifting the reference by ``-s`` would (MNIST's blank margin keeps the ink
in the frame), and searches the training set once instead of nine times (measured on the
validation split: the same candidates' accuracy, 0.9948 after re-ranking, either way).

Stage 2 (slow, only on the candidates): the image distortion model (IDM) of Keysers et al.,
"Deformation models for image recognition", PAMI 2007. Every query pixel may be matched to
any reference pixel within ``warp`` pixels of it, independently of its neighbours, and pixels
are compared through their 3x3 neighbourhood ("local context") of horizontal and vertical
Sobel gradients, so a stroke can only match a stroke of the same direction. The distance is

    IDM(q, r) = sum_p  min_{|d|_inf <= warp}  || ctx_q(p) - ctx_r(p + d) ||^2

The candidates are re-sorted by it and the ``n_neighbors`` nearest vote.
"""

from __future__ import annotations

import math
import mmap
import threading
from numbers import Integral, Real

import cv2
import numpy as np
from numba import njit, prange
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from digitrec import progress
from digitrec.errors import ModelFileError, ParameterError
from digitrec.features.augment import augment, augmentation_transforms
from digitrec.features.transformers import Deskew, GaussianBlur, as_images
from digitrec.kernels import announce_compiling
from digitrec.neighbors.calibration import fit_temperature, nearest_of_each_class, softmin
from digitrec.neighbors.search import exact_distances
from digitrec.validation import check_declared

__all__ = ["IDMClassifier", "idm_distance", "idm_features", "idm_pairs"]

announce_compiling()  # a first run's compilation shows as a status line, not a silent wait

# Held while reference IDM features are made on first use: concurrent requests of the web
# app share one model. One lock for every classifier keeps fitted models picklable (Dask).
_REFERENCES_FILLING = threading.Lock()

# A float32 distance block of about 128 MB per batch of queries bounds stage 1's memory.
_BLOCK_BYTES = 128 * 1024 * 1024
# Training images per chunk when projecting stage 1's references: 60,000 MNIST images as
# float32 pixels would be 188 MB at once, projected they are 10 MB.
_PROJECT_CHUNK = 4096
# Training images held out (each searched for among all the others) to fit the temperature
# of the probabilities: enough for one number; about 10 s of IDM searches on this machine.
_CALIBRATION_IMAGES = 2000


# ---------------------------------------------------------------------------------------
# IDM kernel


@njit(cache=True, fastmath=True, boundscheck=False)
def _idm_one(qp: np.ndarray, r: np.ndarray, warp: int, context: int) -> float:
    """IDM distance from one padded query ``(C, H+2c, W+2c)`` to one reference ``(C, H, W)``.

    For each displacement the squared differences of all channels are summed pixel-wise,
    box-filtered over the ``(2c+1)^2`` context, and folded into a running per-pixel minimum.
    Inner loops run along contiguous rows so that numba vectorises them.
    """
    n_channels, h, w = r.shape
    pad = warp + context
    width = 2 * context + 1
    hq = h + 2 * context
    wq = w + 2 * context
    rp = np.zeros((n_channels, h + 2 * pad, w + 2 * pad), np.float32)
    rp[:, pad : pad + h, pad : pad + w] = r
    diff = np.empty((hq, wq), np.float32)
    rows = np.empty((hq, w), np.float32)
    best = np.full((h, w), np.inf, np.float32)
    col = np.empty(w, np.float32)
    for dy in range(2 * warp + 1):
        for dx in range(2 * warp + 1):
            for y in range(hq):
                dif = diff[y]
                q0 = qp[0, y]
                r0 = rp[0, y + dy, dx : dx + wq]
                for x in range(wq):
                    d = q0[x] - r0[x]
                    dif[x] = d * d
                for ch in range(1, n_channels):
                    qc = qp[ch, y]
                    rc = rp[ch, y + dy, dx : dx + wq]
                    for x in range(wq):
                        d = qc[x] - rc[x]
                        dif[x] += d * d
                row = rows[y]
                if width == 3:
                    # The 3x3 context is the common case: one fused pass is ~1.6x faster.
                    for x in range(w):
                        row[x] = dif[x] + dif[x + 1] + dif[x + 2]
                else:
                    for x in range(w):
                        row[x] = dif[x]
                    for k in range(1, width):
                        for x in range(w):
                            row[x] += dif[x + k]
            for y in range(h):
                by = best[y]
                if width == 3:
                    r0 = rows[y]
                    r1 = rows[y + 1]
                    r2 = rows[y + 2]
                    for x in range(w):
                        by[x] = min(by[x], r0[x] + r1[x] + r2[x])
                else:
                    for x in range(w):
                        col[x] = rows[y, x]
                    for k in range(1, width):
                        rk = rows[y + k]
                        for x in range(w):
                            col[x] += rk[x]
                    for x in range(w):
                        by[x] = min(by[x], col[x])
    total = 0.0
    for y in range(h):
        for x in range(w):
            total += best[y, x]
    return total


@njit(parallel=True, cache=True)
def _idm_candidates(
    queries_padded: np.ndarray,
    references: np.ndarray,
    candidates: np.ndarray,
    warp: int,
    context: int,
) -> np.ndarray:
    n_queries, n_cand = candidates.shape
    out = np.empty((n_queries, n_cand), np.float64)
    # One flat parallel loop over (query, candidate) pairs keeps both cores busy for a
    # single query as well as for a batch.
    for t in prange(n_queries * n_cand):
        i = t // n_cand
        j = t - i * n_cand
        out[i, j] = _idm_one(queries_padded[i], references[candidates[i, j]], warp, context)
    return out


def _pad_context(features: np.ndarray, context: int) -> np.ndarray:
    return np.pad(features, ((0, 0), (0, 0), (context, context), (context, context)))


def idm_pairs(
    query_features: np.ndarray,
    reference_features: np.ndarray,
    candidates: np.ndarray,
    warp: int = 2,
    context: int = 1,
) -> np.ndarray:
    """IDM distances ``(n_queries, n_candidates)`` from each query to its candidates.

    ``query_features`` ``(nq, C, H, W)`` and ``reference_features`` ``(nr, C, H, W)`` are
    float32 feature planes (see :func:`idm_features`); ``candidates`` ``(nq, K)`` indexes
    ``reference_features``.
    """
    if warp < 0 or context < 0:
        raise ParameterError(f"warp and context must be >= 0, got {warp!r}, {context!r}")
    q = np.ascontiguousarray(query_features, dtype=np.float32)
    r = np.ascontiguousarray(reference_features, dtype=np.float32)
    cand = np.ascontiguousarray(candidates, dtype=np.int64)
    if q.ndim != 4 or r.ndim != 4 or q.shape[1:] != r.shape[1:]:
        raise ParameterError(f"feature planes do not match: {q.shape} vs {r.shape}")
    if cand.ndim != 2 or cand.shape[0] != q.shape[0]:
        raise ParameterError(f"candidates {cand.shape} do not match {q.shape[0]} queries")
    if cand.size and (cand.min() < 0 or cand.max() >= len(r)):
        raise ParameterError("candidate index out of range")
    return _idm_candidates(_pad_context(q, context), r, cand, int(warp), int(context))


def idm_distance(
    query: np.ndarray, reference: np.ndarray, warp: int = 2, context: int = 1
) -> float:
    """IDM distance between two feature stacks ``(C, H, W)`` (or two images ``(H, W)``)."""
    q = np.asarray(query, dtype=np.float32)
    r = np.asarray(reference, dtype=np.float32)
    if q.ndim == 2:
        q, r = q[None], r[None]
    return float(idm_pairs(q[None], r[None], np.zeros((1, 1), np.int64), warp, context)[0, 0])


def idm_features(images: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Horizontal and vertical Sobel gradients ``(n, 2, H, W)`` float32 of images in 0..255.

    Pixels are scaled to 0..1 first so distances do not depend on the input's dtype range.
    """
    imgs = as_images(images) / np.float32(255.0)
    if blur > 0:
        imgs = GaussianBlur(blur).fit_transform(imgs)
    n, h, w = imgs.shape
    out = np.empty((n, 2, h, w), np.float32)
    for i in range(n):
        out[i, 0] = cv2.Sobel(imgs[i], cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_CONSTANT)
        out[i, 1] = cv2.Sobel(imgs[i], cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_CONSTANT)
    return out


# ---------------------------------------------------------------------------------------
# Stage 1: euclidean search in which a reference's distance is the minimum over its copies


def nearest_references(
    references: np.ndarray,
    query_copies: np.ndarray,
    k: int,
    reference_sq_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact euclidean ``k`` nearest references, sorted; distances float64, indices int64.

    ``query_copies`` ``(n_queries, n_copies, d)`` holds every query's copies; a reference's
    distance to a query is the smallest over the query's copies. One float32 matrix product
    per block of queries gives ``|q|^2 - 2 q.r`` for every copy; the minimum over the copies
    plus ``|r|^2`` is the squared distance. Pass ``reference_sq_norms`` (the float32
    ``|r|^2`` of every row) to save recomputing them on every call.
    """
    references = np.ascontiguousarray(references, dtype=np.float32)
    query_copies = np.ascontiguousarray(query_copies, dtype=np.float32)
    if query_copies.ndim != 3 or query_copies.shape[2] != references.shape[1]:
        raise ParameterError(
            f"query copies {query_copies.shape} do not match references {references.shape}"
        )
    n_queries, n_copies, n_dims = query_copies.shape
    n_ref = len(references)
    k = min(k, n_ref)
    if reference_sq_norms is None:
        reference_sq_norms = np.einsum("ij,ij->i", references, references)
    ref_sq = np.asarray(reference_sq_norms, dtype=np.float32)
    block = max(1, min(n_queries, _BLOCK_BYTES // (4 * n_ref * n_copies)))
    dist = np.empty((n_queries, k), np.float64)
    idx = np.empty((n_queries, k), np.int64)
    for start in range(0, n_queries, block):
        q = query_copies[start : start + block].reshape(-1, n_dims)
        d = (-2.0 * q) @ references.T
        d += np.einsum("ij,ij->i", q, q)[:, None]
        slabs = d.reshape(-1, n_copies, n_ref)
        d = slabs[:, 0]
        for j in range(1, n_copies):
            np.minimum(d, slabs[:, j], out=d)
        d += ref_sq  # the same for every copy: added once, after the minimum
        part = (
            np.argpartition(d, k - 1, axis=1)[:, :k]
            if k < n_ref
            else np.tile(np.arange(n_ref), (len(d), 1))
        )
        pd = np.take_along_axis(d, part, axis=1).astype(np.float64)
        order = np.lexsort((part, pd), axis=1)
        idx[start : start + len(d)] = np.take_along_axis(part, order, axis=1)
        dist[start : start + len(d)] = np.sqrt(
            np.maximum(np.take_along_axis(pd, order, axis=1), 0.0)
        )
    return dist, idx


# ---------------------------------------------------------------------------------------
# The estimator



def _filled_on_demand(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An uninitialised array whose memory is taken page by page as rows are first written.

    With transparent huge pages on ("always", as on many Linux machines) numpy's large
    arrays get 2 MB pages, and writing one row takes the 2 MB around it: the first
    prediction's 400 scattered rows of MNIST's 376 MB of IDM features took 347 MB and
    0.84 s; with 4 KB pages, 4 MB and 2 ms (measured).
    """
    count = math.prod(shape)
    if not hasattr(mmap, "MAP_PRIVATE"):  # no anonymous private maps (Windows)
        return np.empty(shape, dtype)
    memory = mmap.mmap(
        -1, max(count * np.dtype(dtype).itemsize, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    )
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype, count=count).reshape(shape)

class IDMClassifier(ClassifierMixin, BaseEstimator):
    """kNN on deskewed digits, re-ranked by the image distortion model.

    Parameters
    ----------
    n_neighbors : neighbours that vote.
    weights : ``"uniform"`` or ``"distance"`` (inverse distance).
    n_candidates : references stage 1 hands to the IDM.
    deskew : deskew (and centre) every image first.
    blur : Gaussian sigma (pixels) of stage 1's images.
    n_components : PCA dimensions of stage 1; None searches the pixels themselves.
    shift : stage 1 also matches copies of the query shifted by up to ``shift`` pixels
        (0: no copies).
    rerank : False skips stage 2, leaving a plain kNN on stage 1's features.
    warp : the IDM's displacement range in pixels (``(2 warp + 1)^2`` positions).
    context : the IDM's context half-width (1: 3x3 patches).
    idm_blur : Gaussian sigma applied before the Sobel gradients.
    batch_size : queries per batch (bounds memory).
    random_state : seed of the randomized PCA.

    ``kneighbors`` returns indices into the training images given to ``fit`` and the
    distances of the last stage (IDM, or euclidean when ``rerank=False``).

    ``predict_proba``, with ``n_neighbors=1``: ``exp(-(d_c - d_min) / temperature_)``,
    normalised, where ``d_c`` is class c's nearest distance among the candidates (0 for the
    classes not among them). ``fit`` chooses ``temperature_`` by the lowest log loss on up
    to 2,000 training images, each searched for among all the others, so the probabilities
    are calibrated instead of a single neighbour's 100%. With more neighbours it is their
    (weighted) vote, and ``temperature_`` is None.

    The defaults are the values chosen on a validation split of MNIST (train on the first
    50,000 training images, score the last 10,000): see ``benchmarks/accuracy_mnist.py``.
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "distance"})],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "deskew": ["boolean"],
        "blur": [Interval(Real, 0, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "shift": [Interval(Integral, 0, None, closed="left")],
        "rerank": ["boolean"],
        "warp": [Interval(Integral, 0, 4, closed="both")],
        "context": [Interval(Integral, 0, 3, closed="both")],
        "idm_blur": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_neighbors: int = 1,
        weights: str = "uniform",
        n_candidates: int = 100,
        deskew: bool = True,
        blur: float = 0.0,
        n_components: int | None = 40,
        shift: int = 1,
        rerank: bool = True,
        warp: int = 2,
        context: int = 1,
        idm_blur: float = 0.5,
        batch_size: int = 1000,
        random_state: int | None = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.n_candidates = n_candidates
        self.deskew = deskew
        self.blur = blur
        self.n_components = n_components
        self.shift = shift
        self.rerank = rerank
        self.warp = warp
        self.context = context
        self.idm_blur = idm_blur
        self.batch_size = batch_size
        self.random_state = random_state

    # -- parameters -----------------------------------------------------------------

    def check_params(self) -> None:
        """Raise ParameterError for a bad parameter: declared ranges, then ``n_candidates``
        against ``n_neighbors``."""
        check_declared(self)
        if self.rerank and self.n_candidates < self.n_neighbors:
            raise ParameterError(
                f"n_candidates must be at least n_neighbors={self.n_neighbors}, "
                f"got {self.n_candidates!r}"
            )

    # -- feature stages ---------------------------------------------------------------

    def _upright(self, images: np.ndarray) -> np.ndarray:
        return Deskew().fit_transform(images) if self.deskew else images

    def _stage1_pixels(self, upright: np.ndarray) -> np.ndarray:
        if self.blur > 0:
            upright = GaussianBlur(self.blur).fit_transform(upright)
        return upright.reshape(len(upright), -1)

    def _project(self, pixels: np.ndarray) -> np.ndarray:
        if self.components_ is None:
            return np.ascontiguousarray(pixels, dtype=np.float32)
        return (pixels - self.mean_) @ self.components_.T

    def _build_references(
        self,
        images: np.ndarray,
        upright: np.ndarray | None = None,
        stage1_refs: np.ndarray | None = None,
    ) -> None:
        """Derived search structures from the stored training images (fit and import).
        ``stage1_refs`` saved with the model spare deskewing and projecting every image."""
        self.n_copies_ = len(augmentation_transforms(self.shift)) if self.shift > 0 else 1
        n_dims = self.n_features_in_ if self.components_ is None else len(self.components_)
        n = len(images)
        if stage1_refs is not None:
            refs = np.ascontiguousarray(stage1_refs, dtype=np.float32)
            if refs.shape != (n, n_dims):
                raise ModelFileError("IDMClassifier state: stage-1 references do not match")
        else:
            if upright is None:
                upright = self._upright(as_images(images))
            refs = np.empty((n, n_dims), np.float32)
            for start in range(0, n, _PROJECT_CHUNK):
                chunk = upright[start : start + _PROJECT_CHUNK]
                refs[start : start + len(chunk)] = self._project(self._stage1_pixels(chunk))
        self.stage1_refs_ = refs
        self.stage1_sq_ = np.einsum("ij,ij->i", refs, refs)
        # A reference's IDM features are made the first time it is a candidate
        # (_reference_features): one prediction needs about 100 of them, and making all
        # 60,000 took most of a saved model's load (a first `digitrec predict` waited
        # 10 s for them). Evaluating a test set fills most of them at the same total cost.
        # Untouched rows of the array take no memory (see _filled_on_demand).
        if self.rerank:
            self.idm_refs_ = _filled_on_demand((n, 2, *self.image_shape_), np.float32)
            self.idm_ready_ = np.zeros(n, bool)
        else:
            self.idm_refs_ = self.idm_ready_ = None

    def _reference_features(self, candidates: np.ndarray) -> np.ndarray:
        """:attr:`idm_refs_`, its rows for ``candidates`` made if they were not yet. Each is
        made from the stored training image exactly as fitting all of them at once would."""
        wanted = np.unique(candidates)
        with _REFERENCES_FILLING:
            missing = wanted[~self.idm_ready_[wanted]]
            if len(missing):
                upright = self._upright(as_images(self._fit_images[missing]))
                self.idm_refs_[missing] = idm_features(upright, self.idm_blur)
                self.idm_ready_[missing] = True
        return self.idm_refs_

    # -- sklearn API ------------------------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray) -> IDMClassifier:
        self._fit(X, y)
        self.temperature_ = self._fitted_temperature(np.asarray(X))
        return self

    def _fitted_temperature(self, X: np.ndarray) -> float | None:
        """The softmin temperature with the lowest log loss on held-out training images, each
        scored against all the other references (leave-one-out: the same as holding them
        out of the references, without a second search structure); None when the answer is
        a vote of several neighbours, or there is nothing to hold out."""
        n = len(self._y)
        if self.n_neighbors != 1 or n < 2:
            return None
        rng = check_random_state(self.random_state)
        held = np.sort(rng.choice(n, min(_CALIBRATION_IMAGES, max(1, n // 5)), replace=False))
        with progress.stage("fitting the probabilities' temperature"):
            dist, idx = self.kneighbors(X[held], self._candidates())
        dist = np.where(idx == held[:, None], np.inf, dist)  # not the image itself
        scores = nearest_of_each_class(dist, self._y[idx], len(self.classes_))
        known = np.isfinite(scores).any(axis=1)
        if not known.any():
            return None
        return fit_temperature(scores[known], self._y[held][known])

    def _candidates(self) -> int:
        """The most neighbours a search returns: the IDM's candidates, or all references."""
        return self.n_candidates if self.rerank else min(self.n_candidates, len(self._y))

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """:meth:`fit`, returning the upright (deskewed) training images it made, so that a
        subclass building more features from them need not deskew them again."""
        self.check_params()
        images = as_images(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(images):
            raise ParameterError(f"got {len(images)} images but labels of shape {y.shape}")
        if len(images) == 0:
            raise ParameterError("cannot fit on 0 images")
        self.classes_, self._y = np.unique(y, return_inverse=True)
        self.temperature_ = None
        self.n_features_in_ = int(np.prod(images.shape[1:]))
        self.image_shape_ = images.shape[1:]
        # Keep the training images in their own dtype (uint8 MNIST: 47 MB, not 188 MB); the
        # saved model stores them and rebuilds every derived array from them.
        self._fit_images = as_images(X, dtype=np.asarray(X).dtype)
        with progress.stage("deskewing the training images"):
            upright = self._upright(images)
        pixels = self._stage1_pixels(upright)
        n_comp = self.n_components
        if n_comp is not None and n_comp < min(pixels.shape):
            pca = PCA(n_comp, svd_solver="randomized", random_state=self.random_state)
            with progress.stage("principal components of the pixels"):
                pca.fit(pixels)
            self.mean_ = pca.mean_.astype(np.float32)
            self.components_ = pca.components_.astype(np.float32)
        else:
            self.mean_ = self.components_ = None
        self._build_references(images, upright)
        return upright

    def _query_images(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "stage1_refs_")
        images = as_images(X)
        if images.shape[1:] != tuple(self.image_shape_):
            raise ParameterError(
                f"model was fitted on images {tuple(self.image_shape_)}, got {images.shape[1:]}"
            )
        return images

    def _kneighbors_batch(self, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._kneighbors_upright(self._upright(images), k)

    def _kneighbors_upright(self, upright: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # augment() is origin-major: each query's copies are consecutive rows.
        copies = augment(upright, None, shift=self.shift)[0] if self.shift > 0 else upright
        queries = self._project(self._stage1_pixels(copies)).reshape(
            len(upright), self.n_copies_, -1
        )
        n_first = self.n_candidates if self.rerank else k
        dist, idx = nearest_references(self.stage1_refs_, queries, n_first, self.stage1_sq_)
        if not self.rerank:
            return dist, idx
        idm = idm_pairs(
            idm_features(upright, self.idm_blur),
            self._reference_features(idx),
            idx,
            self.warp,
            self.context,
        )
        # Stable sort: equal IDM distances keep stage 1's order.
        order = np.argsort(idm, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(idm, order, axis=1), np.take_along_axis(idx, order, axis=1)

    def kneighbors(
        self,
        X: np.ndarray,
        n_neighbors: int | None = None,
        return_distance: bool = True,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """The nearest training images: ``(distances, indices)``, both ``(n, k)``, sorted."""
        images = self._query_images(X)
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        limit = self.n_candidates if self.rerank else len(self._y)
        if not (isinstance(k, Integral) and 1 <= k <= limit):
            raise ParameterError(f"n_neighbors must be an int in 1..{limit}, got {k!r}")
        dists, idxs = [], []
        for start in range(0, len(images), self.batch_size):
            d, i = self._kneighbors_batch(images[start : start + self.batch_size], int(k))
            dists.append(d)
            idxs.append(i)
        dist = np.concatenate(dists) if dists else np.empty((0, k))
        idx = np.concatenate(idxs) if idxs else np.empty((0, k), np.int64)
        return (dist, idx) if return_distance else idx

    def _vote(self, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if self.weights == "distance":
            # Exact matches (distance 0) get all the weight, as in scikit-learn.
            with np.errstate(divide="ignore"):
                w = 1.0 / dist
            exact = np.isinf(w)
            w = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), w)
        else:
            w = np.ones_like(dist, dtype=np.float64)
        proba = np.zeros((len(idx), len(self.classes_)))
        np.add.at(proba, (np.arange(len(idx))[:, None], self._y[idx]), w)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (a softmin of each class's nearest distance, see the
        class docstring), or without a temperature the share of the (weighted) votes of the
        ``n_neighbors`` nearest, per class."""
        return self.answer(X)[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        dist, idx = self.kneighbors(X)
        proba = self._vote(dist, idx)
        # A tie goes to the nearest neighbour's class when it is among the tied classes,
        # rather than to the smallest label.
        proba[np.arange(len(idx)), self._y[idx[:, 0]]] += 1e-9
        return self.classes_[np.argmax(proba, axis=1)]

    # -- answering with references (digitrec.neighbors.protocol) -------------------------

    def upright(self, X: np.ndarray) -> np.ndarray:
        """The images as both distances see them: deskewed when ``deskew`` is set."""
        return self._upright(as_images(X))

    def answer(
        self, X: np.ndarray, n_neighbors: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_proba` and the ``n_neighbors`` nearest (by default the ones that
        vote): ``(proba, distances, indices)``."""
        if getattr(self, "temperature_", None) is None:
            dist, idx = self.kneighbors(X, n_neighbors)
            return self._vote(dist, idx), dist, idx
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if not (isinstance(k, Integral) and k >= 1):
            raise ParameterError(f"n_neighbors must be an int of at least 1, got {k!r}")
        # One search for both: the probabilities need every candidate's class.
        dist, idx = self.kneighbors(X, max(int(k), self._candidates()))
        scores = nearest_of_each_class(dist, self._y[idx], len(self.classes_))
        return softmin(scores, self.temperature_), dist[:, :k], idx[:, :k]

    def answer_and_nearest(
        self, X: np.ndarray, n_neighbors: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`answer`, then the same neighbours again: the vote is over the nearest."""
        limit = self.n_candidates if self.rerank else len(self.reference_classes())
        proba, dist, idx = self.answer(X, min(int(n_neighbors), limit))
        return proba, dist, idx, dist, idx

    def reference_classes(self) -> np.ndarray:
        """The class index of every training image."""
        check_is_fitted(self, "stage1_refs_")
        return self._y

    def reference_inputs(self) -> np.ndarray:
        """The training images, as fitted (in their own dtype)."""
        check_is_fitted(self, "stage1_refs_")
        return self._fit_images

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        """What the final distance compares: IDM feature planes, or stage 1's projections
        when there is no re-ranking."""
        upright = self.upright(X)
        if not self.rerank:
            return self._project(self._stage1_pixels(upright))
        return idm_features(upright, self.idm_blur)

    def shortlist_metric(self) -> tuple[str, float]:
        """Euclidean: exact without re-ranking; with it, the IDM with no displacement is the
        (box-filtered) euclidean distance of the feature planes, which the IDM can only lower.
        """
        return "euclidean", 2.0

    def distances_to(self, X: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The final distance (the IDM, or stage 1's euclidean distance without re-ranking)
        from every query to every reference given by its :meth:`reference_features`."""
        queries = self.reference_features(X)
        if not self.rerank:
            return exact_distances(queries, features, "euclidean")
        n_refs = len(features)
        pairs = np.broadcast_to(np.arange(n_refs), (len(queries), n_refs))
        return idm_pairs(queries, features, pairs, self.warp, self.context)

    # -- model store ------------------------------------------------------------------

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        check_is_fitted(self, "stage1_refs_")
        images = self._fit_images
        arrays = {
            "images": images,
            "labels": self._y.astype(np.int64),
            "classes": np.asarray(self.classes_),
        }
        if self.components_ is not None:
            arrays["pca_mean"] = self.mean_
            arrays["pca_components"] = self.components_
        # 10 MB for MNIST that a load would otherwise remake by deskewing every image.
        arrays["stage1_refs"] = self.stage1_refs_
        if self.temperature_ is not None:
            arrays["calibration_temperature"] = np.array([self.temperature_])
        state = {"image_shape": list(self.image_shape_), "n_train": int(len(images))}
        return state, arrays

    def import_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.check_params()
        try:
            stored = np.asarray(arrays["images"])
            images = as_images(stored, dtype=stored.dtype)
            labels = np.asarray(arrays["labels"], dtype=np.int64)
            classes = np.asarray(arrays["classes"])
            shape = tuple(int(s) for s in state["image_shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"IDMClassifier state is incomplete: {exc}") from exc
        if images.shape[1:] != shape or len(labels) != len(images):
            raise ModelFileError("IDMClassifier state: images and labels do not match")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ModelFileError("IDMClassifier state: label index out of range")
        has_pca = "pca_components" in arrays
        if has_pca != (
            self.n_components is not None and self.n_components < min(len(images), math.prod(shape))
        ):
            raise ModelFileError("IDMClassifier state does not match n_components")
        self.classes_ = classes
        self._y = labels
        self.image_shape_ = shape
        self.n_features_in_ = math.prod(shape)
        self._fit_images = images
        self.mean_ = np.asarray(arrays["pca_mean"], np.float32) if has_pca else None
        self.components_ = np.asarray(arrays["pca_components"], np.float32) if has_pca else None
        # Models saved before stage1_refs was kept remake them from the images.
        self._build_references(images, stage1_refs=arrays.get("stage1_refs"))
        # Models saved before calibration answer with the neighbours' vote, as they did.
        self.temperature_ = self._stored_temperature(arrays.get("calibration_temperature"))

    def _stored_temperature(self, stored: np.ndarray | None) -> float | None:
        if stored is None:
            return None
        temperature = np.asarray(stored, np.float64).ravel()
        if temperature.shape != (1,) or not temperature[0] > 0 or self.n_neighbors != 1:
            raise ModelFileError(
                "IDMClassifier state: calibration_temperature must be one positive number, "
                "for n_neighbors=1"
            )
        return float(temperature[0])
