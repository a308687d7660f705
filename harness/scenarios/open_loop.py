"""Open loop: arrivals at --rate requests/s (Poisson by default, see --arrival), coordinated-omission correct.

Latency counts from each request's intended start; schedule lag and drops (client saturated) are
recorded. One user per load-generating process is enough (-u = number of processes).

    locust -f scenarios/open_loop.py --host http://127.0.0.1:3000 --headless -u 1 --rate 20 -t 1m
"""

from harness.locust import OpenLoopUser


class OpenLoopChatUser(OpenLoopUser):
    scenario = "open_loop"
    protocol = "tgi"
