"""Read the tables of a cptkit report back: {table id: {row key: [(text, data-value or None)]}}."""

from __future__ import annotations

from html.parser import HTMLParser


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict[str, list[tuple[str, float | None]]]] = {}
        self.table = self.row = self.cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = self.tables.setdefault(a.get("id", ""), {})
        elif tag == "tr" and self.table is not None and "data-key" in a:
            self.row = self.table.setdefault(a["data-key"], [])
        elif tag == "td" and self.row is not None:
            value = a.get("data-value")
            self.cell = ["", float(value) if value is not None else None]

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.row.append((self.cell[0].strip(), self.cell[1]))
            self.cell = None
        elif tag == "tr":
            self.row = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data


def read_tables(html: str) -> dict[str, dict[str, list[tuple[str, float | None]]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables
