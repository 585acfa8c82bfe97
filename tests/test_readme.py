"""The README's mixer table is generated from the registry: it must be exactly what
``hvtnas mixers --markdown`` prints, so it lists every registered mixer and cannot go stale."""

from __future__ import annotations

from pathlib import Path

from hvtnas import MIXERS
from hvtnas.cli.mixers import README_TABLE_END, README_TABLE_START, mixer_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_table() -> str:
    text = README.read_text()
    start = text.index(README_TABLE_START)
    return text[start : text.index(README_TABLE_END, start) + len(README_TABLE_END)]


def test_readme_mixer_table_is_the_generated_one() -> None:
    assert _readme_table() == mixer_table_markdown(), "regenerate it with `hvtnas mixers --markdown`"


def test_readme_mixer_table_lists_every_registered_mixer() -> None:
    rows = [line for line in _readme_table().splitlines() if line.startswith("| `")]
    assert sorted(row.split("`")[1] for row in rows) == MIXERS.names()


def test_every_mixer_says_where_it_comes_from_and_what_it_costs() -> None:
    for kind in MIXERS:
        cls = MIXERS.get(kind)
        assert cls.paper and cls.complexity, kind
