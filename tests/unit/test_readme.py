"""The README's promises that code can check: its config reference and its commands."""

from pathlib import Path

from scripts.update_readme_reference import render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_config_reference_matches_the_code():
    text = README.read_text()
    assert render(text) == text, "README config reference is stale: run python scripts/update_readme_reference.py"


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = text[text.index("```sh"):]
    assert first_block.splitlines()[1].startswith("make demo") and first_block.splitlines()[2].startswith("make test")
