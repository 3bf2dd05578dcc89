"""Trackers get the run files' scalars and the config, and a resumed run continues the same tracker run.

Every tracker is the real library, offline: TensorBoard event files read back with TensorBoard's
own event accumulator, W&B in offline mode read back from its run files with W&B's inspector, and
MLflow to a local file store read back with the MLflow client.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from cptkit.errors import UserError
from cptkit.schema import parse
from cptkit.tracking import STATE_FILE, LoggingConfig, Trackers, scalars

CONFIG = {"model": {"name_or_path": "m", "dtype": "float32"}, "train": {"lr": 0.003, "betas": [0.9, 0.95]},
          "mix": {"weights": {"notes": 1}}, "data": {"prepared_dir": None}}


def step_record(step: int, loss: float) -> dict:
    return {"step": step, "tokens": 512 * step, "lr": 1e-3, "loss": loss, "loss_domain": loss + 0.1,
            "loss_replay": None, "grad_norm": float("nan"), "source_tokens": {"code": 384 * step, "general": 128 * step}}


def eval_record(step: int, ppl: float) -> dict:
    return {"step": step, "tokens": 512 * step, "domain_ppl": ppl, "domain_bpb": 1.5, "within_budget": True}


def run_once(run_dir, trackers: list[str], resume_step: int | None, steps, loss_of) -> Trackers:
    t = Trackers.open(LoggingConfig(trackers=trackers, project="proj"), run_dir, is_main=True,
                      resume_step=resume_step)
    t.log_params(CONFIG)
    for step in steps:
        t.log_step(step_record(step, loss_of(step)), step)
        if step % 2 == 0:
            t.log_eval(eval_record(step, 100.0 / step), step)
    return t


def test_scalars_flatten_nested_records_and_drop_what_is_not_a_finite_number():
    values = scalars({**step_record(3, 2.5), "spike": True, "skipped": "non-finite loss"}, "train/")
    assert values == {"train/tokens": 1536.0, "train/lr": 1e-3, "train/loss": 2.5, "train/loss_domain": 2.6,
                      "train/source_tokens/code": 1152.0, "train/source_tokens/general": 384.0, "train/spike": 1.0}


def test_tensorboard_event_files_hold_every_scalar_and_a_resume_hides_the_crashed_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_once(tmp_path, ["tensorboard"], None, range(1, 5), lambda s: 3.0 - 0.1 * s).close()
    # The process died after step 4 but its newest checkpoint is step 2: the resumed run redoes 3 and 4.
    resumed = run_once(tmp_path, ["tensorboard"], 2, range(3, 6), lambda s: 10.0 + s)
    resumed.log_event("rollback", {"at_step": 5, "to_step": 4, "rise": 0.07}, 5)
    resumed.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    loss = [(e.step, round(e.value, 5)) for e in acc.Scalars("train/loss")]
    assert loss == [(1, 2.9), (2, 2.8), (3, 13.0), (4, 14.0), (5, 15.0)]
    assert [(e.step, e.value) for e in acc.Scalars("train/source_tokens/code")][-1] == (5, 1920.0)
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("eval/domain_ppl")] == [(2, 50.0), (4, 25.0)]
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("events/rollback/rise")] == [(5, 0.07)]
    assert "train/grad_norm" not in acc.Tags()["scalars"]  # NaN is left out, as metrics.jsonl writes null
    assert json.loads((tmp_path / STATE_FILE).read_text())["tensorboard"]["dir"] == str(tmp_path / "tensorboard")


def _wandb_records(path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_holds_config_and_history_and_a_resume_continues_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_once(tmp_path, ["wandb"], None, range(1, 3), lambda s: 3.0 - 0.1 * s).close()
    run_id = json.loads((tmp_path / STATE_FILE).read_text())["wandb"]["id"]
    run_once(tmp_path, ["wandb"], 2, range(3, 4), lambda s: 2.0).close(failed=True)
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{run_id}.wandb" for f in files)  # one run, two sessions
    first, second = (_wandb_records(f) for f in files)
    run = next(r["run"] for r in first if r["type"] == "run")
    assert run["run_id"] == run_id and run["project"] == "proj" and run["display_name"] == tmp_path.name
    config = next(r["config"]["update"] for r in first if r["type"] == "config" and "train" in r["config"]["update"])
    assert config["train"] == {"lr": 0.003, "betas": [0.9, 0.95]}
    history = [r["history"]["item"] for r in first + second if r["type"] == "history"]
    losses = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert losses == [(1, 2.9), (2, 2.8), (3, 2.0)]
    assert [(h["step"], h["eval/domain_ppl"]) for h in history if "eval/domain_ppl" in h] == [(2, 50.0)]
    assert history[0]["train/source_tokens/general"] == 128
    assert next(r["exit"] for r in second if r["type"] == "exit").get("exit_code") == 1


def test_mlflow_file_store_holds_params_and_metrics_and_a_resume_continues_the_same_run(tmp_path):
    from mlflow.tracking import MlflowClient

    run_once(tmp_path, ["mlflow"], None, range(1, 5), lambda s: 3.0 - 0.1 * s).close()
    state = json.loads((tmp_path / STATE_FILE).read_text())["mlflow"]
    resumed = run_once(tmp_path, ["mlflow"], 4, range(5, 7), lambda s: 2.0)
    resumed.log_event("stop", {"reason": "over budget"}, 6)
    resumed.close()
    assert json.loads((tmp_path / STATE_FILE).read_text())["mlflow"] == state
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    assert state["tracking_uri"] == (tmp_path / "mlruns").resolve().as_uri()
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.params["train.lr"] == "0.003" and run.data.params["train.betas"] == "[0.9, 0.95]"
    assert run.data.params["data.prepared_dir"] == "null"
    history = sorted((m.step, round(m.value, 5)) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert history == [(1, 2.9), (2, 2.8), (3, 2.7), (4, 2.6), (5, 2.0), (6, 2.0)]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/source_tokens/code")][-1] == 2304.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "events/stop")] == [6]
    assert client.get_experiment(run.info.experiment_id).name == "proj"


def test_only_the_main_process_opens_trackers(tmp_path):
    t = Trackers.open(LoggingConfig(trackers=["tensorboard", "mlflow"]), tmp_path, is_main=False, resume_step=None)
    t.log_step(step_record(1, 2.0), 1)
    t.close()
    assert t.backends == [] and list(tmp_path.iterdir()) == []


def test_a_missing_tracker_package_is_a_user_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(UserError, match=r"wandb is not installed; pip install 'cptkit\[wandb\]'"):
        Trackers.open(LoggingConfig(trackers=["wandb"]), tmp_path, is_main=True, resume_step=None)


def test_a_tracker_failing_mid_run_is_reported_once_and_turned_off(caplog):
    class Broken:
        name = "broken"
        calls = 0

        def scalars(self, values, step):
            Broken.calls += 1
            raise ConnectionError("server went away")

    t = Trackers([Broken()])
    with caplog.at_level(logging.WARNING, logger="cptkit"):
        t.log_step(step_record(1, 2.0), 1)
        t.log_step(step_record(2, 2.0), 2)
    assert Broken.calls == 1 and t.backends == []
    assert "tracker broken failed (ConnectionError: server went away)" in caplog.text


def test_the_logging_section_parses_and_rejects_an_unknown_tracker():
    problems: list[str] = []
    cfg = parse(LoggingConfig, {"trackers": ["tensorboard", "mlflow"], "run_name": "r1"}, "logging", problems)
    assert problems == [] and cfg.trackers == ["tensorboard", "mlflow"] and cfg.project == "cptkit"
    parse(LoggingConfig, {"trackers": ["comet"]}, "logging", problems)
    assert len(problems) == 1 and problems[0].startswith("logging.trackers")
