"""Each user class runs only its own task (Locust merges base-class tasks into subclasses).

Checked in a subprocess: importing Locust monkey-patches the process with gevent."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json
from harness.locust.users import OpenLoopUser, SessionUser, StreamingUser

class ScenarioUser(OpenLoopUser):  # a scenario's subclass inherits the corrected list
    abstract = True

print(json.dumps({c.__name__: [t.__qualname__ for t in c.tasks]
                  for c in (StreamingUser, OpenLoopUser, SessionUser, ScenarioUser)}))
"""


def test_each_user_class_runs_only_its_own_task():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    tasks = json.loads(out.stdout.strip().splitlines()[-1])
    assert tasks == {"StreamingUser": ["StreamingUser.request"], "OpenLoopUser": ["OpenLoopUser.request"],
                     "SessionUser": ["SessionUser.request"], "ScenarioUser": ["OpenLoopUser.request"]}
