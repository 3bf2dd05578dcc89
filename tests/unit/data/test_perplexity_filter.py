import math

import pytest

from cptkit.data.documents import Document
from cptkit.data.filters.perplexity import PerplexityParams, Scorer, build, check_params


def test_batched_scores_equal_scores_one_at_a_time(tiny_model):
    scorer = Scorer(str(tiny_model), max_tokens=64)
    texts = ["def f(x):\n    return x + 1\n", "The quick brown fox jumps over the lazy dog. " * 3, "a", "import os\n"]
    together = scorer.score(texts)
    alone = [scorer.score([t])[0] for t in texts]
    assert together == pytest.approx(alone, rel=1e-4)
    assert all(math.isfinite(x) and x > 1 for x in together)
    # A uniform model would score the vocabulary size; a random tiny model is close to it.
    assert 100 < together[1] < 5000


def test_thresholds_drop_with_reasons_and_record_the_score(tiny_model):
    scorer = Scorer(str(tiny_model), max_tokens=64)
    texts = ["def f(x):\n    return x + 1\n", "Zq xv jk wq pz " * 5, "import os\nimport sys\n"]
    scores = scorer.score(texts)
    low, mid, high = sorted(scores)
    step = build(PerplexityParams(model=str(tiny_model), batch_size=2, max_tokens=64, max_perplexity=(mid + high) / 2,
                                  min_perplexity=(low + mid) / 2), None)
    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    verdicts = [v for _, v in step.run(docs)]
    expected = ["perplexity_above_max" if s == high else "perplexity_below_min" if s == low else None for s in scores]
    assert verdicts == expected
    assert all(d.meta["perplexity"] == pytest.approx(s, rel=1e-3) for d, s in zip(docs, scores))


def test_parameter_checks(tmp_path):
    problems = check_params(PerplexityParams(model=str(tmp_path / "nope"), keep_fraction=1.5, buckets=[0.7, 0.2],
                                             keep_buckets=["top"]), "p")
    assert len(problems) == 4 and any("p.model" in x for x in problems)
