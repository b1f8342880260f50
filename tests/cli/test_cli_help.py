"""Help screens and `stephctl plugins` show whole sentences, never a summary cut at a source line break."""

from __future__ import annotations

import json

import pytest

from steph.registry import summary, unwrap


def _commands(cli) -> list[dict[str, str]]:
    result = cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["commands"]


def test_plugins_lists_whole_summaries(cli) -> None:
    from stephctl.main import app

    docs = {info.name: info.callback.__doc__ for info in app.registered_commands if info.callback}
    rows = _commands(cli)
    assert rows
    for row in rows:
        text = row["description"]
        assert text.endswith("."), f"{row['name']}: {text!r} is not a whole sentence"
        if docs.get(row["name"]):
            assert text == summary(docs[row["name"]])
            assert "\n" not in text


@pytest.mark.parametrize(
    "name",
    ["task-vector", "export", "export-sources", "import-sources", "predict", "plugins", "explain", "splits"],
)
def test_help_wraps_at_the_terminal_not_at_the_source(cli, name: str) -> None:
    result = cli(name, "--help", env={"COLUMNS": "2000"})
    assert result.exit_code == 0
    row = next(r for r in _commands(cli) if r["name"] == name)
    assert row["description"] in result.output  # on one line of a 2000-column terminal


def test_unwrap_keeps_paragraphs_and_list_items() -> None:
    text = """First line and
    second line.

    - item one
      continues
    - item two
    """
    assert unwrap(text) == "First line and second line.\n\n- item one continues\n- item two"
