"""Resolution of ``--model`` into a loaded model and tokenizer (see :func:`load_model`)."""

from harness.server.models.loader import LoadedModel, ModelLoadError, load_model, preflight

__all__ = ["LoadedModel", "ModelLoadError", "load_model", "preflight"]
