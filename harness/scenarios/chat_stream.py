"""TGI native streaming (POST /generate_stream), closed loop: each user streams one request after another.

    locust -f scenarios/chat_stream.py --host http://127.0.0.1:3000 --headless -u 8 -r 8 -t 1m
"""

from harness.locust import StreamingUser


class ChatStreamUser(StreamingUser):
    scenario = "chat_stream"
    protocol = "tgi"
