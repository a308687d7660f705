"""Generation backends: transformers (real model, continuous batching) and simulated."""
