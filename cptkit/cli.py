"""The `cptkit` command: one function per subcommand.

Exit status: 0 success; 2 a mistake in the config or the input (one message naming the key or the
file and line, no traceback); 1 anything unexpected (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from cptkit.errors import RunFailure, UserError

log = logging.getLogger("cptkit")


def _config(args: argparse.Namespace):
    from cptkit.config import load_config

    return load_config(args.config, args.set)


def cmd_prepare(args: argparse.Namespace) -> int:
    from cptkit.data.prepare import prepare
    from cptkit.report.tables import prepare_table

    cfg = _config(args)
    manifests = prepare(cfg, force=args.force)
    print(prepare_table(manifests))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from cptkit.data.manifest import read_manifest
    from cptkit.data.prepare import source_plans
    from cptkit.distributed import launched_world_size
    from cptkit.planning import describe, make_plan

    cfg = _config(args)
    manifests = {p.name: read_manifest(cfg.prepared_dir / p.name) for p in source_plans(cfg)}
    known = manifests if all(manifests.values()) else None
    world = args.processes or launched_world_size()
    plan = make_plan(cfg, known, world)
    print(describe(plan, cfg))
    from cptkit.peft.memory import plan_section

    print("\n".join(["", *plan_section(cfg)]))
    if args.plot and plan.total_steps:
        from cptkit.planning import plot_plan

        plot_plan(plan, Path(args.plot))
        print(f"\nwrote {args.plot}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cptkit.report.tables import before_after_table
    from cptkit.train.loop import train

    cfg = _config(args)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(before_after_table(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cptkit.evaluation.run import evaluate_checkpoint

    cfg = _config(args)
    results = evaluate_checkpoint(cfg, Path(args.checkpoint), harness=args.harness, harness_limit=args.harness_limit)
    # Per-probe results go to the evals/ file only; the console gets the aggregates.
    print(json.dumps({k: v for k, v in results.items() if k != "probe_results"}, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cptkit.report.render import write_report

    path = write_report([Path(d) for d in args.run_dirs], out=Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from cptkit.select.run import SelectOptions, parse_weights, select, table

    cfg = _config(args)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "selection" / "selected.jsonl"
    options = SelectOptions(
        fraction=args.fraction, by=args.by, out=out, target=Path(args.target) if args.target else None,
        unit=args.unit, similarity=args.similarity, weights=parse_weights(args.weights),
        batch_size=args.batch_size, max_tokens=args.max_tokens, window=args.window, seed=args.seed,
    )
    print(table(select(cfg, options, config_path=args.config)))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cptkit.config import load_raw
    from cptkit.sweep import SweepOptions, parse_numbers, sweep, table

    cfg = _config(args)
    options = SweepOptions(
        replay=parse_numbers(args.replay, "--replay"), tokens=[int(t) for t in parse_numbers(args.tokens, "--tokens")],
        budget=args.budget, out=Path(args.out) if args.out else Path(cfg.output_dir) / "sweep",
    )
    print(table(sweep(load_raw(args.config), options, overrides=args.set, config_path=args.config)))
    return 0


def cmd_vocab(args: argparse.Namespace) -> int:
    from cptkit.schema import INVALID, parse, to_dict
    from cptkit.vocab.config import VocabConfig
    from cptkit.vocab.measure import table
    from cptkit.vocab.run import expand_vocabulary

    cfg = _config(args)
    # A `vocab:` config section, once the run config has one, gives the defaults; flags override them.
    section = getattr(cfg, "vocab", None)
    given = to_dict(section) if section is not None else {}
    given.update({k: getattr(args, k) for k in ("pad_to_multiple_of", "candidates", "min_count", "max_general_ratio",
                                                "sample_bytes", "rescale_norm") if getattr(args, k) is not None})
    problems: list[str] = []
    options = parse(VocabConfig, given, "vocab", problems)
    if options is INVALID or problems:
        raise UserError("cptkit vocab: bad options:", [p.replace("vocab.", "--").replace("_", "-") for p in problems])
    language = args.language or getattr(cfg.domain_sources[0], "language", None) or "en"
    language = language[0] if isinstance(language, list) else language
    record = expand_vocabulary(cfg, args.add, Path(args.out) if args.out else None, options, language)
    print(table(record))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cptkit.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def with_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the run's YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set train.lr=2e-5 (repeatable)")


def _core_commands(sub) -> None:
    """`cptkit demo, prepare, plan, train`."""
    p = sub.add_parser("demo", help="offline end-to-end run on CPU: base model, CPT, eval, report")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a smaller version that finishes in about a minute")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("prepare", help="raw documents to curated, tokenized, packed shards")
    with_config(p)
    p.add_argument("--force", action="store_true", help="prepare again even if the shards are up to date")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("plan", help="dry run: budget, steps, LR curve and mix; trains nothing")
    with_config(p)
    p.add_argument("--processes", type=int, default=0, help="plan for this many processes (default: this launch's)")
    p.add_argument("--plot", metavar="PNG", help="also draw the LR curve and the mix schedule to this PNG file")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("train", help="continued pre-training (prepares data first when needed)")
    with_config(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the run in output_dir from its newest checkpoint (or the one named)")
    p.set_defaults(func=cmd_train)


def _eval_command(sub) -> None:
    """`cptkit eval`."""
    p = sub.add_parser("eval", help="perplexity and bits-per-byte of a model folder or checkpoint")
    with_config(p)
    p.add_argument("--checkpoint", required=True, help="a model folder (best/, final/) or checkpoints/step-N")
    p.add_argument("--harness", metavar="TASKS",
                   help="also run lm-evaluation-harness tasks: comma-separated task YAML files, folders of "
                        "them, or task names (needs cptkit[harness]); results merged into summary.json")
    p.add_argument("--harness-limit", type=int, default=None, metavar="N",
                   help="score at most N documents per harness task (a quick look, not a result)")
    p.set_defaults(func=cmd_eval)


def _select_command(sub) -> None:
    """`cptkit select`."""
    p = sub.add_parser("select", help="keep a fraction of the domain corpus chosen by similarity, novelty, diversity")
    with_config(p)
    p.add_argument("--fraction", type=float, required=True, help="share of the domain corpus to keep, in (0, 1]")
    p.add_argument("--by", required=True, choices=["similarity", "novelty", "diversity", "mix", "random"],
                   help="similarity: TF-IDF cosine to --target; novelty: base-model ln perplexity; diversity: "
                        "windowed word entropy; mix: weighted percentile ranks of those; random: a baseline")
    p.add_argument("--target", help="JSONL sample of the text to be similar to (same text field as data.domain)")
    p.add_argument("--out", help="output JSONL (default OUTPUT_DIR/selection/selected.jsonl); selection.json beside it")
    p.add_argument("--unit", default="bytes", choices=["bytes", "documents"],
                   help="--fraction is a share of the text's UTF-8 bytes (default) or of the documents")
    p.add_argument("--similarity", default="centroid", choices=["centroid", "nearest"],
                   help="cosine to the target centroid (default) or to the nearest target document")
    p.add_argument("--weights", help="mix only: e.g. similarity=0.5,novelty=0.25,diversity=0.25 (default equal; "
                                     "similarity only with --target)")
    p.add_argument("--batch-size", type=int, default=16, help="novelty: documents per forward (default 16)")
    p.add_argument("--max-tokens", type=int, default=512, help="novelty: tokens scored per document (default 512)")
    p.add_argument("--window", type=int, default=256, help="diversity: words per entropy window (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random: the seed (default 0)")
    p.set_defaults(func=cmd_select)


def _sweep_command(sub) -> None:
    """`cptkit sweep`."""
    p = sub.add_parser("sweep", help="proxy runs over replay ratios and token counts; fit the D-CPT law; recommend")
    with_config(p)
    p.add_argument("--replay", required=True, help="replay ratios to run, e.g. 0,0.05,0.25,0.5")
    p.add_argument("--tokens", required=True, help="training tokens per proxy run, e.g. 200000,400000")
    p.add_argument("--budget", type=float, default=0.05,
                   help="largest allowed relative rise of general perplexity over the base model (default 0.05)")
    p.add_argument("--out", help="sweep folder (default OUTPUT_DIR/sweep); finished runs in it are reused")
    p.set_defaults(func=cmd_sweep)


def _vocab_command(sub) -> None:
    """`cptkit vocab`."""
    p = sub.add_parser("vocab", help="add up to N tokens learned from the domain corpus; write a model folder")
    with_config(p)
    p.add_argument("--add", type=int, required=True, metavar="N", help="the most new tokens to add")
    p.add_argument("--out", help="the model folder to write (default OUTPUT_DIR/vocab); use it as model.name_or_path")
    p.add_argument("--language", help="ISO 639-1 code of the domain text, recorded in vocab.json "
                                      "(default: data.domain's language, else en)")
    p.add_argument("--pad-to-multiple-of", type=int, help="round the embedding rows up to a multiple of this (default 64)")
    p.add_argument("--candidates", type=int, help="tokens in the domain tokenizer that proposes candidates "
                                                  "(default 3 x --add, at least 8000)")
    p.add_argument("--min-count", type=int, help="a new token must save at least this many domain tokens (default 3)")
    p.add_argument("--max-general-ratio", type=float,
                   help="refuse tokens used more than this times as often per byte of general text as of domain "
                        "text (default 0.25)")
    p.add_argument("--sample-bytes", type=int, help="bytes of curated text read per role (default 33554432)")
    p.add_argument("--rescale-norm", action="store_true", default=None,
                   help="scale new embedding rows to the mean norm of the existing rows")
    p.set_defaults(func=cmd_vocab)


def _report_command(sub) -> None:
    """`cptkit report`."""
    p = sub.add_parser("report", help="report.html for one run, or a comparison of several")
    p.add_argument("run_dirs", nargs="+", help="run folders")
    p.add_argument("--out", help="where to write the report (default RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cptkit", description="Continued pre-training of causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_core_commands, _eval_command, _select_command, _sweep_command, _vocab_command, _report_command):
        add(sub)
    return parser


def setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("transformers", "accelerate", "datasets", "urllib3", "filelock", "httpx", "peft", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # transformers' own progress bars (loading and writing weights) would interleave with ours.
    # Both settings are read when transformers is first imported; importing it here just to
    # set them would cost every command a second or more, plan and report included.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # imported already (cptkit used as a library): set them now
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except UserError as exc:
        print(f"cptkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RunFailure as exc:
        print(f"cptkit {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cptkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
