"""Novelty scores come back in the documents' order although batches are sorted by length."""

import math
from types import SimpleNamespace

import pytest

from cptkit.data.filters.perplexity import Scorer
from cptkit.select.run import SelectOptions, _novelty_scorer


def test_novelty_is_ln_perplexity_in_input_order(tiny_model, tmp_path):
    texts = ["def f(x):\n    return x + 1\n", "a", "import os\nprint(os.getcwd())\n" * 5, "class A:\n    pass\n"]
    opts = SelectOptions(fraction=0.5, by="novelty", out=tmp_path / "o.jsonl", batch_size=2, max_tokens=64)
    scores = _novelty_scorer(SimpleNamespace(model=SimpleNamespace(name_or_path=str(tiny_model))), opts)(texts)
    alone = Scorer(str(tiny_model), 64)
    for text, score in zip(texts, scores):
        assert score == pytest.approx(math.log(alone.score([text])[0]), abs=1e-4)
