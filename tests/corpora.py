"""Corpora the tests write themselves: Korean medical and legal prose, Chinese, Japanese, English.

Documents are composed from sentence templates with their slots filled by a seeded generator,
so every call with the same seed gives the same documents, no two documents are near
duplicates (each draws its own sentences and fillers), and nothing is downloaded. The Korean
documents read like case reports, study abstracts, statutes and bills; `korean_pii_document`
is one full of Korean personal data among ordinary numbers (dates, statute numbers, amounts).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

_KO_MEDICAL = [
    "{age}세 {sex} 환자가 {days}일 전부터 시작된 {symptom} 및 {symptom2}을 주소로 본원 {dept}에 내원하였다.",
    "과거력상 {history}으로 {years}년 전부터 {drug}을 복용 중이었으며 가족력에서 특이 사항은 없었다.",
    "내원 당시 활력 징후는 혈압 {bp}/{bp2} mmHg, 맥박 {pulse}회/분, 체온 {temp}°C였다.",
    "혈액 검사에서 백혈구 수치가 {wbc}/μL로 증가되어 있었고 C-반응 단백은 {crp} mg/dL이었다.",
    "흉부 방사선 검사에서 {side} 하엽에 경화 소견이 관찰되어 {disease}으로 진단하였다.",
    "환자는 {abx} 정맥 투여와 함께 수액 치료를 받았으며 {days}일 후 증상이 호전되어 퇴원하였다.",
    "이 연구는 {year}년부터 {year2}년까지 {hospital}에서 {disease}으로 치료받은 환자 {n}명을 대상으로 하였다.",
    "두 군 간의 {outcome} 차이는 통계적으로 유의하였다(p={p}).",
    "따라서 {disease} 환자에서 조기 {treatment}는 {outcome}을 개선할 수 있다.",
    "또한 고령 환자에서는 {complication}의 위험이 높기 때문에 주의 깊은 관찰이 필요하다.",
    "이러한 결과는 기존 연구와 일치하며 향후 대규모 전향적 연구를 통하여 확인이 필요하다.",
    "치료 기간 동안 {side_effect} 등의 부작용이 {small}명에서 발생하였으나 모두 경미하였다.",
    "추적 관찰 기간의 중앙값은 {months}개월이었고 이 기간 동안 재발은 {small}예에서 확인되었다.",
    "다변량 분석에서 {risk}은 {outcome}의 독립적인 위험 인자로 나타났다.",
    "{treatment}를 받은 군은 대조군에 비해 입원 기간이 평균 {days}일 짧았다.",
    "그 밖에 연령, 성별 및 동반 질환에 따른 하위군 분석에서도 비슷한 경향이 관찰되었다.",
    "본 증례는 {disease}의 비전형적인 임상 양상을 보여 주며 감별 진단에 도움이 될 수 있다.",
    "각 환자의 임상 자료는 전자 의무 기록을 통하여 후향적으로 수집하였다.",
    "연구 대상자 모두에게 서면 동의를 받았으며 연구는 기관 윤리 위원회의 승인을 받았다.",
    "{drug} 용량은 신기능에 따라 조절하였고 투약 중 특별한 이상 반응은 없었다.",
]
_KO_LEGAL = [
    "제{art}조({title}) 이 법은 {purpose}에 필요한 사항을 규정함을 목적으로 한다.",
    "{org}의 장은 제1항에 따른 {thing}을 위하여 필요한 경우 관계 기관에 자료의 제출을 요청할 수 있다.",
    "제{art2}조에 따라 요청을 받은 기관은 특별한 사유가 없으면 이에 따라야 한다.",
    "이 법에서 사용하는 용어의 뜻은 다음과 같으며 그 밖의 용어는 관계 법령에서 정하는 바에 따른다.",
    "{agency}은 {thing}에 관한 기본계획을 {years}년마다 수립하고 이를 시행하여야 한다.",
    "누구든지 정당한 사유 없이 {thing}을 제3자에게 제공하여서는 아니 된다.",
    "다음 각 호의 어느 하나에 해당하는 자는 {years}년 이하의 징역 또는 {money}만원 이하의 벌금에 처한다.",
    "이 법은 공포 후 {months}개월이 경과한 날부터 시행한다.",
    "그 밖에 {thing}의 절차 및 방법 등에 필요한 사항은 대통령령으로 정한다.",
    "국가와 지방자치단체는 {purpose}을 위하여 필요한 시책을 마련하고 이를 모두 공개하여야 한다.",
    "{agency}은 제{art}조에 따른 계획의 이행 상황을 매년 점검하고 그 결과를 국회에 보고하여야 한다.",
    "이 경우 {thing}의 범위와 기준은 관계 중앙행정기관의 장과 협의하여 정한다.",
    "위원회는 위원장 1명을 포함한 {members}명 이내의 위원으로 구성하며 위원의 임기는 {small}년으로 한다.",
    "제안 이유: 현행법은 {thing}에 관한 규정이 미비하여 국민의 권리 보호에 한계가 있다는 지적이 있다.",
    "이에 {purpose}을 위한 법적 근거를 마련하고 관련 절차를 정비하려는 것이다.",
    "주요 내용으로는 {agency}의 조사 권한을 명확히 하고 위반 시 과태료 부과 기준을 마련한다.",
    "이 법 시행 당시 종전의 규정에 따라 행한 처분은 이 법에 따라 행한 것으로 본다.",
    "법원은 {thing}과 관련된 분쟁에서 당사자의 신청이 있는 때에는 조정을 권고할 수 있다.",
]
_KO_FILL = {
    "age": lambda r: str(r.randint(19, 88)), "sex": lambda r: r.choice(["남자", "여자"]),
    "days": lambda r: str(r.randint(2, 14)), "years": lambda r: str(r.randint(2, 15)),
    "symptom": lambda r: r.choice(["발열", "기침", "호흡곤란", "복통", "두통", "흉통", "어지럼증", "부종"]),
    "symptom2": lambda r: r.choice(["오한", "가래", "구토", "설사", "피로감", "체중 감소", "식욕 부진"]),
    "dept": lambda r: r.choice(["응급실", "호흡기내과", "소화기내과", "신경과", "순환기내과", "외래"]),
    "history": lambda r: r.choice(["고혈압", "당뇨병", "만성 신질환", "심방세동", "갑상선 기능 저하증"]),
    "drug": lambda r: r.choice(["메트포르민", "암로디핀", "와파린", "아스피린", "레보티록신", "아토르바스타틴"]),
    "bp": lambda r: str(r.randint(95, 165)), "bp2": lambda r: str(r.randint(55, 100)),
    "pulse": lambda r: str(r.randint(58, 120)), "temp": lambda r: f"{r.uniform(36.2, 39.8):.1f}",
    "wbc": lambda r: f"{r.randint(4, 22) * 1000:,}", "crp": lambda r: f"{r.uniform(0.3, 25):.1f}",
    "side": lambda r: r.choice(["우측", "좌측", "양측"]),
    "disease": lambda r: r.choice(["지역사회획득 폐렴", "급성 신우신염", "패혈증", "급성 담낭염", "뇌경색",
                                   "급성 심근경색", "만성 폐쇄성 폐질환", "제2형 당뇨병", "대상포진"]),
    "abx": lambda r: r.choice(["세프트리악손", "피페라실린-타조박탐", "레보플록사신", "반코마이신"]),
    "year": lambda r: str(r.randint(2008, 2015)), "year2": lambda r: str(r.randint(2017, 2023)),
    "hospital": lambda r: r.choice(["서울의 한 대학병원", "단일 3차 의료기관", "전국 12개 병원", "지역 거점 병원"]),
    "n": lambda r: str(r.randint(40, 2400)), "small": lambda r: str(r.randint(1, 9)),
    "outcome": lambda r: r.choice(["30일 사망률", "재입원율", "입원 기간", "중환자실 입실률", "합병증 발생률"]),
    "p": lambda r: f"0.0{r.randint(1, 4)}", "months": lambda r: str(r.randint(3, 48)),
    "treatment": lambda r: r.choice(["항생제 투여", "재활 치료", "혈전 용해 치료", "수술적 치료", "영양 지원"]),
    "complication": lambda r: r.choice(["낙상", "섬망", "욕창", "폐색전증", "급성 신손상"]),
    "side_effect": lambda r: r.choice(["오심", "발진", "간 효소 상승", "설사", "저혈압"]),
    "risk": lambda r: r.choice(["고령", "흡연", "저알부민혈증", "당뇨병", "신기능 저하"]),
    "art": lambda r: str(r.randint(1, 60)), "art2": lambda r: str(r.randint(2, 60)),
    "title": lambda r: r.choice(["목적", "정의", "기본계획", "자료의 제출", "위원회의 구성", "벌칙", "시행일"]),
    "purpose": lambda r: r.choice(["개인정보의 보호", "감염병의 예방과 관리", "환자의 안전 증진",
                                   "의료기관의 인증", "공공 데이터의 활용", "재난 대응 체계의 확립"]),
    "agency": lambda r: r.choice(["보건복지부장관", "질병관리청장", "개인정보보호위원회", "행정안전부장관", "시·도지사"]),
    "thing": lambda r: r.choice(["개인정보", "진료 기록", "예방접종 자료", "의료 데이터", "안전관리 계획"]),
    "org": lambda r: r.choice(["보건복지부", "질병관리청", "행정안전부", "식품의약품안전처"]),
    "money": lambda r: str(r.choice([500, 1000, 3000, 5000])), "members": lambda r: str(r.choice([9, 11, 15, 20])),
}

_ZH = [
    "患者{age}岁，因{symptom}{days}天入院。", "入院时体温{temp}摄氏度，血压{bp}/{bp2}毫米汞柱。",
    "胸部影像学检查提示{side}肺下叶实变，诊断为{disease}。", "给予{drug}静脉滴注，并配合补液和对症支持治疗。",
    "治疗{days}天后患者症状明显好转，复查炎症指标下降。", "本研究纳入{year}年至{year2}年在我院就诊的患者{n}例。",
    "两组患者的{outcome}差异具有统计学意义。", "因此，早期{treatment}可以改善{disease}患者的预后。",
    "此外，老年患者发生{complication}的风险较高，需要密切观察。", "这一结果与既往研究一致，但仍需大样本前瞻性研究进一步证实。",
    "所有患者均签署了知情同意书，研究方案经医院伦理委员会批准。", "随访期间有{small}例患者出现复发，均经再次治疗后缓解。",
]
_ZH_FILL = {
    "age": _KO_FILL["age"], "days": _KO_FILL["days"], "temp": _KO_FILL["temp"], "bp": _KO_FILL["bp"],
    "bp2": _KO_FILL["bp2"], "year": _KO_FILL["year"], "year2": _KO_FILL["year2"], "n": _KO_FILL["n"],
    "small": _KO_FILL["small"],
    "symptom": lambda r: r.choice(["发热伴咳嗽", "腹痛伴呕吐", "胸闷气短", "头痛头晕", "乏力纳差"]),
    "side": lambda r: r.choice(["右", "左", "双"]),
    "disease": lambda r: r.choice(["社区获得性肺炎", "急性胰腺炎", "脓毒症", "急性胆囊炎", "脑梗死"]),
    "drug": lambda r: r.choice(["头孢曲松", "左氧氟沙星", "哌拉西林他唑巴坦", "万古霉素"]),
    "outcome": lambda r: r.choice(["住院时间", "病死率", "再入院率", "并发症发生率"]),
    "treatment": lambda r: r.choice(["抗感染治疗", "康复训练", "营养支持", "手术治疗"]),
    "complication": lambda r: r.choice(["跌倒", "谵妄", "压疮", "肺栓塞"]),
}
_JA = [
    "{age}歳の{sex}性が{days}日前からの{symptom}を主訴に当院を受診した。", "来院時の体温は{temp}度、血圧は{bp}/{bp2}mmHgであった。",
    "胸部X線検査で{side}下肺野に浸潤影を認め、{disease}と診断した。", "{drug}の点滴静注と補液による治療を開始した。",
    "治療開始から{days}日後に症状は改善し、炎症反応も低下した。", "本研究では{year}年から{year2}年までに当院で治療を受けた患者{n}例を対象とした。",
    "両群の{outcome}には統計学的に有意な差が認められた。", "したがって、早期の{treatment}は{disease}患者の予後を改善する可能性がある。",
    "また、高齢の患者では{complication}のリスクが高いため、慎重な観察が必要である。", "この結果は既報と一致しているが、大規模な前向き研究による検証が必要である。",
    "すべての患者から文書による同意を取得し、研究は倫理委員会の承認を得て行った。", "経過観察中に{small}例で再発を認めたが、いずれも再治療で軽快した。",
]
_JA_FILL = {
    "age": _KO_FILL["age"], "days": _KO_FILL["days"], "temp": _KO_FILL["temp"], "bp": _KO_FILL["bp"],
    "bp2": _KO_FILL["bp2"], "year": _KO_FILL["year"], "year2": _KO_FILL["year2"], "n": _KO_FILL["n"],
    "small": _KO_FILL["small"], "sex": lambda r: r.choice(["男", "女"]),
    "symptom": lambda r: r.choice(["発熱と咳嗽", "腹痛と嘔吐", "胸痛", "頭痛とめまい", "倦怠感"]),
    "side": lambda r: r.choice(["右", "左", "両側"]),
    "disease": lambda r: r.choice(["市中肺炎", "急性膵炎", "敗血症", "急性胆嚢炎", "脳梗塞"]),
    "drug": lambda r: r.choice(["セフトリアキソン", "レボフロキサシン", "バンコマイシン", "メロペネム"]),
    "outcome": lambda r: r.choice(["在院日数", "死亡率", "再入院率", "合併症の発生率"]),
    "treatment": lambda r: r.choice(["抗菌薬投与", "リハビリテーション", "栄養療法", "外科的治療"]),
    "complication": lambda r: r.choice(["転倒", "せん妄", "褥瘡", "肺塞栓症"]),
}
_EN = [
    "A {age}-year-old patient presented with {symptom} that had started {days} days before admission.",
    "On arrival the temperature was {temp} degrees and the blood pressure was {bp}/{bp2} mmHg.",
    "The chest radiograph showed consolidation of the {side} lower lobe, and {disease} was diagnosed.",
    "The patient was treated with intravenous {drug} and fluids, and the symptoms improved within {days} days.",
    "This study included {n} patients who were treated for {disease} between {year} and {year2}.",
    "The difference in {outcome} between the two groups was statistically significant.",
    "Early {treatment} may therefore improve the outcome of patients with {disease}.",
    "Older patients have a higher risk of {complication}, and they need to be observed with care.",
    "These findings agree with earlier studies, but a larger prospective trial is needed to confirm them.",
    "All patients gave written consent, and the study was approved by the ethics committee of the hospital.",
]
_EN_FILL = {
    "age": _KO_FILL["age"], "days": _KO_FILL["days"], "temp": _KO_FILL["temp"], "bp": _KO_FILL["bp"],
    "bp2": _KO_FILL["bp2"], "year": _KO_FILL["year"], "year2": _KO_FILL["year2"], "n": _KO_FILL["n"],
    "symptom": lambda r: r.choice(["fever and cough", "abdominal pain", "chest pain", "headache and dizziness"]),
    "side": lambda r: r.choice(["right", "left"]),
    "disease": lambda r: r.choice(["community-acquired pneumonia", "acute pancreatitis", "sepsis", "stroke"]),
    "drug": lambda r: r.choice(["ceftriaxone", "levofloxacin", "vancomycin", "meropenem"]),
    "outcome": lambda r: r.choice(["length of stay", "mortality", "readmission", "complications"]),
    "treatment": lambda r: r.choice(["antibiotic treatment", "rehabilitation", "nutritional support", "surgery"]),
    "complication": lambda r: r.choice(["falls", "delirium", "pressure ulcers", "pulmonary embolism"]),
}


_PARTICLE = re.compile(r"\{(\w+)\}(은|는|이|가|을|를|과|와|으로|로)(?=[\s,.)])")
_PAIRS = {"은": ("은", "는"), "는": ("은", "는"), "이": ("이", "가"), "가": ("이", "가"), "을": ("을", "를"),
          "를": ("을", "를"), "과": ("과", "와"), "와": ("과", "와"), "으로": ("으로", "로"), "로": ("으로", "로")}


def _josa(word: str, particle: str) -> str:
    """The form of a Korean particle that agrees with the word before it (받침 or not)."""
    last = word[-1]
    if not "가" <= last <= "힣":
        return particle
    final = (ord(last) - 0xAC00) % 28
    after_consonant, after_vowel = _PAIRS[particle]
    if particle in ("으로", "로"):
        return after_consonant if final not in (0, 8) else after_vowel  # ㄹ takes 로
    return after_consonant if final else after_vowel


def _fill(template: str, values: dict[str, str]) -> str:
    template = _PARTICLE.sub(lambda m: "{" + m.group(1) + "}" + _josa(values[m.group(1)], m.group(2)), template)
    return template.format(**values)


def _compose(rng: random.Random, templates: list[str], fill: dict, sentences: int, sep: str) -> str:
    picked = rng.sample(templates, min(sentences, len(templates)))
    return sep.join(_fill(t, {k: f(rng) for k, f in fill.items() if "{" + k + "}" in t}) for t in picked)


def korean_documents(n: int = 40, seed: int = 0) -> list[dict]:
    """`n` Korean documents {"id", "text", "kind"}: case reports, abstracts, statutes and bills."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = ("medical", "legal")[i % 2]
        templates = _KO_MEDICAL if kind == "medical" else _KO_LEGAL
        # Sentences drawn once without replacement, then cut into two paragraphs: a document never
        # repeats a sentence (which Gopher's repetition rules would rightly catch).
        sentences = _compose(rng, templates, _KO_FILL, rng.randint(8, 11), "\n").split("\n")
        cut = len(sentences) // 2
        text = " ".join(sentences[:cut]) + "\n\n" + " ".join(sentences[cut:])
        out.append({"id": f"ko-{kind}-{i:03d}", "text": text, "kind": kind})
    return out


