"""`cptkit select` and `cptkit sweep` through the real command line, on the test corpora.

The first test runs the command in a new process; the others call the same entry point in this
process (exit status and printed output included) to spare an interpreter start per command.
"""

import json

from cptkit.cli import main
from tests.helpers import cptkit, make_config, read_jsonl, write_config


def _domain_with_a_bad_line(tmp_path, corpus):
    lines = corpus["code"].read_text(encoding="utf-8").splitlines()
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(lines[:5] + ["{not json"] + lines[5:]) + "\n", encoding="utf-8")
    return path, [json.loads(line) for line in lines]


def test_select_by_similarity_keeps_the_target_and_counts_bad_input(tmp_path, tiny_model, corpus):
    domain, docs = _domain_with_a_bad_line(tmp_path, corpus)
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs[7:9]))
    config = write_config(tmp_path / "c.yaml", make_config(tmp_path, tiny_model, {**corpus, "code": domain}))
    out = tmp_path / "sel" / "selected.jsonl"
    run = cptkit("select", str(config), "--fraction", "0.3", "--by", "similarity", "--similarity", "nearest",
                 "--target", str(target), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "select by similarity" in run.stdout
    kept = read_jsonl(out)
    ids = [k["id"] for k in kept]
    # A target document is its own nearest neighbour (cosine 1): those two come first.
    assert {docs[7]["id"], docs[8]["id"]} <= set(ids)
    by_id = {d["id"]: d["text"] for d in docs}
    assert all(by_id[k["id"]] == k["text"] for k in kept)
    manifest = json.loads((out.parent / "selection.json").read_text())
    assert manifest["documents"] == {"read": len(docs), "kept": len(kept), "unscorable": 0}
    assert manifest["bad_input"]["reasons"] == {"malformed_json": 1}
    assert manifest["bad_input"]["samples"]["malformed_json"][0].startswith(f"{domain}:6")
    kept_bytes = sum(len(k["text"].encode()) for k in kept)
    share = kept_bytes / sum(len(d["text"].encode()) for d in docs)
    assert manifest["kept_share"]["bytes"] == round(share, 6) and share >= 0.3
    assert manifest["scores"]["similarity"]["kept"]["max"] == 1.0


def test_select_and_sweep_mistakes_exit_2_naming_the_option(tmp_path, tiny_model, corpus, capsys):
    config = str(write_config(tmp_path / "c.yaml", make_config(tmp_path, tiny_model, corpus)))
    assert main(["select", config, "--fraction", "1.5", "--by", "similarity"]) == 2
    err = capsys.readouterr().err
    assert "--fraction: must lie in (0, 1], got 1.5" in err and "--target: --by similarity needs" in err
    assert main(["select", config, "--fraction", "0.5", "--by", "diversity", "--target", str(tmp_path / "no.jsonl")]) == 2
    assert f"--target: {tmp_path / 'no.jsonl'} is not a file" in capsys.readouterr().err
    assert main(["select", config, "--fraction", "0.5", "--by", "mix", "--weights", "novelty=x"]) == 2
    assert "--weights: expected method=number pairs, got 'novelty=x'" in capsys.readouterr().err
    assert main(["sweep", config, "--replay", "0.1,1.2", "--tokens", "1000,1000"]) == 2
    err = capsys.readouterr().err
    assert "--replay: ratios must lie in [0, 1), got [1.2]" in err and "--tokens: positive and different" in err
    assert main(["sweep", config, "--replay", "0,a", "--tokens", "1000"]) == 2
    assert "--replay: expected comma-separated numbers" in capsys.readouterr().err


def test_selected_file_trains_in_a_sweep_that_resumes(tmp_path, tiny_model, corpus, capsys):
    """select by mix (novelty under the model, diversity) -> data.domain of a 2-ratio sweep."""
    config = write_config(tmp_path / "c.yaml", make_config(tmp_path, tiny_model, corpus))
    selected = tmp_path / "sel" / "selected.jsonl"
    assert main(["select", str(config), "--fraction", "0.5", "--by", "mix", "--unit", "documents",
                 "--max-tokens", "64", "--out", str(selected)]) == 0
    manifest = json.loads((selected.parent / "selection.json").read_text())
    assert manifest["params"]["mix_weights"] == {"novelty": 1.0, "diversity": 1.0}
    assert manifest["documents"]["kept"] == len(read_jsonl(selected)) == -(-manifest["documents"]["read"] // 2)

    cfg = make_config(tmp_path, tiny_model, {**corpus, "code": selected},
                      train={"max_steps": None, "global_batch_tokens": 512, "micro_batch_size": 8},
                      checkpoint={"every_steps": 1000, "keep_last": 1, "keep_best": 0}, eval={"every_steps": 1000,
                      "max_tokens": 1000, "probes": {}})
    config = write_config(tmp_path / "sweep.yaml", cfg)
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", str(config), "--replay", "0,0.5", "--tokens", "1024", "--budget", "0.05", "--out", str(sweep_dir)]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    result = json.loads((sweep_dir / "sweep.json").read_text())
    assert [(r["replay"], r["tokens_trained"]) for r in result["runs"]] == [(0.0, 1024), (0.5, 1024)]
    for r in result["runs"]:
        summary = json.loads((sweep_dir / r["run"] / "summary.json").read_text())
        assert r["final"]["general_loss"] == summary["final"]["general_loss"]
        assert read_jsonl(sweep_dir / r["run"] / "eval.jsonl")[0]["step"] == 0
    assert result["fits"]["domain"]["why"].startswith("2 runs for 7 parameters")
    assert "replay-0_tokens-1024" in out and "replay-0.5_tokens-1024" in out and "measured" in out
    assert main(args) == 0
    assert all(r["reused"] for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"])
    assert capsys.readouterr().out.count("(reused)") == 2
