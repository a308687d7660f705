"""A named group of harness options on Locust's parser (for the self-contained Locust extensions).

Locust's own ``parser.add_argument`` understands its web-UI keywords; argument groups do not, so
:func:`option_group` sets the attributes Locust's web UI reads and gives every option its
``LOCUST_<NAME>`` environment variable (as harness.locust.options does for the core options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def option_group(parser: Any, title: str, description: str) -> Callable[..., Any]:
    """An ``add(*flags, web_ui=False, **argparse_kwargs)`` function adding options to a new group."""
    group = parser.add_argument_group(title, description)

    def add(*args: Any, web_ui: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("env_var", "LOCUST_" + args[0].lstrip("-").replace("-", "_").upper())
        action = group.add_argument(*args, **kwargs)
        action.include_in_web_ui, action.is_secret, action.is_required, action.is_multiple = web_ui, False, False, False
        return action

    return add
