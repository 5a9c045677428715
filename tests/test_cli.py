"""The command line's own printing (runs end to end are in test_run_e2e.py)."""

from __future__ import annotations

import json

from labelwright.core import cli


def test_label_warnings_are_printed_as_written_even_with_brackets(tmp_path, capsys):
    """Warnings carry class names, which are folder names: "[cat]" must not be taken for markup
    (Rich would drop it) nor "[/dog]" (Rich would raise after the run had succeeded)."""
    (tmp_path / "label").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"stages": {}}))
    warnings = ["class '[cat]' has only 3 seed labels", "class '[/dog]' has only 2 seed labels"]
    (tmp_path / "label" / "summary.json").write_text(json.dumps(
        {"accepted": 0, "coverage": 0.0, "target_precision": 0.98, "needs_review": 5, "label_issues": 0,
         "warnings": warnings}))
    cli._print_summary(tmp_path)
    printed = capsys.readouterr().err
    for warning in warnings:
        assert f"warning: {warning}" in printed
