"""From the mix schedule to tensors: the global rows of an optimizer step, split across processes.

Every process computes the same global assignment (a few integers per row), then reads only its
own rows from the memory-mapped shards. Row r of a step goes to process (r // micro) % world in
micro step r // (micro * world), so the global batch, and therefore the loss curve, is the same
for any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cptkit.data.shards import WindowIndex
from cptkit.mixing import Mixer, Shares, SourceStream


@dataclass
class Row:
    source: str
    window: int


class TrainStream:
    def __init__(
        self,
        windows: dict[str, WindowIndex],
        shares: Shares,
        seed: int,
        document_masking: bool = True,
    ):
        self.windows = windows
        self.names = list(windows)
        self.mixer = Mixer(self.names, shares)
        self.streams = {n: SourceStream(n, w, seed) for n, w in windows.items()}
        self.document_masking = document_masking

    def next_step(self, rows: int, progress: float) -> list[Row]:
        """The global rows of the next optimizer step; advances the stream."""
        return [Row(s, self.streams[s].take()) for s in self.mixer.assign(rows, progress)]

    def micro_batches(self, rows: list[Row], micro: int, world: int, rank: int) -> list[dict]:
        """This process's micro batches of one step, as tensors (CPU) plus their source names."""
        per_micro = micro * world
        out = []
        for start in range(0, len(rows), per_micro):
            mine = rows[start + rank * micro : start + (rank + 1) * micro]
            out.append(self.collate(mine))
        return out

    def collate(self, rows: list[Row]) -> dict:
        packed = [self.windows[r.source].window(r.window, self.document_masking) for r in rows]
        inputs, labels, positions = (np.stack(x) for x in zip(*packed))
        return {
            "input_ids": torch.from_numpy(inputs),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(positions),
            "sources": [r.source for r in rows],
        }

    def source_tokens(self, seq_len: int) -> dict[str, int]:
        """Cumulative tokens (sequence positions) drawn from each training source so far."""
        return {n: c * seq_len for n, c in self.mixer.count.items()}

    def state_dict(self) -> dict:
        return {"mixer": self.mixer.state_dict(), "consumed": {n: s.consumed for n, s in self.streams.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.mixer.load_state_dict(state["mixer"])
        for name, stream in self.streams.items():
            stream.consumed = int(state["consumed"].get(name, 0))

    def epochs(self) -> dict[str, float]:
        return {n: round(s.epochs, 4) for n, s in self.streams.items()}
