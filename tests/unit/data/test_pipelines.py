"""Pipelines: recipes and step lists parse with dotted-path errors; each named recipe on documents."""

import pytest

from cptkit.config import load_config
from cptkit.data.documents import Document
from cptkit.data.pipelines import RECIPES, build_steps, parse_pipeline
from cptkit.data.steps import StepStats, run_steps
from cptkit.errors import UserError

ABSTRACT = (
    "<AbstractText Label=\"BACKGROUND\">Chronic kidney disease affects many adults and the rate of decline "
    "in kidney function varies widely between patients.</AbstractText><AbstractText Label=\"METHODS\">We "
    "followed 412 patients (MRN: 20231234 was the first enrolled) for five years and measured the rate of "
    "decline in filtration at each visit; contact the study office at kidney.study@example.org.</AbstractText>"
    "<AbstractText Label=\"RESULTS\">Patients who received the new treatment had a slower decline than those "
    "in the control group, and the effect was consistent across age groups and with the baseline values. "
    "The difference between the groups grew with every year of treatment."
    "</AbstractText><AbstractText Label=\"CONCLUSIONS\">Early treatment may delay the need for dialysis in "
    "this population, although trials with a longer follow-up are needed to confirm it.</AbstractText>"
)
KOREAN = ("만성 신장 질환은 많은 성인에게 영향을 미치며 신장 기능의 감소 속도는 환자마다 크게 다르다. " * 4).strip()
PYTHON = '''"""Read settings."""

import os

API_TOKEN = "sk-abcdefghijklmnopqrstuvwxyz0123"


def load(path):
    # Return the settings file's lines.
    with open(path) as fh:
        return fh.read().splitlines()
'''


def run(recipe, docs):
    problems = []
    specs = parse_pipeline(recipe, "p", problems)
    assert not problems
    steps = build_steps(specs, None)
    stats = {s.name: StepStats(s.name) for s in steps}
    drops = []
    kept = run_steps(steps, docs, stats, lambda d, step, reason: drops.append((d.id, step, reason)))
    return kept, drops, stats


def test_every_recipe_parses():
    for name in RECIPES:
        problems = []
        specs = parse_pipeline(name, "p", problems)
        assert not problems, (name, problems)
        assert [s.name for s in specs][-2:] == (["decontaminate", "dedup"] if name != "none" else [])


def test_medical_recipe():
    docs = [Document("abstract", ABSTRACT), Document("korean", KOREAN), Document("short", "<p>Too short.</p>")]
    kept, drops, stats = run("medical", docs)
    assert [d.id for d in kept] == ["abstract"]
    assert ("korean", "language", "language_ko") in drops and ("short", "length", "too_few_words") in drops
    text = kept[0].text
    assert "<AbstractText" not in text and text.count("\n\n") == 3
    assert "MRN: <PATIENT_ID>" in text and "<EMAIL>" in text and "20231234" not in text
    assert stats["pii"].counts == {"patient_id": 1, "email": 1}


def test_code_recipe():
    broken = "# settings\ndef load(:\n    pass\n"
    kept, drops, stats = run("code", [Document("ok", PYTHON), Document("broken", broken)])
    assert [d.id for d in kept] == ["ok"] and drops == [("broken", "code", "python_syntax_error")]
    assert '    with open(path) as fh:\n        return' in kept[0].text  # indentation intact
    assert 'API_TOKEN = "<SECRET>"' in kept[0].text and stats["pii"].counts == {"secret": 1}


def test_web_recipe():
    page = ("<html><body><nav>Home | About</nav><p>" + ABSTRACT.replace("AbstractText", "p") +
            "</p><footer>This site uses cookies. Read our privacy policy.</footer></body></html>")
    spam = "<p>" + "Buy now! Best price! " * 40 + "</p>"
    kept, drops, _ = run("web", [Document("page", page), Document("spam", spam)])
    assert [d.id for d in kept] == ["page"]
    assert "cookies" not in kept[0].text and "The difference between the groups grew" in kept[0].text
    assert drops[0][:2] == ("spam", "gopher_repetition")


def test_none_recipe_has_no_steps():
    kept, drops, stats = run("none", [Document("a", "anything <b>at all</b>")])
    assert kept[0].text == "anything <b>at all</b>" and not drops and not stats


def test_config_reports_pipeline_problems_with_dotted_paths():
    raw = {
        "model": {"name_or_path": "m"}, "output_dir": "o",
        "data": {
            "domain": [
                {"paths": ["a"], "pipeline": "medicla"},
                {"paths": ["b"], "pipeline": ["clean", {"language": {"min_score": "high"}}, "spellcheck"]},
                {"paths": ["c"], "pipeline": ["dedup", "clean", "clean"]},
            ],
            "general": {"dataset": {"path": "x"}, "paths": ["y"]},
        },
    }
    with pytest.raises(UserError) as err:
        load_config(None, raw=raw, check_paths=False)
    text = str(err.value)
    for expected in (
        "data.domain[0].pipeline: unknown pipeline 'medicla'",
        "data.domain[1].pipeline[1].language.min_score: must be a number, got string 'high'",
        "data.domain[1].pipeline[2]: unknown step 'spellcheck'",
        "data.domain[2].pipeline[1]: 'clean' comes after a corpus-wide step",
        "data.domain[2].pipeline[2]: step 'clean' is listed twice",
        "data.general: give paths or dataset, not both",
    ):
        assert expected in text, (expected, text)
