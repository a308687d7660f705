"""The house keeps its layers: no upward or sideways import (tests/house/import_layers.py has the picture)."""

from __future__ import annotations

import shutil
from pathlib import Path

from import_layers import ALLOWED, UNITS, violations

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_runs_against_the_layers() -> None:
    assert violations(ROOT) == []


def test_every_unit_has_a_layer_and_every_layer_is_known() -> None:
    assert set(UNITS.values()) <= set(ALLOWED)
    for allowed in ALLOWED.values():
        assert allowed <= set(ALLOWED)


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    rec = tmp_path / "harness" / "records.py"
    rec.write_text(rec.read_text() + "\n\ndef _late():\n    from harness.gate import parse_rule  # noqa\n")
    lens = tmp_path / "harness" / "locust" / "options.py"
    lens.write_text(lens.read_text() + "\nfrom harness.sweep.plan import make_plan  # noqa\n")
    found = violations(tmp_path)
    assert len(found) == 2, found
    assert any(v.startswith("harness/records.py:") and "core -> gate (harness.gate)" in v for v in found), found
    assert any(v.startswith("harness/locust/options.py:") and "locust -> sweep" in v for v in found), found
