"""The device-side weight checksum that names a kept step-0 record on an accelerator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cptkit.evaluation.base_scores import CHUNK, _multipliers, checksum


@pytest.fixture(scope="module")
def multipliers():
    return _multipliers()


@pytest.mark.parametrize("where", [0, 1000, CHUNK - 1, CHUNK, CHUNK + 12345])
def test_one_changed_element_changes_both_sums(multipliers, where):
    x = torch.randn(CHUNK + 20000, generator=torch.Generator().manual_seed(1))
    before = checksum(x, multipliers)
    x[where] = torch.nextafter(x[where], torch.tensor(float("inf")))
    assert (checksum(x, multipliers) != before).all()


def test_order_matters_and_repeats_agree(multipliers):
    x = torch.arange(2 * CHUNK + 7, dtype=torch.float32)
    swapped = x.clone()
    swapped[[3, CHUNK + 3]] = swapped[[CHUNK + 3, 3]]
    assert (checksum(swapped, multipliers) != checksum(x, multipliers)).all()
    assert np.array_equal(checksum(x, multipliers), checksum(x.clone(), _multipliers()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int64, torch.bool, torch.uint8])
def test_every_element_size_is_read(multipliers, dtype):
    x = torch.zeros(100, dtype=dtype)
    y = x.clone()
    y[57] = 1
    assert (checksum(x, multipliers) != checksum(y, multipliers)).all()


def test_a_record_round_trips_exactly_and_a_non_finite_one_is_not_kept(tmp_path):
    from cptkit.evaluation.base_scores import load, store

    metrics, rows = {"general_ppl": 1 / 3, "general_tokens": 7}, [{"logprob": -0.1, "choice": None}]
    store(tmp_path, "a", metrics, rows, tmp_path / "run")
    assert load(tmp_path, "a") == (metrics, rows)
    store(tmp_path, "b", {"general_ppl": float("nan")}, rows, tmp_path / "run")
    store(tmp_path, "c", metrics, [{"logprob": float("-inf")}], tmp_path / "run")
    assert load(tmp_path, "b") is None and load(tmp_path, "c") is None
