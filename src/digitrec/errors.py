"""The exceptions digitrec raises for bad input.

The CLI turns each into one ``error:`` line; the web app answers each with the HTTP status
its class carries (``http_status``) and ``{"detail": message}``, so a reworded message never
changes a status code.
"""


class DigitrecError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    http_status = 422


class DatasetError(DigitrecError):
    """A dataset is unknown, missing, or fails its checks."""


class ImageError(DigitrecError):
    """An image cannot be read (see the subclasses for why)."""


class ImageTooLarge(ImageError):
    """The file or the image it declares is over a size limit."""

    http_status = 413


class UnsupportedImage(ImageError):
    """Not an image digitrec reads: another format (GIF, HEIC, ...) or no image at all."""

    http_status = 415


class UnreadableImage(ImageError):
    """An image of a supported type that cannot be read: empty, truncated, corrupt, missing,
    or without ink."""

    http_status = 422


class ModelFileError(DigitrecError):
    """A model directory is missing, foreign, or has been tampered with."""

    # Met while serving, it is the server's model that is broken, not the request.
    http_status = 500


class ParameterError(DigitrecError):
    """A model or command parameter is unknown or has a bad value."""
