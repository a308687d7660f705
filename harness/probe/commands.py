"""The next commands for a probed endpoint: a short headless Locust run and a capacity sweep.

Scenario files are those of the checkout the installed ``harness`` package lives in
(``<checkout>/scenarios``). An API key is never printed: the commands read it from
``$HARNESS_API_KEY`` (the variable ``harness run`` and ``harness probe`` read too).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import harness

KEY_ENV = "HARNESS_API_KEY"
#: protocol -> scenario file whose user speaks it by default
SCENARIO_FILES = {"tgi": "chat_stream.py", "openai": "openai_chat.py"}


def scenario_path(protocol: str) -> Path:
    """``<checkout>/scenarios/<file>`` for ``protocol``, located from the installed package."""
    return Path(harness.__file__).resolve().parent.parent / "scenarios" / SCENARIO_FILES[protocol]


def _dq(text: str) -> str:
    """``text`` inside double quotes for a POSIX shell (``\\ " $ `` ` `` escaped)."""
    for ch in ("\\", '"', "$", "`"):
        text = text.replace(ch, "\\" + ch)
    return f'"{text}"'


def locust_args(protocol: str, endpoint: str, model_name: str | None, no_request_id: bool) -> list[str]:
    """The harness's Locust options for this route (the API key is added by the renderers)."""
    args = ["--protocol", protocol, "--endpoint", endpoint]
    if protocol == "openai" and model_name:
        args += ["--model-name", model_name]
    if no_request_id:
        args += ["--request-id-header", ""]
    return args


def locust_command(host: str, protocol: str, endpoint: str, model_name: str | None, *, api_key: bool,
                   no_request_id: bool, users: int = 4, run_time: str = "1m") -> str:
    """``locust -f <scenario> --host URL --protocol P --endpoint E ... --headless -u N -r N -t T --stop-timeout 60``."""
    parts = ["locust", "-f", str(scenario_path(protocol)), "--host", host,
             *locust_args(protocol, endpoint, model_name, no_request_id)]
    text = shlex.join(parts)
    if api_key:
        text += f' --api-key "${KEY_ENV}"'
    return text + " " + shlex.join(["--headless", "-u", str(users), "-r", str(users), "-t", run_time,
                                    "--stop-timeout", "60"])


def sweep_command(host: str, protocol: str, endpoint: str, model_name: str | None, *, api_key: bool,
                  no_request_id: bool, users: str = "1,4,16") -> str:
    """``harness sweep --host URL --users 1,4,16 --scenario <scenario> --locust-args "... --stop-timeout 60"``."""
    # --stop-timeout: a stream in flight when a point ends finishes instead of being cancelled
    inner = shlex.join([*locust_args(protocol, endpoint, model_name, no_request_id), "--stop-timeout", "60"])
    quoted = _dq(inner)
    if api_key:  # inside the double quotes, so the shell expands the variable
        quoted = quoted[:-1] + f' --api-key \\"${KEY_ENV}\\""'
    return shlex.join(["harness", "sweep", "--host", host, "--users", users, "--scenario",
                       str(scenario_path(protocol))]) + " --locust-args " + quoted
