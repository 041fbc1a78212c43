"""The engine's error types.

Every failure that a user can cause (a bad file, a bad argument, a model that does not fit) is raised as a
subclass of `ActAddError` with a message meant to be shown as is: the CLI prints it as one line and exits
2, and the GUI shows it in a dialog. Anything else escaping the engine is a bug.
"""

from __future__ import annotations


class ActAddError(Exception):
    """Base class: a clear, user-facing problem."""


class ModelLoadError(ActAddError):
    """A model folder or id could not be loaded (missing files, remote code, out of memory...)."""


class UnsupportedArchitectureError(ModelLoadError):
    """No decoder blocks could be found for this model family."""


class VectorFileError(ActAddError):
    """A vector file is corrupt, foreign, unsafe or of the wrong shape or dtype."""


class IncompatibleVectorError(ActAddError):
    """A vector does not fit a model or another vector (hidden size, layers, fingerprint)."""


class InvalidInputError(ActAddError):
    """An argument is out of range: empty prompt, NaN coefficient, layer past the model's depth..."""


class LibraryError(ActAddError):
    """A library operation was refused: a name collision, an unsafe name, a missing vector..."""


class AlreadyExistsError(LibraryError):
    """A write would overwrite a vector or file. The CLI adds its own hint (--force); the GUI asks."""


class CancelledError(ActAddError):
    """The caller set the cancel event before the work finished; nothing was produced."""
