"""Rewrite the README's config reference from the config dataclasses (their types, defaults, help)."""

import re
from pathlib import Path

from cptkit.config import Config
from cptkit.schema import markdown_reference

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def render(readme: str) -> str:
    block = f"{START}\n{markdown_reference(Config)}{END}"
    return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, readme, flags=re.S)


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "README.md"
    path.write_text(render(path.read_text()))
    print(f"updated {path}")
