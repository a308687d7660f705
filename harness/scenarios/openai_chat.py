"""OpenAI-compatible chat streaming (POST /v1/chat/completions; vLLM, TGI Messages API, llama.cpp, Ollama).

    locust -f scenarios/openai_chat.py --host http://127.0.0.1:8000 --model-name my-model --headless -u 8 -t 1m
"""

from harness.locust import StreamingUser


class OpenAIChatUser(StreamingUser):
    scenario = "openai_chat"
    protocol = "openai"
