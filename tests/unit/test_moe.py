"""Router losses of mixture-of-experts models: cptkit's value equals the model's own."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from cptkit.data.shards import IGNORE_INDEX, ShardWriter, open_split, pack_window
from cptkit.train.losses import CausalLMLoss, chunked_loss, decoder_and_head, full_loss
from cptkit.train.moe import RouterLossConfig, RouterSpec, real_tokens, router_aux, router_spec
from tests.architectures import MOE, VOCAB, tiny_config


def build(name: str, **overrides):
    torch.manual_seed(0)
    config = tiny_config(name)
    for k, v in overrides.items():
        setattr(config, k, v)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    # Some families start their routers at zero (even routing); spread them so routing is uneven.
    for module in model.modules():
        if type(module).__name__.endswith("Router"):
            torch.nn.init.normal_(module.weight, std=0.5)
    return model


def ids(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MOE)
def test_load_balancing_equals_the_models_own_aux_loss(name):
    model = build(name)
    spec = router_spec(model.config)
    x = ids(3, 20)
    with torch.no_grad():
        theirs = model(input_ids=x, output_router_logits=True, use_cache=False).aux_loss
        decoder, _ = decoder_and_head(model)
        logits = decoder(input_ids=x, output_router_logits=True, use_cache=False).router_logits
        ours = router_aux(logits, spec, torch.ones(3, 20, dtype=torch.bool))
    assert float(theirs) > 0
    assert torch.allclose(ours.load_balancing, theirs.float(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(ours.value, spec.aux_coef * theirs.float(), rtol=1e-6, atol=1e-7)
    # Not vacuous: perfectly even routing gives top_k; a random tiny router is off by a measurable amount.
    assert abs(float(ours.load_balancing) - spec.top_k) > 1e-4


@pytest.mark.parametrize("name", MOE)
def test_padding_is_excluded_as_the_models_attention_mask_excludes_it(name):
    model = build(name)
    spec = router_spec(model.config)
    x = ids(2, 16, seed=1)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0  # right padding, as at the end of a shard's last window
    with torch.no_grad():
        theirs = model(input_ids=x, attention_mask=mask, output_router_logits=True, use_cache=False).aux_loss
        unmasked = model(input_ids=x, attention_mask=mask, output_router_logits=True, use_cache=False)
        ours = router_aux(unmasked.router_logits, spec, mask.bool())
        everything = router_aux(unmasked.router_logits, spec, None)
    assert torch.allclose(ours.load_balancing, theirs.float(), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(everything.load_balancing, theirs.float(), rtol=1e-4, atol=1e-5)


def test_real_tokens_are_everything_up_to_the_padding_of_a_last_window(tmp_path):
    writer = ShardWriter(tmp_path / "s", np.dtype(np.uint16), 10**6)
    for n in (5, 8):
        writer.add(np.concatenate([[1], np.arange(3, 3 + n), [2]]), 1)
    shard = open_split(tmp_path / "s", writer.close(), "uint16")[0]
    _, labels, _ = pack_window(shard, 0, 24)  # 17 tokens: 16 inputs with a target, then padding
    labels = torch.from_numpy(labels)[None]
    real = real_tokens(labels)
    assert real[0, :16].all() and not real[0, 16:].any()
    # A document boundary inside the window masks a label but its token is real (routed, counted).
    assert labels[0, 6] == IGNORE_INDEX and real[0, 6]


def test_spec_reads_the_models_coefficients_and_the_config_overrides_them():
    assert router_spec(LlamaConfig()) is None
    mixtral = tiny_config("mixtral")
    assert router_spec(mixtral) == RouterSpec(num_experts=4, top_k=2, aux_coef=0.02, z_coef=0.0)
    off = router_spec(mixtral, RouterLossConfig(aux_loss_coef=0.0))
    assert off is not None and not off.active
    both = router_spec(tiny_config("olmoe"), RouterLossConfig(z_loss_coef=1e-3))
    assert both.aux_coef == 0.01 and both.z_coef == 1e-3


def test_z_loss_is_the_mean_squared_logsumexp_of_router_logits():
    logits = (torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.4, 0.3, 0.2], [3.0, 0.0, 0.0, 0.0]]),)
    spec = RouterSpec(num_experts=4, top_k=1, aux_coef=0.0, z_coef=0.5)
    mask = torch.tensor([[True, True, False]])
    out = router_aux(logits, spec, mask)
    expected = (torch.logsumexp(logits[0][:2], -1) ** 2).mean()
    assert torch.allclose(out.z_loss, expected)
    assert torch.allclose(out.value, 0.5 * expected)
    # Load balancing on two tokens: expert 1 then expert 0 chosen (top-1), mean probabilities.
    p = torch.softmax(logits[0][:2], -1).mean(0)
    assert torch.allclose(out.load_balancing, 4 * (0.5 * p[1] + 0.5 * p[0]))


@pytest.mark.parametrize("name", MOE)
def test_the_training_loss_adds_coef_times_targets_times_aux_and_trains_the_routers(name):
    model = build(name)
    model.train()
    spec = router_spec(model.config)
    x = ids(2, 24, seed=2)
    labels = torch.roll(x, -1, 1)
    labels[:, -1] = IGNORE_INDEX
    batch = {"input_ids": x, "position_ids": torch.arange(24).expand(2, 24), "labels": labels}
    torch.manual_seed(0)
    plain = chunked_loss(model, batch, chunk=16)
    torch.manual_seed(0)
    with_aux = chunked_loss(model, batch, chunk=16, router=spec)
    torch.manual_seed(0)
    full = full_loss(model, batch, router=spec)
    targets = int((labels != IGNORE_INDEX).sum())
    lb = with_aux.aux_sums[0] / targets
    assert torch.allclose(with_aux.total, plain.total + targets * spec.aux_coef * lb, rtol=1e-5)
    assert torch.allclose(full.aux_sums, with_aux.aux_sums, rtol=1e-5)
    # The router's gradient changes when the balancing loss is on.
    gate = next(p for n, p in model.named_parameters() if "gate" in n and "proj" not in n and p.dim() == 2)
    grads = []
    for out in (chunked_loss(model, batch, 16), chunked_loss(model, batch, 16, router=spec)):
        model.zero_grad()
        out.total.backward()
        grads.append(gate.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_loss_module_returns_the_weighted_sums_last_and_dense_models_are_unchanged():
    model = build("mixtral")
    x = ids(2, 12, seed=3)
    labels = torch.roll(x, -1, 1)
    pos = torch.arange(12).expand(2, 12)
    out = CausalLMLoss(model, 8, router_spec(model.config))(x, pos, labels)
    assert len(out) == 4 and out[3].shape == (2,)
    off = CausalLMLoss(model, 8, router_spec(model.config, RouterLossConfig(aux_loss_coef=0.0)))(x, pos, labels)
    assert len(off) == 3 and torch.allclose(off[0] + 0.02 * out[3][0], out[0], rtol=1e-5)
    # Evaluation (eval mode) scores the LM loss only, in the three values evaluate() unpacks.
    scored = CausalLMLoss(model, 8, router_spec(model.config)).eval()(x, pos, labels)
    assert len(scored) == 3 and torch.allclose(scored[0], off[0])


def test_a_moe_config_whose_layers_are_all_dense_adds_nothing():
    model = build("qwen2_moe", mlp_only_layers=[0, 1])  # every layer a plain MLP: no router runs
    x = ids(1, 10, seed=4)
    batch = {"input_ids": x, "position_ids": torch.arange(10)[None], "labels": torch.roll(x, -1, 1)}
    spec = router_spec(model.config)
    out = chunked_loss(model, batch, 8, router=spec)
    assert torch.equal(out.aux_sums, torch.zeros(2)) and torch.allclose(out.total, chunked_loss(model, batch, 8).total)
