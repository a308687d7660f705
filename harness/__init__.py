"""stream-harness: load testing and latency measurement for token-streaming LLM servers."""

__version__ = "0.1.0"
