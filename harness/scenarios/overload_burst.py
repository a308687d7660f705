"""Overload burst: step the number of users past the server's concurrency cap; overload rate per step.

Steps come from --steps (default below) held for --step-time seconds each; run.json and the final log
show attempted requests and the overload rate of every step.

    locust -f scenarios/overload_burst.py --host http://127.0.0.1:3000 --headless --steps 4,8,16,32 --step-time 10
"""

from harness.locust import StepShape, StreamingUser  # noqa: F401 - StepShape is the folder's one load shape


class OverloadBurstUser(StreamingUser):
    scenario = "overload_burst"
    protocol = "tgi"
    default_steps = "4,8,16,32,64"
