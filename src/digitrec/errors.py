"""The exceptions digitrec raises for bad input; the CLI turns each into one line."""


class DigitrecError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""


class DatasetError(DigitrecError):
    """A dataset is unknown, missing, or fails its checks."""


class ImageError(DigitrecError):
    """An image cannot be read: bad format, too large, corrupt."""


class ModelFileError(DigitrecError):
    """A model directory is missing, foreign, or has been tampered with."""


class ParameterError(DigitrecError):
    """A model or command parameter is unknown or has a bad value."""