def chinese_documents(n: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"zh-{i:03d}", "text": _compose(rng, _ZH, _ZH_FILL, rng.randint(8, 11), "")} for i in range(n)]


def japanese_documents(n: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"ja-{i:03d}", "text": _compose(rng, _JA, _JA_FILL, rng.randint(8, 11), "")} for i in range(n)]


def english_documents(n: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"en-{i:03d}", "text": _compose(rng, _EN, _EN_FILL, rng.randint(7, 10), " ")} for i in range(n)]


# Personal data a Korean clinical or legal document may hold, and the ordinary numbers around it.
KOREAN_PII = {
    "kr_rrn": ["900101-1234567", "8507152345678", "020315-3456789", "950230-5123456"],
    "phone": ["010-1234-5678", "02-123-4567", "031-987-6543", "+82 10-2345-6789", "+82-2-3456-7890",
              "01098765432"],
    "kr_brn": ["220-81-62517"],
    "kr_passport": ["M12345678", "M123A4567"],
    "kr_driver_licence": ["11-17-123456-01"],
    "email": ["hong.gildong@hospital.co.kr"],
}
ORDINARY_NUMBERS = ["2020년 3월 15일", "법률 제17799호", "2020. 12. 29.", "1,500,000원", "2021-06-30",
                    "제3조제1항", "p=0.03", "130/85 mmHg", "제2024-123호", "1588-1234"]


