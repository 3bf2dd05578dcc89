"""What a checkpoint folder may contain before it is loaded."""

import json
import os

import pytest
import torch

from cptkit import checkpoint
from cptkit.errors import UserError


class CallsAFunction:
    def __reduce__(self):
        return os.getcwd, ()


def test_a_checkpoint_whose_optimizer_state_holds_objects_is_refused(tmp_path):
    folder = checkpoint.save_state(tmp_path, 1, {"w": torch.zeros(2)}, {"state": {}}, {"step": 1})
    # Unpickling this would call a function of the file's choosing: weights_only refuses it.
    torch.save({"state": {}, "hook": CallsAFunction()}, folder / "optimizer.pt")
    marker = json.loads((folder / checkpoint.COMMIT).read_text())
    marker["files"]["optimizer.pt"] = (folder / "optimizer.pt").stat().st_size
    (folder / checkpoint.COMMIT).write_text(json.dumps(marker))
    with pytest.raises(UserError, match="optimizer.pt: not a plain optimizer state"):
        checkpoint.load_state(folder)
