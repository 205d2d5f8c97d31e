"""The text a person reads in a label written in HTML, as REDCap lets projects write them
(`<b>CRP</b>&nbsp;(mg/L)`, `10<sup>9</sup>/L`): for the dictionary an import keeps and every
file an export writes, which must show text, never markup."""

from __future__ import annotations

from html.parser import HTMLParser


def plain_text(html: str) -> str:
    """The text a person reads in a piece of HTML: tags dropped (a superscript marked with "^",
    as in 10^9/L), entities read, whitespace collapsed."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


class _Text(HTMLParser):
    """Collects the text; a tag that is not inline (a break, a paragraph) reads as a space."""

    INLINE = frozenset(
        {"a", "b", "i", "u", "s", "em", "strong", "span", "font", "small", "sub", "sup"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append("^" if tag == "sup" else self.between(tag))

    def handle_endtag(self, tag: str) -> None:
        self.parts.append(self.between(tag))

    def between(self, tag: str) -> str:
        return "" if tag in self.INLINE else " "
