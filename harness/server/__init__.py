"""The reference streaming server: TGI wire protocol plus OpenAI-compatible routes."""
