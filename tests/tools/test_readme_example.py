"""The README's example envelope is the demo's, byte for byte (issue #10)."""

from __future__ import annotations

from tools.readme_example import README, block, envelope, rewrite


def test_the_readme_example_is_what_the_demo_publishes() -> None:
    text = README.read_text()
    assert rewrite(text, block(envelope())) == text, (
        "README.md's example envelope is out of date: run python -m tools.readme_example"
    )


def test_the_readme_evidence_is_the_reports() -> None:
    """The summary block is the report's, and every figure in the Evidence section is in it."""
    import re

    from tools.readme_example import REPORT, rewrite_evidence

    text = README.read_text()
    report = REPORT.read_text()
    assert rewrite_evidence(text, report) == text, (
        "README.md's report summary is out of date: run python -m tools.readme_example"
    )
    start = text.index("## Evidence: does the signal mean anything?")
    section = text[start : text.index("\n## ", start + 1)]
    figures = set(re.findall(r"(?<![\w.])[-+−]?\d+\.\d+(?![\w.])", section))
    normalised = report.replace("−", "-")
    missing = sorted(f for f in figures if f.replace("−", "-").lstrip("+") not in normalised)
    assert missing == [], (
        f"figures in the README's Evidence that the report does not hold: {missing}"
    )
