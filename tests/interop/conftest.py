"""The live interop matrix: collected only under ``make interop`` (HARNESS_INTEROP=1), never by ``make test``.

Fixtures start each live target once per test session (one at a time), warm it up with one
request (``transformers serve`` spends seconds on its first continuous-batching step), and stop
it at the end. The target venvs come from ``tests/interop/targets.py`` (``make interop`` builds them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_FLAG = "HARNESS_INTEROP"

if os.environ.get(ENV_FLAG) != "1":
    collect_ignore_glob = ["test_*.py"]

TARGET_NAMES = ("llamacpp", "tserve")


@pytest.fixture(scope="session", params=TARGET_NAMES)
def target(request, tmp_path_factory) -> Iterator:
    """A running live target (:class:`live.LiveTarget`), warmed up; one per name, one at a time."""
    import live
    import targets

    from harness.client import make_client

    name = request.param
    if not targets.is_ready(name):
        pytest.fail(f"interop venv for {name} is not built ({targets.venv_dir(name)}): run `make interop`")
    t = live.STARTERS[name](Path(tmp_path_factory.mktemp(f"live-{name}")))
    try:
        with make_client("openai", t.url, model_name=t.model_name, max_new_tokens=2) as c:
            warm = c.stream("Hello")
        assert warm.ok, (warm.outcome, warm.error_text, t.log()[-2000:])
        yield t
    finally:
        t.stop()
