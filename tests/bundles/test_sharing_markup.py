"""Text from files, names and paths is printed literally, never as Rich markup (issue #32, item 8).

Before the fix a ``[/]`` in a report line crashed the CLI with a MarkupError traceback,
``[link=...]`` and ``[reverse blink]`` in a name were rendered as styling (terminal spoofing) and
a project path containing ``[old]`` lost that part, so the hint named the wrong folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from steph.report import StageReport, Status
from stephctl._common import render_report

SPOOF = "[link=https://evil.example]click[/link] [reverse blink]x[/reverse blink]"


def test_a_project_path_with_brackets_is_printed_as_it_is(tmp_path: Path, cli) -> None:
    root = tmp_path / "lab[old]" / "proj"
    result = cli("-p", root, "import-sources", tmp_path / "b.safetensors")
    assert result.exit_code == 1
    assert str(root) in result.stderr


def test_markup_in_a_file_name_is_not_rendered(tmp_path: Path, cli, empty_project: Path) -> None:
    bundle = tmp_path / f"{SPOOF.replace('/', '_')}.safetensors"
    result = cli("-p", empty_project, "import-sources", bundle)
    assert result.exit_code == 1, result.output
    assert str(bundle) in result.stderr


def test_report_lines_from_files_are_text(capsys: pytest.CaptureFixture[str]) -> None:
    report = StageReport("import-sources")
    report.add("[/]BLCA/fold_0", Status.DONE, f"BLCA fold 0 ([/] patients) {SPOOF}")
    report.add("x", Status.FAILED, "[bold red]forged[/] error", hint="[/]")
    with pytest.raises(typer.Exit):
        render_report(report, as_json=False)
    out = "".join(capsys.readouterr().out.split())  # the table folds long cells
    for text in ("[/]BLCA/fold_0", SPOOF, "[bold red]forged[/] error"):
        assert "".join(text.split()) in out
