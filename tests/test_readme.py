"""The READMEs open with the two set-up commands and document every setting."""

from __future__ import annotations

from pathlib import Path

from aegis.config import describe

ROOT = Path(__file__).resolve().parents[1]


def _first_code_block(text: str) -> list[str]:
    block = text.split("```", 2)[1]
    return [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.strip()]


def test_readme_opens_with_make_run_then_make_test():
    for name in ("README.md", "README.zh-TW.md"):
        assert _first_code_block((ROOT / name).read_text()) == ["make run", "make test"], name


def test_readme_configuration_table_lists_every_setting_with_its_default():
    text = (ROOT / "README.md").read_text()
    for var, default, _ in describe():
        row = f"| `{var}` | `{default or '(empty)'}` |"
        assert row in text, f"README configuration table lacks {row}"


def test_readme_shows_a_benchmark_table_not_a_placeholder():
    text = (ROOT / "README.md").read_text()
    assert "BENCH_TABLE" not in text and "LIMITS" not in text.split("## Honest limits", 1)[1][:20]
