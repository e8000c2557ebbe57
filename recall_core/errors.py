"""Errors a user can cause. The CLI and the dashboard show their message as one line, never a traceback."""


class RecallError(Exception):
    """Base class for every error caused by user input (bad path, bad file, incompatible models, ...)."""


class ModelLoadError(RecallError):
    """A model folder or hub id could not be loaded."""


class IncompatibleModelsError(RecallError):
    """Two models do not share parameter names and shapes."""


class ProbeFileError(RecallError):
    """A probe file is missing, empty, malformed or not UTF-8."""


class ScheduleError(RecallError):
    """A fusion schedule is malformed (bad cell, wrong rows or models)."""


class PlanError(RecallError):
    """A merge plan does not match its models or is malformed."""


class ExportError(RecallError):
    """An export could not be written (output exists, disk error, ...)."""
