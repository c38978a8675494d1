"""Declared parameter validation for digitrec's estimators.

Every estimator declares its parameters in a ``_parameter_constraints`` table, as
scikit-learn's do, and calls :func:`check_declared` first thing in ``fit`` (and on load);
what spans several parameters an estimator checks by hand in its public ``check_params``.
A bad value raises :class:`InvalidParameter`: a :class:`~digitrec.errors.ParameterError`
for digitrec (one ``error:`` line in the CLI) and scikit-learn's ``InvalidParameterError``
for its estimator checks, with scikit-learn's message naming the parameter and the values
allowed.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator

# scikit-learn's parameter validation has no public entry point: its own estimators call
# BaseEstimator._validate_params, and InvalidParameterError is what its checks expect.
from sklearn.utils._param_validation import InvalidParameterError

from digitrec.errors import ParameterError


class InvalidParameter(ParameterError, InvalidParameterError):
    """A parameter outside the values its estimator declares."""


def check_declared(estimator: BaseEstimator) -> None:
    """Check ``estimator``'s parameters against its ``_parameter_constraints``."""
    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise InvalidParameter(str(exc)) from None
