"""Multi-turn chat sessions (OpenAI chat route): each turn resends the history; think time between turns.

    locust -f scenarios/sessions.py --host http://127.0.0.1:3000 --headless -u 16 -r 4 -t 2m --turns 4 --think-time 2
"""

from harness.locust import SessionUser


class SessionsUser(SessionUser):
    scenario = "sessions"
    protocol = "openai"
