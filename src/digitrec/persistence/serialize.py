"""Fitted estimators as plain data: ``(state, arrays)`` and back, with no pickles.

``state`` is JSON; ``arrays`` are numeric numpy arrays. Loading never reconstructs a class
named by the file: the model kind names a builder in digitrec's registry, the builder makes
a fresh estimator from the saved parameters, and :func:`import_state` only fills in fitted
attributes. digitrec's own estimators implement ``export_state``/``import_state``;
scikit-learn's are described here by the fitted attributes they need, or, for random forests
and kernel SVMs, by a pair of functions that take their compiled structures apart into plain
arrays and check them before putting them back.

Those checks matter because scikit-learn's compiled prediction code trusts its inputs: a tree
whose child index points outside the tree, or an SVM whose per-class support-vector counts do
not add up, would read outside its arrays instead of raising. A saved file is hashed, but a
hash only says the file is the one written, not that it was written by digitrec.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from digitrec.errors import ModelFileError

# scikit-learn estimators whose fitted state is a handful of arrays and scalars.
_FITTED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "PCA": (
        "components_",
        "mean_",
        "explained_variance_",
        "explained_variance_ratio_",
        "singular_values_",
        "n_components_",
        "n_samples_",
        "noise_variance_",
        "n_features_in_",
    ),
    "StandardScaler": ("mean_", "scale_", "var_", "n_samples_seen_", "n_features_in_"),
    "LinearSVC": ("coef_", "intercept_", "classes_", "n_iter_", "n_features_in_"),
    "LogisticRegression": ("coef_", "intercept_", "classes_", "n_iter_", "n_features_in_"),
}

State = dict[str, Any]
Arrays = dict[str, np.ndarray]


def export_state(estimator: BaseEstimator) -> tuple[State, Arrays]:
    """The fitted state of ``estimator`` as JSON-able values and numeric arrays."""
    if isinstance(estimator, Pipeline):
        state, arrays = {}, {}
        for name, step in estimator.steps:
            step_state, step_arrays = export_state(step)
            state[name] = step_state
            arrays.update({f"{name}__{key}": value for key, value in step_arrays.items()})
        return state, arrays
    if hasattr(estimator, "export_state"):
        return estimator.export_state()
    if type(estimator).__name__ in _CODECS:
        return _CODECS[type(estimator).__name__][0](estimator)
    names = _FITTED_ATTRIBUTES.get(type(estimator).__name__)
    if names is None:
        if _has_no_fitted_arrays(estimator):
            return {"n_features_in": getattr(estimator, "n_features_in_", None)}, {}
        raise TypeError(f"digitrec cannot save a fitted {type(estimator).__name__}")
    state, arrays = {}, {}
    for name in names:
        value = getattr(estimator, name)
        if isinstance(value, np.ndarray):
            arrays[name.rstrip("_")] = value
        else:
            state[name] = value.item() if isinstance(value, np.generic) else value
    return state, arrays


def import_state(estimator: BaseEstimator, state: State, arrays: Arrays) -> BaseEstimator:
    """Fill ``estimator`` (fresh, same parameters) with a saved fitted state."""
    try:
        _import(estimator, state, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"saved state does not fit {type(estimator).__name__}: {exc}") from exc
    return estimator


def _import(estimator, state, arrays):
    if not isinstance(state, dict):
        raise TypeError(f"the saved state is a {type(state).__name__}, not a JSON object")
    if isinstance(estimator, Pipeline):
        for name, step in estimator.steps:
            prefix = f"{name}__"
            step_arrays = {
                k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)
            }
            _import(step, state[name], step_arrays)
        return
    if hasattr(estimator, "import_state"):
        estimator.import_state(state, arrays)
        return
    if type(estimator).__name__ in _CODECS:
        _CODECS[type(estimator).__name__][1](estimator, state, arrays)
        return
    names = _FITTED_ATTRIBUTES.get(type(estimator).__name__)
    if names is None:
        if state.get("n_features_in") is not None:
            estimator.n_features_in_ = state["n_features_in"]
        return
    for name in names:
        if name.rstrip("_") in arrays:
            setattr(estimator, name, np.asarray(arrays[name.rstrip("_")]))
        else:
            setattr(estimator, name, state[name])


def _has_no_fitted_arrays(estimator) -> bool:
    fitted = [k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")]
    return set(fitted) <= {"n_features_in_"}


# --- random forests -------------------------------------------------------------------------

FOREST_FORMAT = "sklearn-forest/1"
SVC_FORMAT = "sklearn-svc/1"


def _export_forest(forest) -> tuple[State, Arrays]:
    """Every tree's node table, one plain array per node field, trees laid end to end.

    One array per field (not sklearn's structured node dtype) keeps the files readable by any
    numpy and independent of how a scikit-learn version lays its nodes out in memory.
    """
    from sklearn.tree._tree import NODE_DTYPE

    if forest.n_outputs_ != 1:
        raise TypeError("digitrec saves single-output forests only")
    tree_states = [tree.tree_.__getstate__() for tree in forest.estimators_]
    nodes = np.concatenate([s["nodes"] for s in tree_states])
    arrays = {f"node_{field}": np.ascontiguousarray(nodes[field]) for field in NODE_DTYPE.names}
    arrays["values"] = np.concatenate([s["values"] for s in tree_states])
    arrays["node_counts"] = np.array([s["node_count"] for s in tree_states], dtype=np.int64)
    arrays["max_depths"] = np.array([s["max_depth"] for s in tree_states], dtype=np.int64)
    arrays["classes"] = forest.classes_
    state = {
        "format": FOREST_FORMAT,
        "n_features_in": int(forest.n_features_in_),
        "max_features": [int(tree.max_features_) for tree in forest.estimators_],
    }
    return state, arrays


def _import_forest(forest, state: State, arrays: Arrays) -> None:
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import NODE_DTYPE, Tree

    _check_format(state, FOREST_FORMAT)
    n_features = _positive_int(state, "n_features_in")
    classes = _class_labels(arrays["classes"])
    n_classes = len(classes)
    counts = _int_array(arrays, "node_counts", ndim=1)
    depths = _int_array(arrays, "max_depths", shape=counts.shape)
    max_features = state["max_features"]
    if len(counts) == 0 or not isinstance(max_features, list) or len(max_features) != len(counts):
        raise ValueError("the forest has no trees, or its per-tree lists differ in length")
    if (counts < 1).any() or (depths < 0).any():
        raise ValueError("a tree has no nodes or a negative depth")
    total = int(counts.sum())
    # The values' shape is checked first so that a forged node count allocates nothing.
    values = _array(arrays, "values", np.float64, shape=(total, 1, n_classes))
    nodes = np.zeros(total, dtype=NODE_DTYPE)
    for field in NODE_DTYPE.names:
        nodes[field] = _array(arrays, f"node_{field}", NODE_DTYPE[field], shape=(total,))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    _check_tree_links(nodes, counts, starts, n_features)
    if not np.isfinite(values).all():
        raise ValueError("leaf values are not finite")

    forest.n_features_in_ = n_features
    forest.n_outputs_ = 1
    forest.classes_ = classes
    forest.n_classes_ = n_classes
    forest.estimator_ = DecisionTreeClassifier()
    trees = []
    for start, count, depth, features in zip(starts, counts, depths, max_features, strict=True):
        tree = DecisionTreeClassifier(**{p: getattr(forest, p) for p in forest.estimator_params})
        compiled = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
        compiled.__setstate__(
            {
                "max_depth": int(depth),
                "node_count": int(count),
                "nodes": nodes[start : start + count].copy(),
                "values": np.ascontiguousarray(values[start : start + count]),
            }
        )
        tree.tree_ = compiled
        tree.n_features_in_ = n_features
        tree.n_outputs_ = 1
        # A forest trains its trees on class indices as floats; predict maps them back.
        tree.classes_ = np.arange(n_classes, dtype=np.float64)
        tree.n_classes_ = n_classes
        tree.max_features_ = int(features)
        trees.append(tree)
    forest.estimators_ = trees


def _check_tree_links(nodes: np.ndarray, counts: np.ndarray, starts: np.ndarray, n_features):
    """Children inside their own tree and after their parent, split features in range.

    Children after the parent is how scikit-learn's builders number nodes, and it means
    that walking down a tree always ends at a leaf.
    """
    from sklearn.tree._tree import TREE_LEAF

    local = np.arange(len(nodes)) - np.repeat(starts, counts)
    size = np.repeat(counts, counts)
    left, right, feature = nodes["left_child"], nodes["right_child"], nodes["feature"]
    leaf = left == TREE_LEAF
    if (right[leaf] != TREE_LEAF).any():
        raise ValueError("a leaf has a right child")
    inner = ~leaf
    for child in (left[inner], right[inner]):
        if ((child <= local[inner]) | (child >= size[inner])).any():
            raise ValueError("a tree node points to a child outside its tree")
    if ((feature[inner] < 0) | (feature[inner] >= n_features)).any():
        raise ValueError(f"a split uses a feature outside 0..{n_features - 1}")


# --- kernel support vector machines -----------------------------------------------------------


def _export_svc(svc) -> tuple[State, Arrays]:
    """libsvm's model: support vectors, dual coefficients and intercepts as it uses them.

    The private ``_dual_coef_``/``_intercept_`` are what prediction reads; the public ones
    differ from them only by a sign flip for two classes, redone on import as in ``fit``.
    """
    if svc._sparse or callable(svc.kernel) or svc.kernel == "precomputed":
        raise TypeError("digitrec saves SVC models with a named kernel on dense data only")
    arrays = {
        "classes": svc.classes_,
        "class_weight": svc.class_weight_,
        "support": svc.support_,
        "support_vectors": svc.support_vectors_,
        "n_support": svc._n_support,
        "dual_coef": svc._dual_coef_,
        "intercept": svc._intercept_,
        "prob_a": svc._probA,
        "prob_b": svc._probB,
        "n_iter": np.asarray(svc.n_iter_),
    }
    state = {
        "format": SVC_FORMAT,
        "gamma": float(svc._gamma),
        "n_features_in": int(svc.n_features_in_),
        "shape_fit": [int(n) for n in svc.shape_fit_],
        "fit_status": int(svc.fit_status_),
        "probability": bool(getattr(svc, "_effective_probability", svc.probability is True)),
    }
    return state, arrays


def _import_svc(svc, state: State, arrays: Arrays) -> None:
    _check_format(state, SVC_FORMAT)
    if callable(svc.kernel) or svc.kernel == "precomputed":
        raise ValueError("SVC models with a precomputed or callable kernel cannot be loaded")
    if getattr(svc, "_impl", "c_svc") != "c_svc":
        raise ValueError(f"only C-SVC models are saved, not {svc._impl}")
    n_features = _positive_int(state, "n_features_in")
    classes = _class_labels(arrays["classes"])
    n_classes, n_pairs = len(classes), len(classes) * (len(classes) - 1) // 2
    vectors = _array(arrays, "support_vectors", np.float64, ndim=2)
    n_sv = vectors.shape[0]
    if vectors.shape[1] != n_features:
        raise ValueError(f"support vectors have {vectors.shape[1]} features, not {n_features}")
    n_support = _int_array(arrays, "n_support", shape=(n_classes,), dtype=np.int32)
    if (n_support < 0).any() or int(n_support.sum()) != n_sv:
        raise ValueError(f"support-vector counts per class {n_support} do not add up to {n_sv}")
    dual = _array(arrays, "dual_coef", np.float64, shape=(n_classes - 1, n_sv))
    intercept = _array(arrays, "intercept", np.float64, shape=(n_pairs,))
    prob_a = _array(arrays, "prob_a", np.float64, ndim=1)
    prob_b = _array(arrays, "prob_b", np.float64, shape=prob_a.shape)
    if len(prob_a) not in (0, n_pairs):
        raise ValueError(f"probability calibration has {len(prob_a)} pairs, not 0 or {n_pairs}")
    gamma = float(state["gamma"])
    if not (np.isfinite(dual).all() and np.isfinite(intercept).all() and np.isfinite(gamma)):
        raise ValueError("dual coefficients, intercepts or gamma are not finite")
    shape_fit = state["shape_fit"]
    if not (isinstance(shape_fit, list) and len(shape_fit) == 2 and shape_fit[1] == n_features):
        raise ValueError(f"shape_fit {shape_fit!r} does not match {n_features} features")

    svc.classes_ = classes
    svc.class_weight_ = _array(arrays, "class_weight", np.float64, shape=(n_classes,))
    svc.support_ = _int_array(arrays, "support", shape=(n_sv,), dtype=np.int32)
    svc.support_vectors_ = vectors
    svc._n_support = n_support
    svc._dual_coef_ = dual
    svc._intercept_ = intercept
    svc.dual_coef_, svc.intercept_ = (-dual, -intercept) if n_classes == 2 else (dual, intercept)
    svc._probA, svc._probB = prob_a, prob_b
    svc._effective_probability = bool(state["probability"]) and len(prob_a) > 0
    svc._gamma = gamma
    svc._sparse = False
    svc.shape_fit_ = (int(shape_fit[0]), int(shape_fit[1]))
    svc.fit_status_ = int(state["fit_status"])
    svc.n_features_in_ = n_features
    svc.n_iter_ = _int_array(arrays, "n_iter", shape=(n_pairs,), dtype=np.int32)
    svc._num_iter = svc.n_iter_


_CODECS = {
    "RandomForestClassifier": (_export_forest, _import_forest),
    "SVC": (_export_svc, _import_svc),
}


# --- checks shared by the codecs ---------------------------------------------------------------


def _check_format(state: State, expected: str) -> None:
    if state.get("format") != expected:
        raise ValueError(f"state format {state.get('format')!r} is not {expected!r}")


def _positive_int(state: State, name: str) -> int:
    value = state[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _array(
    arrays: Arrays,
    name: str,
    dtype,
    shape: tuple[int, ...] | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """``arrays[name]`` as a C-contiguous ``dtype`` array, after checking kind and shape."""
    array = arrays[name]
    dtype = np.dtype(dtype)
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise ValueError(f"array {name} has dtype {array.dtype}, expected {dtype}")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"array {name} has shape {array.shape}, expected {tuple(shape)}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"array {name} has {array.ndim} dimensions, expected {ndim}")
    return np.ascontiguousarray(array, dtype=dtype)


def _int_array(arrays: Arrays, name: str, dtype=np.int64, **kwargs) -> np.ndarray:
    if arrays[name].dtype.kind not in "iu":
        raise ValueError(f"array {name} has dtype {arrays[name].dtype}, expected integers")
    array = arrays[name]
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"array {name} holds values outside {np.dtype(dtype)}")
    return _array(arrays, name, dtype, **kwargs)


def _class_labels(classes: np.ndarray) -> np.ndarray:
    if classes.ndim != 1 or len(classes) < 2 or classes.dtype.kind not in "biuU":
        raise ValueError("class labels must be a 1-D array of at least two numbers or strings")
    return np.asarray(classes)
