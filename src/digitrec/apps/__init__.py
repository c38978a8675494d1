"""What people run: the ``digitrec`` command, the web app and batch prediction.

- :mod:`~digitrec.apps.cli`: the Typer command line (``main``).
- :mod:`~digitrec.apps.web`: the FastAPI app (``create_app``) and its static page.
- :mod:`~digitrec.apps.batch`: ``predict-batch`` on Dask or in this process.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.apps",
    {
        "main": "cli",
        "predict_batch": "batch",
        "read_output": "batch",
    },
)
