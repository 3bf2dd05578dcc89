"""The saved tokenizer is reused while its model folder, settings and library versions are
unchanged and its files still hash to the recorded fingerprint; anything else loads it again."""

import os
import shutil

import pytest

from cptkit.config import ModelConfig
from cptkit.data.prepare import save_tokenizer
from cptkit.data.tokenizer_stamp import folder_digest, reuse_or_save, stamp_path


class Saves:
    def __init__(self, cfg, folder):
        self.cfg, self.folder, self.calls = cfg, folder, 0

    def __call__(self):
        self.calls += 1
        return save_tokenizer(self.cfg, self.folder)


def _setup(tmp_path, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    from cptkit.config import load_config

    cfg = load_config(None, raw={"model": {"name_or_path": str(model)}, "data": {"domain": {"paths": ["x"]}},
                                 "output_dir": str(tmp_path / "run")}, check_paths=False)
    folder = tmp_path / "prepared" / "tokenizer"
    folder.parent.mkdir()
    return model, cfg, folder, Saves(cfg, folder)


def test_a_stamped_tokenizer_is_reused_without_loading_it(tmp_path, tiny_model):
    model, cfg, folder, save = _setup(tmp_path, tiny_model)
    first = reuse_or_save(cfg.model, folder, False, save)
    assert save.calls == 1 and stamp_path(folder).is_file()
    assert first[1] == folder_digest(folder)  # the fingerprint prepare's part keys carry
    again = reuse_or_save(cfg.model, folder, False, save)
    assert save.calls == 1 and again == first


@pytest.mark.parametrize("change", ["model_file", "saved_file", "force", "setting"])
def test_anything_that_could_change_the_tokenizer_loads_it_again(tmp_path, tiny_model, change):
    model, cfg, folder, save = _setup(tmp_path, tiny_model)
    reuse_or_save(cfg.model, folder, False, save)
    force, model_cfg = False, cfg.model
    if change == "model_file":
        path = model / "tokenizer_config.json"
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    elif change == "saved_file":
        (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text() + " ")
    elif change == "force":
        force = True
    else:
        model_cfg = ModelConfig(name_or_path=str(model), revision="other")
    reuse_or_save(model_cfg, folder, force, save)
    assert save.calls == 2


def test_a_hub_id_is_always_loaded_and_never_stamped(tmp_path):
    folder = tmp_path / "tokenizer"
    calls = []

    def save():
        calls.append(1)
        folder.mkdir(exist_ok=True)
        from cptkit.data.tokenize import TokenizerSpec

        return TokenizerSpec(str(folder), 1, 2, True), "d", 10

    cfg = ModelConfig(name_or_path="some-org/some-model")
    reuse_or_save(cfg, folder, False, save)
    reuse_or_save(cfg, folder, False, save)
    assert len(calls) == 2 and not stamp_path(folder).exists()
