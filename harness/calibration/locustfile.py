"""The calibration locustfile: closed-loop TGI streams with the harness client (one Locust process).

``harness calibrate`` runs it once per load level against the simulated server; it is an ordinary
scenario, so the timings it checks are exactly those of a user's run:

    locust -f harness/calibration/locustfile.py --host http://127.0.0.1:3000 --headless -u 256 -r 256
"""

from harness.locust import StreamingUser


class CalibrationUser(StreamingUser):
    scenario = "calibration"
    protocol = "tgi"
