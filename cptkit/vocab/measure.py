"""Tokens per byte and per character before and after, and how much old text changed.

Bits per byte, which `cptkit eval` reports, divides by the text's bytes, not its tokens, so
runs with the base and the extended tokenizer stay comparable; tokens per byte says how much
shorter the same text became.
"""

from __future__ import annotations

BATCH = 256


def measure(texts: list[str], before, after, first_new: int) -> dict:
    """Counts for `texts` under the base (`before`) and extended (`after`) tokenizers (`tokenizers.Tokenizer`)."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    chars = sum(len(t) for t in texts)
    old = new = fresh = changed = 0
    for i in range(0, len(texts), BATCH):
        batch = texts[i : i + BATCH]
        a = before.encode_batch(batch, add_special_tokens=False)
        b = after.encode_batch(batch, add_special_tokens=False)
        for x, y in zip(a, b):
            old += len(x.ids)
            new += len(y.ids)
            fresh += sum(1 for t in y.ids if t >= first_new)
            changed += x.ids != y.ids
    return {
        "documents": len(texts),
        "bytes": n_bytes,
        "characters": chars,
        "tokens_before": old,
        "tokens_after": new,
        "tokens_per_byte_before": _ratio(old, n_bytes),
        "tokens_per_byte_after": _ratio(new, n_bytes),
        "tokens_per_char_before": _ratio(old, chars),
        "tokens_per_char_after": _ratio(new, chars),
        "fewer_tokens": 1 - new / old if old else 0.0,
        "new_token_share": _ratio(fresh, new),
        "documents_changed": _ratio(changed, len(texts)),
    }


def _ratio(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0


def table(record: dict) -> str:
    """The console summary of a vocab.json record."""
    rows = [("held-out set", "docs", "tok/byte before", "after", "tok/char before", "after", "change",
             "new-token share", "docs changed")]
    for name, m in record["heldout"].items():
        rows.append((name, f"{m['documents']:,}", f"{m['tokens_per_byte_before']:.3f}",
                     f"{m['tokens_per_byte_after']:.3f}", f"{m['tokens_per_char_before']:.3f}",
                     f"{m['tokens_per_char_after']:.3f}", f"{-100 * m['fewer_tokens']:+.1f}%",
                     f"{100 * m['new_token_share']:.1f}%", f"{100 * m['documents_changed']:.1f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    emb = record["embedding_rows"]
    lines.append("")
    lines.append(
        f"added {record['added']:,} of {record['requested']:,} tokens ({record['kind']}, ids "
        f"{record['first_new_id']:,}-{record['first_new_id'] + record['added'] - 1:,}); embeddings "
        f"{emb['before']:,} -> {emb['after']:,} rows (multiple of {record['pad_to_multiple_of']}, "
        f"{'tied' if record['tied_embeddings'] else 'untied'} output layer)"
    )
    return "\n".join(lines)
