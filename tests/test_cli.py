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


def test_every_job_parameter_the_readme_lists_is_accepted():
    """The README's parameter table is what a user types after ``--param`` (or posts as ``params``):
    each name there must pass the job-parameter check the CLI and the API apply."""
    import re
    from pathlib import Path

    import pytest

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| parameter | default | meaning |"):]
    table = table[: table.index("\n\n")]
    names = [name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert {"target_precision", "acceptance", "precision", "label_workers"} <= set(names)
    for name in names:
        assert name in cli.JobParams.model_fields, f"README lists {name!r}, the job-parameter check rejects it"
    with pytest.raises(Exception, match="per_klass"):
        cli._job_params(None, None, None, None, ["acceptance=per_klass"])
    assert cli._job_params(None, None, None, None, ["acceptance=per_class", "label_workers=1"]) == {
        "acceptance": "per_class", "label_workers": 1}


def test_every_setting_is_documented_in_env_example_and_loads_from_it():
    """README: "All settings are environment variables, documented in .env.example"."""
    import re
    from pathlib import Path

    from labelwright.core.settings import Settings

    example = Path(__file__).resolve().parents[1] / ".env.example"
    names = set(re.findall(r"^LABELWRIGHT_(\w+)=", example.read_text(), re.M))
    assert names == {field.upper() for field in Settings.model_fields}
    assert Settings(_env_file=example).label_effort == "auto"
