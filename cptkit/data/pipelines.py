"""Curation pipelines: the steps a source's documents pass through, and the named recipes.

A source picks a recipe by name (`pipeline: medical`) or lists its steps, each a name or a
one-key mapping of name to parameters:

    pipeline:
      - clean: {whitespace: code}
      - code
      - pii: {types: [email, secret]}
      - dedup: {near: false}

Per-document steps (clean, pii, the filters) run in the worker processes in the order given.
The corpus-wide steps, `decontaminate` and `dedup`, need every document's signature and run
after all of them when the source is assembled; they must therefore be listed last.
Parameters are typed dataclasses, documented where declared, and parsed with the config's
own parser, so a wrong key or type is reported with its full dotted path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cptkit.data import clean, pii
from cptkit.data.dedup import DecontaminateParams, DedupParams
from cptkit.data.filters import code, gopher, language, length, perplexity, web
from cptkit.data.steps import Step
from cptkit.schema import INVALID, parse, to_dict


@dataclass(frozen=True)
class StepKind:
    params: type
    build: Callable[[Any, Any], Step] | None  # None: a corpus-wide step, applied at assembly
    check: Callable[[Any, str], list[str]] | None = None


STEPS: dict[str, StepKind] = {
    "clean": StepKind(clean.CleanParams, clean.build),
    "pii": StepKind(pii.PIIParams, pii.build, pii.check_params),
    "length": StepKind(length.LengthParams, length.build, length.check_params),
    "language": StepKind(language.LanguageParams, language.build, language.check_params),
    "gopher_quality": StepKind(gopher.GopherQualityParams, gopher.build_quality),
    "gopher_repetition": StepKind(gopher.GopherRepetitionParams, gopher.build_repetition, gopher.check_repetition),
    "c4": StepKind(web.C4Params, web.build_c4),
    "fineweb": StepKind(web.FineWebParams, web.build_fineweb),
    "code": StepKind(code.CodeParams, code.build),
    "perplexity": StepKind(perplexity.PerplexityParams, perplexity.build, perplexity.check_params),
    "decontaminate": StepKind(DecontaminateParams, None),
    "dedup": StepKind(DedupParams, None),
}
CORPUS_WIDE = ("decontaminate", "dedup")
# Step parameters that default to the source's `language` when left unset (None).
LANGUAGE_KEYS = ("language", "languages")

_CODE_PII = ["email", "ipv4", "ipv6", "secret", "secret_assignment", "private_key"]

# Named recipes. Each is a plain list in the same form a config would give.
RECIPES: dict[str, list[Any]] = {
    "none": [],
    # Web crawl text: FineWeb's order (language, Gopher, C4, FineWeb rules), PII last so the
    # filters see the text as written. Every step follows the source's `language`.
    "web": [
        "clean", "language", "gopher_repetition", "gopher_quality",
        {"c4": {"require_terminal_punctuation": False}}, "fineweb", "pii", "decontaminate", "dedup",
    ],
    # PubMed-style abstracts: markup removed, the source's language only, Gopher quality and
    # repetition, personal data of the source's locale plus patient and record numbers scrubbed,
    # decontaminated, deduplicated.
    "medical": [
        "clean", {"length": {"min_words": 20}}, "language", {"gopher_quality": {"min_words": 20}},
        "gopher_repetition", {"pii": {"add_types": ["patient_id"]}}, "decontaminate", "dedup",
    ],
    # Python source: indentation kept, BigCode rules and a parse check, secret-looking strings
    # scrubbed (no phone or card rules: numeric literals in code would trip them).
    "code": [
        {"clean": {"html": "never", "whitespace": "code"}}, {"code": {"language": "python"}},
        {"pii": {"types": _CODE_PII}}, "decontaminate", "dedup",
    ],
}


@dataclass(frozen=True)
class StepSpec:
    name: str
    params: Any

    def to_json(self) -> dict:
        return {self.name: to_dict(self.params)}


def parse_pipeline(value: Any, path: str, problems: list[str], language: list[str] | None = None) -> list[StepSpec]:
    """Specs of a recipe name or an explicit step list; problems are appended with their path.

    `language` is the source's language list: a step parameter left unset that means "the
    source's language" (`language`, or the language-id step's `languages`) is filled with it.
    """
    if isinstance(value, str):
        if value not in RECIPES:
            problems.append(f"{path}: unknown pipeline {value!r} (recipes: {', '.join(RECIPES)}; "
                            "or give a list of steps)")
            return []
        return parse_pipeline(RECIPES[value], path, problems, language)
    if not isinstance(value, list):
        problems.append(f"{path}: must be a recipe name or a list of steps")
        return []
    specs: list[StepSpec] = []
    for i, item in enumerate(value):
        spec = _parse_step(item, f"{path}[{i}]", problems, language)
        if spec is None:
            continue
        if any(s.name == spec.name for s in specs):
            problems.append(f"{path}[{i}]: step {spec.name!r} is listed twice")
        elif spec.name not in CORPUS_WIDE and any(s.name in CORPUS_WIDE for s in specs):
            problems.append(f"{path}[{i}]: {spec.name!r} comes after a corpus-wide step "
                            f"({', '.join(CORPUS_WIDE)} run last, over the whole corpus); list it before them")
        specs.append(spec)
    return specs


def _parse_step(item: Any, path: str, problems: list[str], language: list[str] | None) -> StepSpec | None:
    if isinstance(item, str):
        name, raw = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, raw = next(iter(item.items()))
        raw = {} if raw is None else raw
    else:
        problems.append(f"{path}: a step is a name or a one-key mapping {{name: {{parameters}}}}")
        return None
    kind = STEPS.get(name)
    if kind is None:
        problems.append(f"{path}: unknown step {name!r} (steps: {', '.join(STEPS)})")
        return None
    params = parse(kind.params, raw, f"{path}.{name}", problems)
    if params is INVALID:
        return None
    for key in LANGUAGE_KEYS:
        if language and getattr(params, key, ...) is None:
            setattr(params, key, list(language))
    if kind.check is not None:
        problems += kind.check(params, f"{path}.{name}")
    return StepSpec(name, params)


def document_steps(specs: list[StepSpec]) -> list[StepSpec]:
    return [s for s in specs if STEPS[s.name].build is not None]


def step_params(specs: list[StepSpec], name: str) -> Any | None:
    """The parameters of step `name` in the pipeline, or None when it is not there."""
    return next((s.params for s in specs if s.name == name), None)


def build_steps(specs: list[StepSpec], ctx: Any) -> list[Step]:
    return [STEPS[s.name].build(s.params, ctx) for s in document_steps(specs)]
