"""The README's example envelope is the demo's, byte for byte (issue #10)."""

from __future__ import annotations

from tools.readme_example import README, block, envelope, rewrite


def test_the_readme_example_is_what_the_demo_publishes() -> None:
    text = README.read_text()
    assert rewrite(text, block(envelope())) == text, (
        "README.md's example envelope is out of date: run python -m tools.readme_example"
    )
