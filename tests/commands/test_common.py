"""What the commands share: the one JSON format of every ``--json`` output."""

from __future__ import annotations

import json

import pytest

from ganhpo.commands._common import print_json


def test_json_is_indented_and_has_no_nan_or_infinity(capsys: pytest.CaptureFixture[str]) -> None:
    """JSON has no NaN or Infinity (json.loads of other languages refuses them): null instead,
    at any depth (a diverged trial's value, a point of its curve)."""
    print_json({"value": float("nan"), "curve": [{"step": 1, "value": float("-inf")}], "n": 2})
    out = capsys.readouterr().out
    assert json.loads(out) == {"value": None, "curve": [{"step": 1, "value": None}], "n": 2}
    assert out == json.dumps(json.loads(out), indent=2) + "\n"
