"""Exceptions with messages meant for the person running the notebook, not for a debugger."""


class ZooinferError(Exception):
    """Base class: every error zooinfer raises on bad input derives from it."""


class CheckpointError(ZooinferError):
    """The checkpoint file is missing, unreadable, unsafe or does not fit the network."""


class DatasetError(ZooinferError):
    """A dataset folder, annotation or label file is missing or not in the expected layout."""


class BackendError(ZooinferError):
    """An inference backend is unavailable or was given input it cannot take."""


class MetricInputError(ZooinferError):
    """Predictions or ground truth handed to a metric are malformed."""


class OutputError(ZooinferError):
    """A file of the run's output could not be written (a full disk, no permission): it names the file and the OS
    error; the run folder stays under its partial name."""
