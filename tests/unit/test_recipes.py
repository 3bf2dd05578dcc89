"""Every run recipe under recipes/ is a valid, complete run config with the field's CPT settings."""

from pathlib import Path

import pytest
import yaml

from cptkit.config import load_config
from cptkit.planning import make_plan

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def test_the_documented_recipes_exist():
    assert {p.stem for p in RECIPES} >= {"medical", "code", "medical-lora"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_follows_the_cpt_recommendations(path):
    cfg = load_config(path, check_paths=False)
    t = cfg.train
    if t.peft.active:
        # LoRA: the adapters need a higher lr than full training (Unsloth's CPT recipe: 5e-5 at rank 128),
        # while the matrices trained in full stay at a full-training CPT rate, 2-10x below the adapters'.
        assert 5e-5 <= t.lr <= 2e-4
        assert 1e-5 <= t.lr * t.embedding_lr_scale <= 5e-5 and 0.1 <= t.embedding_lr_scale <= 0.5
        # CPT with adapters: every linear layer, embeddings and output layer in full, a high rank with rsLoRA.
        assert t.peft.target_modules is None and t.peft.train_embeddings and t.peft.train_lm_head
        assert t.peft.r >= 64 and t.peft.rslora and t.peft.dropout == 0.0
    else:
        assert 1e-5 <= t.lr <= 5e-5  # about a tenth of a 1e-4..5e-4 pre-training peak
    assert 0.03 <= t.warmup_ratio <= 0.05 and t.warmup_steps is None
    assert t.schedule == "cosine" and t.min_lr_ratio == 0.1
    assert t.max_tokens is None and t.max_steps is None  # one epoch over the domain data
    assert t.global_batch_tokens >= 2**21  # large token batches
    # A recipe for another language (medical-ko) names the same pipeline with its source's language,
    # which every language-dependent step takes, and replays 25%: a new language is a strong shift
    # (Ibrahim et al. 2024).
    recipe, *variants = path.stem.split("-")  # medical-ko: a language; medical-lora: a training method
    language = next((v for v in variants if len(v) == 2), "")
    assert set(variants) - {language} <= {"lora"}
    domain = cfg.domain_sources[0]
    assert cfg.mix.replay_ratio == (0.25 if language else 0.05) and cfg.general_sources
    assert domain.pipeline == recipe and domain.language == [language or "en"]
    told = [getattr(s.params, "language", getattr(s.params, "languages", None)) for s in domain.steps]
    told = [t for t in told if isinstance(t, list)]  # the code step's `language` is a programming language
    assert told and all(t == [language or "en"] for t in told)
    make_plan(cfg, None, world_size=8)  # the batch splits over 8 processes
    # Every key the recipe sets is explained by a comment in the file.
    text = path.read_text()
    assert text.count("#") >= len([k for section in yaml.safe_load(text).values() if isinstance(section, dict)
                                   for k in section]) // 2
