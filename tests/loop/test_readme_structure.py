"""The README renders as written: its tables are tables and its in-page links lead somewhere.

Session 18 applied README edits with a script that left four stray headings in the text; one
split the CLI reference table in two, so on GitHub every row below it rendered as one
paragraph of pipes, and another swallowed the first words of a paragraph (found in the next
session's review). Markdown never fails to render, so these checks parse the README with
markdown-it (CommonMark plus tables, GitHub's flavour as far as it matters here).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

README = Path(__file__).parents[2] / "README.md"


def _tokens() -> tuple[list[str], list[Token]]:
    text = README.read_text(encoding="utf-8")
    return text.splitlines(), MarkdownIt("commonmark").enable("table").parse(text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _headings(tokens: list[Token]) -> list[tuple[int, str]]:
    found = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            inline = tokens[i + 1]
            text = "".join(child.content for child in inline.children or [])
            found.append((int(token.tag[1]), text))
    return found


def test_every_table_row_is_part_of_a_table() -> None:
    """A line that starts with ``|`` outside code belongs to a rendered table."""
    lines, tokens = _tokens()
    in_tables: set[int] = set()
    in_code: set[int] = set()
    for token in tokens:
        if token.map is None:
            continue
        span = range(token.map[0], token.map[1])
        if token.type == "table_open":
            in_tables.update(span)
        elif token.type in ("fence", "code_block", "html_block"):
            in_code.update(span)
    stray = [
        f"README.md:{number + 1}: {line[:60]}"
        for number, line in enumerate(lines)
        if line.lstrip().startswith("|") and number not in in_tables | in_code
    ]
    assert not stray, "table rows outside any table (a line between them breaks it):\n" + "\n".join(
        stray
    )


def test_in_page_links_name_a_heading() -> None:
    _, tokens = _tokens()
    anchors = {_slug(text) for _, text in _headings(tokens)}
    links = [
        child.attrs["href"]
        for token in tokens
        if token.type == "inline"
        for child in token.children or []
        if child.type == "link_open" and str(child.attrs.get("href", "")).startswith("#")
    ]
    assert links, "the README's in-page links were not found: the parser changed?"
    broken = sorted({str(href) for href in links if str(href)[1:] not in anchors})
    assert not broken, f"links to no heading: {broken}"


def test_headings_are_short_titles() -> None:
    """A heading is a title, not a sentence that swallowed the paragraph after it."""
    _, tokens = _tokens()
    long = [text for _, text in _headings(tokens) if len(text) > 80 or text.endswith(",")]
    assert not long, f"headings that look like text: {long}"
