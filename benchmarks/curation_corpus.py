"""A deterministic PubMed-like corpus for curation tests and benchmarks (generated, never shipped).

Abstracts are assembled from sentence templates and a medical vocabulary, so they read as
English to the language model and pass the Gopher rules; a share of them carries what the
`medical` pipeline must handle: PubMed XML/HTML markup, personal data (emails, phone numbers,
record numbers), Korean abstracts, exact and near duplicates, and short or repetitive junk.
`expected` counts what was injected, so tests can check the pipeline against it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

CONDITIONS = ["chronic kidney disease", "type 2 diabetes", "heart failure", "asthma", "sepsis", "migraine",
              "rheumatoid arthritis", "hypertension", "atrial fibrillation", "pneumonia", "psoriasis",
              "major depression", "osteoporosis", "stroke", "hepatitis C", "anaemia", "obesity", "epilepsy"]
TREATMENTS = ["metformin", "a low-sodium diet", "early mobilisation", "inhaled corticosteroids", "statin therapy",
              "cognitive behavioural therapy", "a nurse-led follow-up programme", "vitamin D supplements",
              "anticoagulation", "physical training", "a mobile reminder service", "structured education"]
OUTCOMES = ["hospital admissions", "mortality", "quality of life", "blood pressure", "symptom scores",
            "length of stay", "readmission within thirty days", "kidney function", "pain scores", "adherence"]
DESIGNS = ["a randomised controlled trial", "a prospective cohort study", "a retrospective analysis",
           "a multicentre observational study", "a pragmatic trial", "a cross-sectional survey"]
SENTENCES = [
    "We evaluated whether {t} changes {o} in {n} adults with {c} treated at {sites} centres.",
    "{c} affects about {pct} percent of adults, and the effect of {t} on {o} has not been established.",
    "In {d} of {n} patients with {c} aged {age} to {age2} years, we compared {t} with usual care.",
    "The primary outcome was {o} at {m} months, and secondary outcomes included {o2} at {m2} months.",
    "Patients who received {t} had lower {o} than controls ({pct}.{k} versus {pct2}.{k2} percent, p = 0.0{k}).",
    "The effect was consistent across {groups} age groups and was larger in the {pct} percent with severe {c}.",
    "Adverse events occurred in {pct} of {n} patients and did not differ between the groups.",
    "These findings suggest that {t} may improve {o} for people with {c}, although trials longer than {m} months are needed.",
    "Our results support the use of {t} as part of routine care for {c} in {setting}.",
    "The association remained after adjustment for age, sex and baseline {o2} (hazard ratio 0.{k}{k2}).",
    "Follow-up was complete for {pct} percent of participants after a median of {m} months.",
    "Costs per patient were {cost} dollars lower with {t}, mainly through fewer {o}.",
]
SETTINGS = ["primary care", "hospital wards", "rural clinics", "outpatient services", "nursing homes",
            "emergency departments", "community pharmacies", "specialist centres"]
SECTIONS = ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"]
KOREAN = ["만성 신장 질환 환자에서 새로운 치료가 입원율을 낮추는지 평가하였다.",
          "연구 대상은 성인 환자였으며 주요 결과는 육 개월 후의 삶의 질이었다.",
          "치료군에서 대조군보다 증상 점수가 유의하게 낮았다.", "부작용은 드물었고 두 군 간에 차이가 없었다."]


@dataclass
class Expected:
    documents: int = 0
    html: int = 0
    korean: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    junk: int = 0
    pii: dict = field(default_factory=lambda: {"email": 0, "phone": 0, "patient_id": 0})


def abstract(rng: random.Random) -> str:
    fixed = {"c": rng.choice(CONDITIONS), "t": rng.choice(TREATMENTS), "o": rng.choice(OUTCOMES),
             "o2": rng.choice(OUTCOMES), "d": rng.choice(DESIGNS), "setting": rng.choice(SETTINGS)}

    def fill() -> dict:  # numbers drawn per sentence, as real abstracts report many
        return {**fixed, "n": rng.randint(40, 4000), "m": rng.choice([3, 6, 12, 24, 36]),
                "m2": rng.choice([3, 6, 12, 24, 36]), "k": rng.randint(1, 9), "k2": rng.randint(0, 9),
                "pct": rng.randint(2, 95), "pct2": rng.randint(2, 95), "age": rng.randint(18, 50),
                "age2": rng.randint(51, 90), "sites": rng.randint(2, 60), "groups": rng.randint(2, 6),
                "cost": rng.randint(50, 9000)}

    chosen = rng.sample(SENTENCES, rng.randint(6, 9))
    sentences = (sentence.format(**fill()) for sentence in chosen)
    return " ".join(x[0].upper() + x[1:] for x in sentences)


def with_pii(text: str, rng: random.Random, exp: Expected) -> str:
    kind = rng.choice(["email", "phone", "patient_id"])
    exp.pii[kind] += 1
    extra = {
        "email": f"Correspondence to dr.{rng.choice(['kim', 'lee', 'smith', 'garcia'])}{rng.randint(1, 99)}@hospital.example.org.",
        "phone": f"For enquiries call +1 (415) 555-{rng.randint(1000, 9999)}.",
        "patient_id": f"The index case (MRN: {rng.randint(10**7, 10**8 - 1)}) was excluded.",
    }[kind]
    return text + " " + extra


def as_html(text: str) -> str:
    sentences = text.split(". ")
    step = max(len(sentences) // 4, 1)
    chunks = [". ".join(sentences[i : i + step]) for i in range(0, len(sentences), step)][:4]
    return "".join(f'<AbstractText Label="{s}">{c.rstrip(".")}.</AbstractText>' for s, c in zip(SECTIONS, chunks))


def write_corpus(folder: Path, n_docs: int, seed: int = 0, files: int = 2) -> Expected:
    """`files` JSONL files of about n_docs abstracts in total; returns what was injected."""
    rng = random.Random(seed)
    exp = Expected()
    folder.mkdir(parents=True, exist_ok=True)
    history: list[str] = []
    handles = [open(folder / f"pubmed-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(files)]
    try:
        for i in range(n_docs):
            roll = rng.random()
            if roll < 0.03 and history:
                text = rng.choice(history)  # the same abstract indexed twice (maybe in another file)
                exp.exact_duplicates += 1
            elif roll < 0.06 and history:
                words = rng.choice(history).split(" ")
                words[rng.randrange(len(words))] = "notably"
                text = " ".join(words)
                exp.near_duplicates += 1
            elif roll < 0.08:
                text = " ".join(rng.sample(KOREAN, 4))
                exp.korean += 1
            elif roll < 0.10:
                text = rng.choice(["Abstract not available.", "Erratum. " * rng.randint(1, 3), "See comment."])
                exp.junk += 1
            else:
                text = abstract(rng)
                if rng.random() < 0.3:
                    text = with_pii(text, rng, exp)
                history.append(text)
                if rng.random() < 0.5:
                    text = as_html(text)
                    exp.html += 1
            handles[i % files].write(json.dumps({"pmid": str(10_000_000 + i), "abstract": text}, ensure_ascii=False) + "\n")
            exp.documents += 1
    finally:
        for fh in handles:
            fh.close()
    return exp
