"""Measuring models: metrics, tuning (here or on Dask), comparison, reports, plots.

- :mod:`~digitrec.evaluation.metrics`: :func:`evaluate` (accuracy, report, confusion).
- :mod:`~digitrec.evaluation.tuning`: grid search with k-fold cross-validation.
- :mod:`~digitrec.evaluation.dask_runner`: the Dask client, and tuning as Dask tasks.
- :mod:`~digitrec.evaluation.compare`: several model kinds side by side.
- :mod:`~digitrec.evaluation.report`: a self-contained HTML report.
- :mod:`~digitrec.evaluation.plots`: matplotlib figures.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.evaluation",
    {
        "Evaluation": "metrics",
        "evaluate": "metrics",
        "TuneResult": "tuning",
        "tune": "tuning",
        "parse_grid": "tuning",
        "tune_on_dask": "dask_runner",
        "compare": "compare",
        "write_report": "report",
    },
)
