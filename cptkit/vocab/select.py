"""Choosing the new tokens: greedily, by the tokens each one saves on the domain corpus.

Every word of the domain sample starts as the base tokenizer's segmentation of it. A step
adds the unit that saves the most domain tokens on the current segmentations, re-segments the
words it occurs in, and recounts. The units, by kind (how `extend.py` writes them):
- BPE (`byte_bpe`, `sp_bpe`): a merge of two adjacent tokens whose concatenation is a
  candidate, appended after every base merge. It saves one token per occurrence, exactly.
- `sp_bpe` also: a character the base vocabulary lacks, which then replaces its byte-fallback
  tokens (saves its UTF-8 length minus one per occurrence).
- `unigram`: a piece that a run of adjacent tokens spells (saves the run's length minus one).

The same units are counted on the general sample: a unit whose use per byte of general text
exceeds `max_general_ratio` times its use per byte of domain text is rejected ("frequent in
the domain, rare in general text"), so general text keeps its old tokens. Counting stops at
`add` new tokens, or when the best unit saves fewer than `min_gain` tokens.

For BPE the re-segmentation is the tokenizer's own algorithm (merges by rank on top of the
base segmentation), so the counts are what the extended tokenizer will produce; for Unigram
it is the fewest-token segmentation along the base token boundaries, which the Viterbi
segmentation with the scores `extend.py` gives follows up to ties.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from cptkit.vocab.base import BaseTokenizer, Symbol, symbol_bytes

Key = tuple  # ("merge", left, right) | ("char", bytes) | ("piece", bytes)


@dataclass
class Choice:
    key: Key
    text: bytes  # the token the unit forms
    new: bool  # a new vocabulary entry (False: one more merge that forms an earlier choice)
    gain: int  # domain tokens it saved when chosen
    general: int  # general-text tokens it changed when chosen


@dataclass
class Selection:
    choices: list[Choice]
    rejected_general: int  # units refused as frequent in general text
    stopped: str  # why choosing ended: "enough" | "min_gain" | "no_candidates"
    domain_tokens: tuple[int, int]  # sample tokens before, after (simulated)
    general_tokens: tuple[int, int]
    rejected: list[bytes] = field(default_factory=list)

    @property
    def tokens(self) -> list[Choice]:
        return [c for c in self.choices if c.new]


class Rules:
    """How one kind's units occur in a segmentation, and how a word is segmented with them."""

    def __init__(self, base: BaseTokenizer, candidates: set[bytes]):
        self.kind = base.kind
        self.candidates = candidates
        self.ignore_merges = base.ignore_merges
        self.max_len = max((len(c) for c in candidates), default=0)
        self.ranks: dict[tuple[bytes, bytes], int] = {}
        self.chars: set[bytes] = set()
        self.chosen: set[bytes] = set()

    def text_of(self, key: Key) -> bytes:
        return key[1] + key[2] if key[0] == "merge" else key[1]

    def add(self, key: Key) -> None:
        if key[0] == "merge":
            self.ranks[(key[1], key[2])] = len(self.ranks)
        elif key[0] == "char":
            self.chars.add(key[1])
        self.chosen.add(self.text_of(key))

    def units(self, syms: list[Symbol]) -> Counter:
        """Units occurring in a segmentation -> tokens each would save there.

        A pure function of the segmentation (not of the choices so far): `Corpus` subtracts a
        word's units before re-segmenting it, and must subtract what it once added.
        """
        if self.kind == "unigram":
            return self._runs(syms)
        out: Counter = Counter()
        cand = self.candidates
        for a, b in zip(syms, syms[1:]):
            if type(a) is bytes and type(b) is bytes and a + b in cand:
                out[("merge", a, b)] += 1
        if self.kind == "sp_bpe":
            for ch in _fallback_chars(syms):
                if len(ch) > 1 and ch in cand:
                    out[("char", ch)] += len(ch) - 1
        return out

    def _runs(self, syms: list[Symbol]) -> Counter:
        out: Counter = Counter()
        parts = [symbol_bytes(s) for s in syms]
        for i in range(len(parts)):
            acc = parts[i]
            for j in range(i + 1, len(parts)):
                acc += parts[j]
                if len(acc) > self.max_len:
                    break
                if acc in self.candidates:
                    out[("piece", acc)] += j - i
        return out

    def segment(self, old: tuple[Symbol, ...]) -> list[Symbol]:
        """A word's segmentation by the extended tokenizer (from its base segmentation)."""
        if self.kind == "unigram":
            return self._fewest(old)
        syms = _join_chars(list(old), self.chars) if self.chars else list(old)
        if self.ignore_merges and len(syms) > 1 and all(type(s) is bytes for s in syms):
            whole = b"".join(syms)
            if whole in self.chosen:  # the tokenizer takes a whole word found in the vocabulary as is
                return [whole]
        ranks = self.ranks
        while len(syms) > 1:
            best, at = None, -1
            for i in range(len(syms) - 1):
                a, b = syms[i], syms[i + 1]
                if type(a) is bytes and type(b) is bytes:
                    r = ranks.get((a, b))
                    if r is not None and (best is None or r < best):
                        best, at = r, i
            if best is None:
                break
            syms[at : at + 2] = [syms[at] + syms[at + 1]]
        return syms

    def _fewest(self, old: tuple[Symbol, ...]) -> list[Symbol]:
        parts = [symbol_bytes(s) for s in old]
        n = len(parts)
        best, back = [0] * (n + 1), [0] * (n + 1)
        for j in range(1, n + 1):
            best[j], back[j] = best[j - 1] + 1, j - 1
            acc = parts[j - 1]
            for i in range(j - 2, -1, -1):
                acc = parts[i] + acc
                if len(acc) > self.max_len:
                    break
                if acc in self.chosen and best[i] + 1 < best[j]:
                    best[j], back[j] = best[i] + 1, i
        out: list[Symbol] = []
        j = n
        while j > 0:
            i = back[j]
            out.append(old[i] if j - i == 1 else b"".join(parts[i:j]))
            j = i
        return out[::-1]


