"""The Locust integration: user base classes, options, open loop, distributed record shipping.

Importing this package installs the harness's Locust event listeners (options, run dir and
records, worker -> master shipping, web UI tabs, exit code). Scenario files subclass the users:

    from harness.locust import StreamingUser

    class ChatStreamUser(StreamingUser):
        scenario = "chat_stream"
        protocol = "tgi"
"""

from __future__ import annotations

from harness.locust import lifecycle as _lifecycle  # noqa: F401 - installs the event listeners
from harness.locust.shape import StepShape
from harness.locust.users import OpenLoopUser, SessionUser, StreamingUser

__all__ = ["OpenLoopUser", "SessionUser", "StepShape", "StreamingUser"]
