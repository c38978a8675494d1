"""What digitrec keeps on disk, safely: no pickle, atomic writes, hashed files.

- :mod:`~digitrec.persistence.atomic`: atomic file writes everything uses.
- :mod:`~digitrec.persistence.serialize`: fitted estimators <-> plain arrays.
- :mod:`~digitrec.persistence.model_store`: model directories (manifest + hashed ``.npy``).
- :mod:`~digitrec.persistence.sample_db`: the user's labelled samples (SQLite).
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.persistence",
    {
        "atomic_write_bytes": "atomic",
        "atomic_write_text": "atomic",
        "export_state": "serialize",
        "import_state": "serialize",
        "ModelFile": "model_store",
        "Sample": "sample_db",
        "SampleError": "sample_db",
        "SampleStore": "sample_db",
        "database_path": "sample_db",
    },
)
