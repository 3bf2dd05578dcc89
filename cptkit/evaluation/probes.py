"""Knowledge probes: does the model still complete "What is the capital of France?" with "Paris"?

Probe sets (JSONL files of prompt, answer and optional distractors) are read by
`cptkit.evaluation.probe_sets`.

Each probe is scored three ways, all batched:
- log-likelihood of the answer after the prompt: the sum over the answer's tokens (nats) and the
  mean per token. The model sees [start] + prompt + " " + answer, where start is BOS (or EOS for
  models without one), as in training and perplexity evaluation; the space is added unless the
  prompt ends with, or the answer starts with, whitespace.
- greedy exact match: a greedy continuation of `new_tokens` tokens must begin with the answer
  (whitespace collapsed, case kept) followed by a non-alphanumeric character or the end, so
  "Paris." matches "Paris" but "Parisian" does not. The continuation is kept for the report.
- choice (only for probes with distractors): the answer's mean log-likelihood per token beats
  every distractor's; per token, so a longer choice is not penalised for its length.

Cost: one forward per `batch_size` scored rows (answer and distractors are rows) through the
chunked loss (no [tokens, vocabulary] tensor), plus one batched `generate` per `batch_size`
prompts. Scoring runs on the plain Hugging Face model, outside any DDP wrapper, so it needs no
collective; every process scores the same probes and gets the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cptkit.data.shards import IGNORE_INDEX
from cptkit.errors import UserError
from cptkit.evaluation.probe_sets import Probe, ProbeSet, load_probe_sets

__all__ = ["Probe", "ProbeSet", "load_probe_sets", "score_probe_sets"]


def continuation(prompt: str, answer: str) -> str:
    return answer if prompt[-1:].isspace() or answer[:1].isspace() else " " + answer


def _norm(text: str) -> str:
    return " ".join(text.split())


def greedy_matches(generated: str, answer: str) -> bool:
    """The continuation begins with the answer as a whole word (whitespace collapsed, case kept)."""
    gen, ans = _norm(generated), _norm(answer)
    if not gen.startswith(ans):
        return False
    rest = gen[len(ans) :]
    return not rest or not rest[0].isalnum()


@dataclass
class Row:
    """One scored sequence: [start] + prompt + choice; labels on the choice's tokens only."""

    probe: int  # index into the flat probe list
    choice: int  # 0 = the answer, 1.. = distractors
    ids: list[int]
    n_prompt: int  # tokens before the choice, start token included


def _encode_rows(tokenizer, start_id: int, probes: list[Probe]) -> list[Row]:
    texts, keys = [], []
    for i, p in enumerate(probes):
        for c, choice in enumerate([p.answer, *p.distractors]):
            texts.append(p.prompt + continuation(p.prompt, choice))
            keys.append((i, c))
    prompt_ids = tokenizer([p.prompt for p in probes], add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rows = []
    for (i, c), whole in zip(keys, whole_ids):
        prompt = prompt_ids[i]
        if whole[: len(prompt)] != prompt:
            # The tokenizer merged across the prompt/answer seam: tokenize the two apart.
            cont = [p.answer, *probes[i].distractors][c]
            whole = prompt + tokenizer(continuation(probes[i].prompt, cont), add_special_tokens=False)["input_ids"]
        if len(whole) == len(prompt):
            raise UserError(f"probe {probes[i].id!r}: choice {c} has no tokens")
        rows.append(Row(i, c, [start_id, *whole], len(prompt) + 1))
    return rows


def _score_rows(lm, rows: list[Row], batch_size: int, device, autocast, chunk: int | None) -> list[tuple[float, int]]:
    """(log-likelihood sum, token count) of each row's choice, right-padded batches."""
    from cptkit.train.losses import lm_loss

    out = []
    for s in range(0, len(rows), batch_size):
        batch = rows[s : s + batch_size]
        width = max(len(r.ids) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        for b, r in enumerate(batch):
            ids[b, : len(r.ids)] = torch.tensor(r.ids)
            # Position t predicts token t + 1: label the positions that predict the choice.
            labels[b, r.n_prompt - 1 : len(r.ids) - 1] = torch.tensor(r.ids[r.n_prompt :])
        positions = torch.arange(width).expand(len(batch), width)
        inputs = {"input_ids": ids.to(device), "position_ids": positions.to(device), "labels": labels.to(device)}
        with autocast():
            loss = lm_loss(lm, inputs, chunk)
        out += [(-float(s_), int(n)) for s_, n in zip(loss.row_sums.double(), loss.row_counts)]
    return out


def _generate(lm, tokenizer, start_id: int, prompts: list[list[int]], batch_size: int, new_tokens: int,
              device, autocast) -> list[str]:
    """Greedy continuations of left-padded prompt batches, decoded to text."""
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, num_beams=1, use_cache=True,
                              pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    texts = []
    for s in range(0, len(prompts), batch_size):
        batch = [[start_id, *p] for p in prompts[s : s + batch_size]]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for b, p in enumerate(batch):
            ids[b, width - len(p) :] = torch.tensor(p)
            mask[b, width - len(p) :] = 1
        with autocast():
            out = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        for row in out[:, width:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


@torch.no_grad()
def score_probe_sets(
    lm, tokenizer, sets: list[ProbeSet], device, autocast, chunk: int | None = None,
    batch_size: int = 32, new_tokens: int = 16,
) -> tuple[dict[str, float | None], list[dict]]:
    """({probe_SET_exact/_logprob/_logprob_tok/_choice: value}, one result dict per probe)."""
    flat = [(ps.name, p) for ps in sets for p in ps.probes]
    if not flat:
        return {}, []
    probes = [p for _, p in flat]
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    was_training = lm.training
    lm.eval()
    try:
        rows = _encode_rows(tokenizer, start_id, probes)
        scores = _score_rows(lm, rows, batch_size, device, autocast, chunk)
        prompts = tokenizer([p.prompt for p in probes], add_special_tokens=False)["input_ids"]
        greedy = _generate(lm, tokenizer, start_id, prompts, batch_size, new_tokens, device, autocast)
    finally:
        lm.train(was_training)
    per_choice: dict[int, list[tuple[float, int]]] = {}
    for row, score in zip(rows, scores):
        per_choice.setdefault(row.probe, []).append(score)
    results = []
    for i, (set_name, p) in enumerate(flat):
        (logprob, n), *others = per_choice[i]
        mean = logprob / n
        choice = all(mean > lp / k for lp, k in others) if others else None
        results.append({"set": set_name, "id": p.id, "prompt": p.prompt, "answer": p.answer,
                        "logprob": logprob, "logprob_tok": mean, "n_tokens": n,
                        "exact": greedy_matches(greedy[i], p.answer), "choice": choice, "greedy": greedy[i]})
    return aggregate(results, [ps.name for ps in sets]), results


def aggregate(results: list[dict], names: list[str]) -> dict[str, float | None]:
    """Per set: share of exact matches, mean log-likelihood (sum and per token), choice accuracy."""
    out: dict[str, float | None] = {}
    for name in names:
        mine = [r for r in results if r["set"] == name]
        chosen = [r["choice"] for r in mine if r["choice"] is not None]
        out[f"probe_{name}_exact"] = sum(r["exact"] for r in mine) / len(mine)
        out[f"probe_{name}_logprob"] = sum(r["logprob"] for r in mine) / len(mine)
        out[f"probe_{name}_logprob_tok"] = sum(r["logprob_tok"] for r in mine) / len(mine)
        out[f"probe_{name}_choice"] = sum(chosen) / len(chosen) if chosen else None
    return out