def korean_pii_document(seed: int = 0) -> dict:
    """A Korean case report full of `KOREAN_PII` (950230-5: 30 February, saved by its label) and ordinary numbers."""
    rng = random.Random(seed)
    body = _compose(rng, _KO_MEDICAL, _KO_FILL, 6, " ")
    p = KOREAN_PII
    text = (
        f"{body}\n\n"
        f"환자 인적 사항: 주민등록번호 {p['kr_rrn'][0]}, 보호자 주민번호 {p['kr_rrn'][1]}이며 "
        f"자녀의 번호는 {p['kr_rrn'][2]}이다. 외국인 간병인의 외국인등록번호는 {p['kr_rrn'][3]}로 기록되어 있다.\n"
        f"연락처는 휴대폰 {p['phone'][0]}, 자택 {p['phone'][1]}, 직장 {p['phone'][2]}이고 "
        f"해외 체류 시 {p['phone'][3]} 또는 {p['phone'][4]}로 연락하며 보호자 번호는 {p['phone'][5]}이다.\n"
        f"진료비는 사업자등록번호 {p['kr_brn'][0]}의 업체에서 납부하였고, 여권번호 {p['kr_passport'][0]}(신여권 "
        f"{p['kr_passport'][1]})와 운전면허번호 {p['kr_driver_licence'][0]}로 본인 확인을 하였다. "
        f"이메일 {p['email'][0]}로 결과를 보냈다.\n\n"
        f"이 기록은 {ORDINARY_NUMBERS[0]} 작성되었으며 {ORDINARY_NUMBERS[1]}({ORDINARY_NUMBERS[2]} 개정)에 따라 "
        f"보관한다. 본인부담금은 {ORDINARY_NUMBERS[3]}이고 다음 외래는 {ORDINARY_NUMBERS[4]}로 예약하였다. "
        f"{ORDINARY_NUMBERS[5]}에 따른 고지를 마쳤고 두 군의 차이는 {ORDINARY_NUMBERS[6]}, 혈압은 "
        f"{ORDINARY_NUMBERS[7]}였다. 사건번호 {ORDINARY_NUMBERS[8]}, 대표번호 {ORDINARY_NUMBERS[9]}로 문의할 수 있다."
    )
    return {"id": "ko-pii-000", "text": text}


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path
