"""Continuous-batching engine of the transformers backend (scheduler thread, batch, sampling, text)."""