def _utf8_length(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1


def _fallback_chars(syms: list[Symbol]):
    """The characters spelled by runs of byte-fallback tokens (each run holds whole characters)."""
    i, n = 0, len(syms)
    while i < n:
        if type(syms[i]) is not int:
            i += 1
            continue
        j = i
        while j < n and type(syms[j]) is int:
            j += 1
        run = bytes(syms[i:j])
        pos = 0
        while pos < len(run):
            size = _utf8_length(run[pos])
            yield run[pos : pos + size]
            pos += size
        i = j


def _join_chars(syms: list[Symbol], chars: set[bytes]) -> list[Symbol]:
    """Byte-fallback runs with the added characters as single tokens (the vocabulary has them now)."""
    out: list[Symbol] = []
    i, n = 0, len(syms)
    while i < n:
        s = syms[i]
        if type(s) is int:
            size = _utf8_length(s)
            ch = bytes(syms[i : i + size]) if all(type(x) is int for x in syms[i : i + size]) else b""
            if len(ch) == size and ch in chars:
                out.append(ch)
                i += size
                continue
        out.append(s)
        i += 1
    return out


class Corpus:
    """Words of one sample (base segmentation -> count), their current segmentations and unit counts.

    `where` maps a unit to the words it may occur in: a superset (a word is not removed when a
    unit leaves it), so `apply` re-checks each word; the counts are exact.
    """

    def __init__(self, words: dict[tuple[Symbol, ...], int], rules: Rules):
        self.rules = rules
        self.old = list(words)
        self.freq = list(words.values())
        self.state = [list(w) for w in self.old]
        self.count: Counter = Counter()
        self.where: dict[Key, set[int]] = defaultdict(set)
        # With ignore_merges a word that spells a new token becomes it, whatever its pairs.
        self.by_text = {b"".join(symbol_bytes(s) for s in w): i for i, w in enumerate(self.old)} \
            if rules.ignore_merges else {}
        for i in range(len(self.old)):
            self._tally(i, +1)

    def _tally(self, i: int, sign: int) -> set:
        units = self.rules.units(self.state[i])
        f = self.freq[i] * sign
        for key, n in units.items():
            self.count[key] += f * n
            if sign > 0:
                self.where[key].add(i)
        return set(units)

    def apply(self, key: Key, fresh: bool) -> set:
        """Re-segment the words where `key` occurs (after `rules.add(key)`); return the changed keys.

        `fresh`: the key is a merge forming a token no earlier choice formed. No earlier merge
        involves that token then, so applying it left to right on the current segmentation is
        what BPE does; otherwise the word is segmented again from its base segmentation.
        """
        words = set(self.where.get(key, ()))
        text = self.rules.text_of(key)
        if text in self.by_text:
            words.add(self.by_text[text])
        changed: set = set()
        for i in words:
            if fresh and key[0] == "merge" and i != self.by_text.get(text):
                changed |= self._merge(i, key[1], key[2], text)
            else:
                changed |= self._tally(i, -1)
                self.state[i] = self.rules.segment(self.old[i])
                changed |= self._tally(i, +1)
        return changed

    def _merge(self, i: int, a: bytes, b: bytes, t: bytes) -> set:
        """Merge every (a, b) of word i left to right; recount only the pairs around the merges."""
        syms = self.state[i]
        new: list[Symbol] = []
        k, n, first, last = 0, len(syms), -1, -1
        while k < n:
            if k + 1 < n and syms[k] == a and syms[k + 1] == b and type(syms[k]) is bytes and type(syms[k + 1]) is bytes:
                first = k if first < 0 else first
                last = k
                new.append(t)
                k += 2
            else:
                new.append(syms[k])
                k += 1
        if first < 0:
            return set()
        # Pairs outside [first - 1, last + 2] are the same before and after.
        lo, hi, merged = max(first - 1, 0), min(last + 3, n), n - len(new)
        delta: Counter = Counter()
        cand = self.rules.candidates
        for part, sign in ((syms[lo:hi], -1), (new[lo : hi - merged], +1)):
            for x, y in zip(part, part[1:]):
                if type(x) is bytes and type(y) is bytes and x + y in cand:
                    delta[("merge", x, y)] += sign
        self.state[i] = new
        f = self.freq[i]
        for key, d in delta.items():
            if d:
                self.count[key] += f * d
                if d > 0:
                    self.where[key].add(i)
        return set(delta)

    def tokens(self, current: bool = True) -> int:
        words = self.state if current else self.old
        return sum(f * len(w) for f, w in zip(self.freq, words))


def select(base: BaseTokenizer, candidates: set[bytes], domain: dict, general: dict, add: int,
           min_gain: int, max_general_ratio: float, domain_bytes: int, general_bytes: int) -> Selection:
    """Choose up to `add` new tokens; `domain`/`general`: base segmentation -> count."""
    rules = Rules(base, candidates)
    dom, gen = Corpus(domain, rules), Corpus(general, rules)
    before = (dom.tokens(), gen.tokens())
    heap = [(-n, key) for key, n in dom.count.items() if n > 0]
    heapq.heapify(heap)
    choices: list[Choice] = []
    refused: set = set()
    rejected: list[bytes] = []
    new = 0
    stopped = "no_candidates"
    while heap:
        if new >= add:
            stopped = "enough"
            break
        neg, key = heapq.heappop(heap)
        n = dom.count.get(key, 0)
        if n != -neg:  # a stale entry: the count moved since it was pushed
            if n > 0:
                heapq.heappush(heap, (-n, key))
            continue
        if n < min_gain:
            stopped = "min_gain"
            break
        g = gen.count.get(key, 0)
        if general_bytes and g * domain_bytes > max_general_ratio * n * general_bytes:
            refused.add(key)
            rejected.append(rules.text_of(key))
            continue
        text = rules.text_of(key)
        is_new = text not in rules.chosen
        if not is_new and key[0] != "merge":
            continue  # a Unigram piece the fewest-token segmentation does not use here: already chosen
        rules.add(key)
        changed = dom.apply(key, is_new) | gen.apply(key, is_new)
        for k in changed:
            c = dom.count.get(k, 0)
            if c > 0 and k not in refused:
                heapq.heappush(heap, (-c, k))
        choices.append(Choice(key, text, is_new, n, g))
        new += is_new
    else:
        stopped = "enough" if new >= add else "no_candidates"
    return Selection(choices, len(refused), stopped, (before[0], dom.tokens()), (before[1], gen.tokens()), rejected)


def segmentations(base: BaseTokenizer, words) -> dict[tuple[Symbol, ...], int]:
    """Word counts -> base segmentation counts (words with the same segmentation are one entry)."""
    out: dict[tuple[Symbol, ...], int] = {}
    for word, n in words.items():
        seg = base.segment(word)
        out[seg] = out.get(seg, 0) + n
    return out
