"""Errors of the inference pipelines."""

from __future__ import annotations

from schemas.errors import EdgefabricError


class PipelineError(EdgefabricError):
    """Base of every pipeline error."""


class ModelLoadError(PipelineError):
    """A model could not be loaded or failed its validation; the active model stays."""


class BadInput(PipelineError):
    """An inference input has the wrong shape, dtype or size for the model."""
