"""One error family for the export side: the CLI prints ``str(error)`` as a one-line message.

Every message says what was wrong and what is allowed. ``CatalogueError`` (from the activation
catalogue) and ``ValueError`` from ``build_resnet`` are reported the same way by the CLI.
"""

from __future__ import annotations


class ExportError(ValueError):
    """Base of every expected failure while building, checking or publishing a model."""


class WeightsError(ExportError):
    """A weights file is unreadable, not a state dict, or does not fit the architecture."""


class DataError(ExportError):
    """A dataset name is unknown, a folder is empty or unreadable, or labels do not fit."""


class TrainingError(ExportError):
    """Training cannot run (e.g. an activation whose gradient is zero almost everywhere)."""


class ExportCheckError(ExportError):
    """The exported ONNX failed the checker or onnxruntime-vs-torch parity."""


class PublishError(ExportError):
    """The model repository refused the model (bad name, existing version, I/O failure)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C after part of the work was published: ``str()`` says what was and what was not.

    The CLI reports a plain ``KeyboardInterrupt`` as "nothing was published"; raise this instead
    once that stops being true."""
