"""Korean clinical-style text, generated (never shipped), for the vocabulary tests and benchmark.

Sentences are assembled from templates and a vocabulary of common Korean medical words; the
particles agree with the word before them (은/는, 이/가, 을/를, 과/와, 으로/로 by its final
consonant), so the text has the inflection pattern real Korean has: a few thousand frequent
word forms and a long tail of numbers, names and rarer compounds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NOUNS = ["환자", "의사", "간호사", "병원", "진료", "진단", "치료", "수술", "검사", "혈압", "혈당", "당뇨병", "고혈압",
         "심장", "폐렴", "감염", "염증", "통증", "발열", "두통", "기침", "호흡곤란", "약물", "처방", "부작용", "증상",
         "질환", "합병증", "회복", "입원", "외래", "응급실", "중환자실", "초음파", "혈액", "소변", "신장", "간기능",
         "관절", "골절", "재활", "항생제", "진통제", "인슐린", "백신", "보호자", "경과", "수치", "병력", "가족력",
         "흡연", "음주", "체중", "식이요법", "운동", "생활습관", "예방", "관리", "상담", "교육", "임상시험", "대상자",
         "효과", "안전성", "위험", "요인", "보건소", "천식", "빈혈", "우울증", "불면증", "골다공증", "뇌졸중", "심부전"]
SYMPTOMS = ["통증", "발열", "두통", "기침", "호흡곤란", "어지럼증", "구토", "설사", "피로감", "가슴 답답함", "복통",
            "부종", "발진", "식욕부진", "오한", "근육통"]
DISEASES = ["당뇨병", "고혈압", "폐렴", "천식", "빈혈", "우울증", "골다공증", "뇌졸중", "심부전", "만성 신장질환",
            "류마티스 관절염", "위염", "간염", "갑상선 기능저하증", "협심증", "패혈증"]
DRUGS = ["메트포르민", "아스피린", "인슐린", "항생제", "진통제", "이뇨제", "스테로이드", "항응고제", "철분제",
         "비타민 디", "항히스타민제", "제산제"]
EXAMS = ["혈액 검사", "소변 검사", "흉부 엑스선 검사", "초음파 검사", "심전도 검사", "내시경 검사", "컴퓨터 단층촬영"]
VALUES = ["혈당", "혈압", "염증 수치", "콜레스테롤", "헤모글로빈", "백혈구 수", "간 수치", "신장 기능"]
PLACES = ["응급실", "외래", "보건소", "내과", "가정의학과", "호흡기내과", "신경과", "정형외과"]
ADVICE = ["금연", "절주", "규칙적인 운동", "체중 감량", "저염식", "충분한 수면", "정기적인 검진", "약물 복용 관리"]
CHANGES = ["감소하였다", "증가하였다", "정상 범위로 회복되었다", "유지되었다", "악화되었다"]
ADJ = ["만성", "급성", "중증", "경증", "초기", "재발성"]
SURNAMES = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임"]
SYLLABLES = "가나다라마바사아자차카타파하민서준현우지수영호진성연희경미정태"


def _final(word: str) -> int | None:
    """The final consonant index (0: none) of the word's last Hangul syllable, None if not Hangul."""
    last = word.rstrip()[-1]
    code = ord(last) - 0xAC00
    return code % 28 if 0 <= code < 11172 else None


def josa(word: str, with_final: str, without: str) -> str:
    """The word with the particle form its final consonant calls for (으로/로: ㄹ takes 로)."""
    final = _final(word)
    if with_final == "으로" and final == 8:  # ㄹ
        return word + without
    return word + (with_final if final else without)


def sentence(rng: random.Random) -> str:
    c = rng.choice
    age, n = rng.randint(18, 89), rng.randint(20, 900)
    name = c(SURNAMES) + c(SYLLABLES) + c(SYLLABLES)
    templates = [
        lambda: f"{age}세 {c(['남자', '여자'])} 환자는 {josa(c(SYMPTOMS), '과', '와')} "
                f"{josa(c(SYMPTOMS), '을', '를')} 호소하며 {josa(c(PLACES), '을', '를')} 방문하였다.",
        lambda: f"{c(DISEASES)} 진단 후 {josa(c(DRUGS), '을', '를')} 하루 {rng.randint(1, 3)}회 "
                f"{rng.choice([5, 10, 20, 50, 100, 250, 500])}mg 투여하였다.",
        lambda: f"{c(EXAMS)} 결과 {josa(c(VALUES), '이', '가')} {c(CHANGES)}",
        lambda: f"{c(ADJ)} {josa(c(DISEASES), '은', '는')} {c(NOUNS)}의 주요 위험 요인으로 알려져 있다.",
        lambda: f"{n}명의 대상자 중 {rng.randint(1, n)}명에서 {josa(c(SYMPTOMS), '이', '가')} 관찰되었다.",
        lambda: f"{josa(name, '은', '는')} {rng.randint(2, 30)}일 후 증상이 호전되어 퇴원하였다.",
        lambda: f"{josa(c(ADVICE), '은', '는')} {c(DISEASES)} 환자의 {josa(c(NOUNS), '을', '를')} "
                f"개선하는 데 효과적이었다.",
        lambda: f"의료진은 {josa(c(ADVICE), '과', '와')} {josa(c(ADVICE), '을', '를')} 권고하였다.",
        lambda: f"{josa(c(NOUNS), '이', '가')} 있는 경우 {josa(c(EXAMS), '을', '를')} 먼저 시행하는 것이 좋다.",
        lambda: f"{c(DISEASES)} 환자에서 {c(DRUGS)}의 부작용은 {rng.randint(1, 40)}%로 보고되었다.",
    ]
    return c(templates)()


def document(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def write_korean(path: Path, docs: int, seed: int = 0, sentences: tuple[int, int] = (4, 12)) -> Path:
    """A JSONL file of `docs` generated Korean documents ({"id", "text"})."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(docs):
            text = document(rng, rng.randint(*sentences))
            fh.write(json.dumps({"id": f"ko-{seed}-{i}", "text": text}, ensure_ascii=False) + "\n")
    return path
