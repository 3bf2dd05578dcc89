"""The --harness argument: task files, folders and names."""

import pytest

from cptkit.errors import UserError
from cptkit.evaluation.harness import _flatten, parse_tasks


def test_files_folders_and_names(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "a.yaml").write_text("task: local_a\ndataset_path: json\nprocess_results: !function utils.f\n")
    (folder / "b.yaml").write_text("task: local_b\ndataset_path: json\n")
    (tmp_path / "c.yaml").write_text("task: local_c\n")
    names, folders = parse_tasks(f"{folder}, {tmp_path / 'c.yaml'},hellaswag")
    assert names == ["local_a", "local_b", "local_c", "hellaswag"]
    assert folders == [folder, tmp_path]


def test_mistakes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        parse_tasks(str(tmp_path / "missing.yaml"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no task YAML"):
        parse_tasks(str(tmp_path / "empty"))
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    with pytest.raises(UserError, match="not a valid task YAML"):
        parse_tasks(str(tmp_path / "bad.yaml"))
    with pytest.raises(UserError, match="name at least one task"):
        parse_tasks(" , ")


def test_results_flattened_without_default_filter():
    raw = {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "exact_match,strict-match": 0.25,
                 "bits_per_byte_stderr,none": "N/A"}}
    assert _flatten(raw) == {"t": {"acc": 0.5, "acc_stderr": 0.1, "exact_match,strict-match": 0.25}}
