"""A real `cptkit train` feeds its trackers the same scalars as metrics.jsonl and eval.jsonl, with the
config as hyperparameters, and a killed and resumed run continues the same tracker run."""

import json

import pytest

from tests.helpers import cptkit, make_config, read_jsonl, write_config


@pytest.mark.slow
def test_tensorboard_and_mlflow_get_the_run_files_scalars_and_a_resume_continues_them(tmp_path, tiny_model,
                                                                                      corpus, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(tmp_path, tiny_model, corpus, train={"max_steps": 6},
                      checkpoint={"every_steps": 2, "keep_last": 3, "keep_best": 0}, eval={"every_steps": 2},
                      logging={"trackers": ["tensorboard", "mlflow"], "project": "cpt-test"})
    path = write_config(tmp_path / "run.yaml", cfg)
    monkeypatch.setenv("CPTKIT_CRASH_AT", "step:5")  # killed after step 5; the newest checkpoint is step 4
    assert cptkit("train", str(path)).returncode == -9
    monkeypatch.delenv("CPTKIT_CRASH_AT")
    resumed = cptkit("train", str(path), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = tmp_path / "run"
    metrics, evals = read_jsonl(run / "metrics.jsonl"), read_jsonl(run / "eval.jsonl")

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(loss) == [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # step 5 once, as rewritten
    assert all(loss[m["step"]] == pytest.approx(m["loss"], rel=1e-6) for m in metrics)
    ppl = {e.step: e.value for e in acc.Scalars("eval/domain_ppl")}
    assert ppl == pytest.approx({e["step"]: e["domain_ppl"] for e in evals}, rel=1e-6)
    assert "train/source_tokens/domain" in acc.Tags()["scalars"]

    ids = json.loads((run / "trackers.json").read_text())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store, as cptkit's backend sets it
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    mlflow_run = client.get_run(ids["mlflow"]["run_id"])  # one MLflow run across both processes
    assert mlflow_run.data.params["train.lr"] == str(cfg["train"]["lr"])
    history = client.get_metric_history(mlflow_run.info.run_id, "eval/domain_bpb")
    assert {h.step for h in history} == {e["step"] for e in evals}
    assert mlflow_run.info.status == "FINISHED"
