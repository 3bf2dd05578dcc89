"""Secrets put into the input never reach an output; model folders that are unsafe or broken are refused."""

import json

import pytest
from transformers import AutoTokenizer

from tests.helpers import cptkit, every_output, make_config, write_config

SECRETS = [
    "jane.doe.4471@example.org",
    "AKIAQWERTYUIOPASDFGH",
    "ghp_" + "Zx9" * 12,
    "4111 1111 1111 1111",
    "s3cr3t-Passw0rd-77",
]


def secret_documents() -> list[str]:
    lines = []
    for i in range(40):
        secret = SECRETS[i % 4]  # the ones recognisable on their own (a password needs its "password =")
        text = (f"Record {i}: the integration notes say to write to {SECRETS[0]} when the job fails. "
                f"The deploy key is {SECRETS[1]} and the token is {SECRETS[2]}; the card on file is "
                f"{SECRETS[3]}. Config: password = \"{SECRETS[4]}\". Item {secret} ends the note "
                "about the nightly build and the cache that is cleared every week.")
        lines.append(json.dumps({"id": f"s{i}", "text": text}))
    lines.append(json.dumps({"id": "short", "text": f"too short {SECRETS[0]}"}))  # dropped by length
    lines.append('{"id": "broken", "text": "' + SECRETS[1] + '"')  # malformed JSON: counted, not echoed
    return lines


def test_injected_secrets_appear_in_no_output(tmp_path, tiny_model, corpus):
    domain = tmp_path / "secrets.jsonl"
    domain.write_text("\n".join(secret_documents()) + "\n")
    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 4}, checkpoint={"every_steps": 2})
    cfg["data"]["domain"] = {
        "paths": [str(domain)], "id_field": "id",
        "pipeline": [{"length": {"min_words": 5}},
                     {"pii": {"types": ["email", "credit_card", "secret", "secret_assignment"]}}],
    }
    cfg["data"]["prepared_dir"] = str(tmp_path / "prepared")
    path = write_config(tmp_path / "run.yaml", cfg)
    outputs = [cptkit("train", str(path)), cptkit("report", str(tmp_path / "run"))]
    assert all(o.returncode == 0 for o in outputs), outputs[-1].stderr[-2000:]

    manifest = json.loads((tmp_path / "prepared" / "domain" / "manifest.json").read_text())
    assert manifest["documents"]["read"] == 41 and manifest["bad_input"]["total"] == 1
    # Every document holds one email and two keys; every fourth one more email, two in four one more key.
    assert manifest["pii"]["secret"] == 80 + 20 and manifest["pii"]["email"] == 40 + 10

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "prepared" / "tokenizer")
    dtype = "uint16" if manifest["dtype"] == "uint16" else "uint32"
    searched = every_output(outputs, [tmp_path / "prepared", tmp_path / "run"], tokenizer, dtype)
    assert any("dropped.jsonl" in name for name in searched), "the dropped documents were not searched"
    assert any(name.endswith(".bin") for name in searched), "the token shards were not searched"
    leaks = [(name, s) for name, text in searched.items() for s in SECRETS if s in text]
    assert not leaks, f"secrets found in outputs: {leaks[:5]}"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trust_remote_code"] is False
    assert "trust_remote_code off" in (tmp_path / "run" / "report.html").read_text()
    # The scrubbed text is what was trained on: the placeholders are there instead.
    assert any("<SECRET>" in text for name, text in searched.items() if "curated" in name)


@pytest.mark.parametrize("damage", ["truncated", "missing", "pickle_only"])
def test_broken_or_unsafe_model_folders_are_refused(tmp_path, tiny_model, damage):
    import shutil

    from cptkit.config import ModelConfig
    from cptkit.errors import UserError
    from cptkit.modeling import load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "missing":
        weights.unlink()
    else:  # pytorch_model.bin is a pickle: loading it could run code, so it is not loaded
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(weights), folder / "pytorch_model.bin")
        weights.unlink()
    with pytest.raises(UserError) as err:
        load_model(ModelConfig(name_or_path=str(folder)))
    assert str(folder) in str(err.value)
