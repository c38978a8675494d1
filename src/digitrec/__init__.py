"""digitrec: handwritten digit recognition, from MNIST to phone photos."""

__version__ = "0.1.0"

__all__ = ["KNNClassifier", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import digitrec` stays cheap for the CLI and the web app.
    if name == "KNNClassifier":
        from .neighbors import KNNClassifier

        return KNNClassifier
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")
