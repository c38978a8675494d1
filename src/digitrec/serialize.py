"""Fitted estimators as plain data: ``(state, arrays)`` and back, with no pickles.

``state`` is JSON; ``arrays`` are numeric numpy arrays. Loading never reconstructs a class
named by the file: the model kind names a builder in digitrec's registry, the builder makes
a fresh estimator from the saved parameters, and :func:`import_state` only fills in fitted
attributes. digitrec's own estimators implement ``_export_state``/``_import_state``;
scikit-learn's are described here by the fitted attributes they need.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from .errors import ModelFileError

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
    if hasattr(estimator, "_export_state"):
        return estimator._export_state()
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
    if isinstance(estimator, Pipeline):
        for name, step in estimator.steps:
            prefix = f"{name}__"
            step_arrays = {
                k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)
            }
            _import(step, state[name], step_arrays)
        return
    if hasattr(estimator, "_import_state"):
        estimator._import_state(state, arrays)
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
