from cptkit.data.clean import CleanParams, clean_text, html_to_text, looks_like_html
from cptkit.data.documents import Document
from cptkit.data.pipelines import build_steps, parse_pipeline


def test_html_to_text_drops_script_style_and_markup_and_keeps_paragraphs():
    page = (
        "<!doctype html><html><head><title>Title</title><style>p {color: red}</style></head><body>"
        "<p>First &amp; <b>bold</b>\n   paragraph.</p><script>var secret = 1;</script>"
        "<div>Line one<br>line two</div><!-- a comment --><ul><li>alpha</li><li>beta</li></ul>"
        "<table><tr><td>a</td><td>b</td></tr></table><noscript>enable js</noscript></body></html>"
    )
    text = html_to_text(page)
    assert text == "First & bold paragraph.\n\nLine one\nline two\n\nalpha\n\nbeta\n\na b"
    for leaked in ("var secret", "color", "Title", "<", "comment", "enable js"):
        assert leaked not in text


def test_deeply_nested_html_does_not_overflow_the_stack():
    text = html_to_text("<div>" * 20000 + "deep" + "</div>" * 20000)
    assert text == "deep"


def test_auto_detects_html_but_leaves_prose_with_angle_brackets_alone():
    assert looks_like_html("<AbstractText>BACKGROUND: x</AbstractText>")
    assert not looks_like_html("p < 0.05 and x > 3 in 10 < n")
    assert clean_text("p < 0.05 and x > 3", CleanParams()) == "p < 0.05 and x > 3"
    assert clean_text("<p>We saw p &lt; 0.05.</p>", CleanParams()) == "We saw p < 0.05."


def test_unicode_repair_and_prose_whitespace():
    raw = "The Mona Lisa doesnÃ¢â‚¬â„¢t   have\teyebrows.  \r\n\r\n\r\n\r\nNew   paragraph. "
    assert clean_text(raw, CleanParams()) == "The Mona Lisa doesn't have eyebrows.\n\nNew paragraph."


def test_code_whitespace_keeps_indentation_and_tabs():
    src = "def f(x):  \r\n\tif x:\n\t\treturn  x   # two spaces\n\n\n\n\n\nclass A:\n    pass   \n"
    out = clean_text(src, CleanParams(html="never", whitespace="code"))
    assert out == "def f(x):\n\tif x:\n\t\treturn  x   # two spaces\n\n\nclass A:\n    pass\n"


def test_clean_step_drops_documents_left_empty():
    problems = []
    steps = build_steps(parse_pipeline(["clean"], "p", problems), None)
    assert not problems
    docs = [Document("a", "<html><script>only()</script></html>"), Document("b", "<p>kept</p>")]
    verdicts = [(d.id, v, d.text) for d, v in steps[0].run(docs)]
    assert verdicts == [("a", "empty_after_cleaning", ""), ("b", None, "kept")]
