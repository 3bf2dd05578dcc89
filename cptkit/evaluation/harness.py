"""lm-evaluation-harness tasks on a checkpoint: `cptkit eval CONFIG --checkpoint DIR --harness TASKS`.

TASKS is a comma-separated list. Each item is either a task YAML file, a folder of task YAML
files (every task in it runs), or the name of a task lm-eval knows (its own, or one defined in a
folder named in the same list). Everything runs offline: a local task reads its documents with
`dataset_path: json` and `dataset_kwargs: {data_files: ...}`; a built-in task whose data is not
on this machine fails with a message naming it.

The model is the one `cptkit eval` already loaded, handed to lm-eval's Hugging Face wrapper
with its tokenizer, so a resumable state (checkpoints/step-N) is evaluated as well as a model
folder. The context length is data.seq_len, the length the run trained and evaluated at, so
`loglikelihood_rolling` tasks cut documents into the same window length as cptkit's own
perplexity. (They still differ in one way: cptkit scores [start] + text + EOS, lm-eval scores
the text after a start token and not the EOS; see the README for the measured difference.)

lm-eval is an optional dependency: `pip install cptkit[harness]`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from cptkit.errors import UserError

log = logging.getLogger("cptkit")


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads lm-eval task files, whose `!function module.name` tags plain YAML does not know."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def write_rolling_bpb_task(folder: Path, name: str, jsonl: Path) -> Path:
    """Write a local task scoring the `text` of each line of `jsonl` with loglikelihood_rolling
    bits per byte: the lm-eval counterpart of cptkit's own bits per byte on that text."""
    task = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(jsonl)}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "bits_per_byte"}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task, sort_keys=False))
    return path


def _task_names_in(path: Path) -> list[str]:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)  # noqa: S506 (safe loader subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"--harness {path}: not a valid task YAML ({exc})") from None
    if not isinstance(doc, dict):
        return []
    names = doc.get("task") or doc.get("group")
    if isinstance(names, str):
        return [names]
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def parse_tasks(spec: str) -> tuple[list[str], list[Path]]:
    """(task names, folders to index) from the --harness argument."""
    names: list[str] = []
    folders: list[Path] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        path = Path(item).expanduser()
        if path.is_file():
            folders.append(path.parent)
            found = _task_names_in(path)
            if not found:
                raise UserError(f"--harness {path}: no 'task:' in this YAML file")
            names += found
        elif path.is_dir():
            folders.append(path)
            found = [n for f in sorted(path.rglob("*.yaml")) for n in _task_names_in(f)]
            if not found:
                raise UserError(f"--harness {path}: no task YAML (with a 'task:' key) in this folder")
            names += found
        elif "/" in item or item.endswith((".yaml", ".yml")):
            raise UserError(f"--harness {item}: no such file or folder")
        else:
            names.append(item)
    if not names:
        raise UserError("--harness: name at least one task, task YAML file or folder of task YAML files")
    return list(dict.fromkeys(names)), list(dict.fromkeys(folders))


def _flatten(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}}; lm-eval's 'metric,filter' keys lose the default ',none' filter."""
    out = {}
    for task, metrics in results.items():
        row = {}
        for key, value in metrics.items():
            if key in ("alias", "name", "sample_len") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, _, filt = key.partition(",")
            row[metric if filt in ("", "none") else key] = float(value)
        out[task] = row
    return out


def run_harness(lm, tokenizer, spec: str, max_length: int, batch_size: int, device, limit: int | None = None) -> dict:
    """Run the tasks on an already loaded model; {"tasks": {task: {metric: value}}, ...}."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--harness needs lm-evaluation-harness: pip install 'cptkit[harness]'") from None
    names, folders = parse_tasks(spec)
    local_only = all(any(n in _names_under(f) for f in folders) for n in names)
    manager = TaskManager(include_path=[str(f) for f in folders] or None, include_defaults=not local_only)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UserError(f"--harness: unknown task(s) {', '.join(unknown)}; give a task YAML file or folder, "
                        "or a task name lm-eval knows")
    model = HFLM(pretrained=lm, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length, device=str(device))
    log.info("lm-eval %s: %s (context %d tokens)", lm_eval.__version__, ", ".join(names), max_length)
    try:
        out = lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, limit=limit,
                                      log_samples=False, verbosity="ERROR")
    except (ConnectionError, FileNotFoundError) as exc:
        raise UserError(f"--harness {', '.join(names)}: a task's data is not on this machine and cannot be "
                        f"downloaded offline ({str(exc).splitlines()[0][:300]})") from None
    return {
        "tasks": _flatten(out["results"]),
        "samples": {t: int(v.get("effective", v.get("original", 0))) if isinstance(v, dict) else int(v)
                    for t, v in out.get("n-samples", {}).items()},
        "max_length": max_length,
        "lm_eval_version": lm_eval.__version__,
    }


def _names_under(folder: Path) -> set[str]:
    return {n for f in folder.rglob("*.yaml") for n in _task_names_in(f)}
