"""``Page``: one parsed HTML document and the lazily computed views extractors share
(the lxml tree is parsed once; text lines, decoy containers and links are computed on
first use)."""

from __future__ import annotations

import re
from functools import cached_property
from urllib.parse import urlsplit

import lxml.html
from lxml import etree
from lxml.html import HtmlElement
from w3lib.encoding import html_body_declared_encoding

from nuke_crawl.extraction.structured import StructuredData, extract_structured
from nuke_crawl.extraction.text import default_mileage_unit
from nuke_crawl.extraction.urls import absolutize, canonical_listing_url, same_site

_SKIP_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "head",
        "iframe",
        "select",
        "option",
        "button",
        "textarea",
        "input",
        etree.Comment,
        etree.ProcessingInstruction,
    }
)
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "td",
        "th",
        "body",
        "html",
        "caption",
        "h7",
        "center",
    }
)
_DECOY = re.compile(
    r"similar|related|recommend|recently[-_ ]?viewed|you[-_ ]?may|also[-_ ]?(like|viewed)|"
    r"other[-_ ]?(vehicles|cars|listings|auctions)|more[-_ ]?(vehicles|cars|from|like)|"
    r"suggest|cross[-_ ]?sell|upsell|comparable|nearby[-_ ]?(vehicles|cars)|"
    r"(^|[-_ ])(footer|site-footer|navbar|breadcrumbs?)($|[-_ ])",
    re.I,
)
#: Same-site ``<a href>`` links read from one page at most (:attr:`Page.anchors`, page
#: order): every vehicle link, pagination link and image link found through anchors is
#: among them. A hostile page flooded with links (50,000 vehicles and 50,000 page
#: numbers, 6 MB) would otherwise take ~120 MB and ~10 s in the extraction worker; the
#: largest real inventory page seen has under 300 links.
MAX_PAGE_LINKS = 5_000
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)
# lxml.html's parser, with its per-tag element classes (forms, inputs...) left out: it
# picks them in a Python callback for every element the code touches (a sixth of a
# million calls a thousand pages); this lookup runs in C and gives the same HtmlElement.
_PARSER = etree.HTMLParser()
_PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=lxml.html.HtmlElement,
        comment=lxml.html.HtmlComment,
        pi=lxml.html.HtmlProcessingInstruction,
        entity=lxml.html.HtmlEntity,
    )
)
# every class and id value under an element (each knows its element: getparent())
_CLASS_ID_VALUES = etree.XPath("descendant-or-self::*/@class | descendant-or-self::*/@id")
# Every match of _DECOY holds one of these words whole within one class or id value (the
# separators it allows are not letters): a value without any cannot make its element a
# decoy, and elements are looked at only for the values that have one.
_DECOY_WORDS = re.compile(
    r"similar|related|recommend|recently|you|also|other|more|suggest|cross|upsell|"
    r"comparable|nearby|footer|navbar|breadcrumb",
    re.I,
)


def text_content(el: HtmlElement) -> str:
    """``el.text_content()``: the same text (its descendants' text nodes, without its
    tail), from libxml2's text serialiser instead of an XPath ``string()`` call, about
    five times cheaper (pagination reads every anchor's label)."""
    return etree.tostring(el, method="text", encoding=str, with_tail=False)


def to_text(html: str | bytes) -> str:
    """Decode bytes using the declared encoding (meta charset), UTF-8 otherwise."""
    if isinstance(html, str):
        return html
    enc = html_body_declared_encoding(html) or "utf-8"
    try:
        return html.decode(enc, errors="replace")
    except LookupError:
        return html.decode("utf-8", errors="replace")


class Page:
    """A parsed page: tree, URL, and cached derived views."""

    def __init__(self, html: str | bytes, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.host = (parts.hostname or "").lower()
        text = _XML_DECL.sub("", to_text(html), count=1)
        try:
            self.tree: HtmlElement = lxml.html.document_fromstring(
                text or "<html></html>", parser=_PARSER
            )
        except (etree.ParserError, ValueError):
            self.tree = lxml.html.document_fromstring("<html></html>", parser=_PARSER)
        self.raw_text = text
        self.default_unit = default_mileage_unit(self.host)
        self.canonical_url = canonical_listing_url(url) if url else ""
        # the vehicle links extract.py found, siblings and links named by anchors included
        self.vehicle_link_urls: set[str] = set()

    # --- cached views ---------------------------------------------------------------

    @cached_property
    def body(self) -> HtmlElement:
        b = self.tree.find("body")
        return b if b is not None else self.tree

    @cached_property
    def raw_lower(self) -> str:
        """The page's source in lower case, for case-insensitive substring tests."""
        return self.raw_text.lower()

    @cached_property
    def structured(self) -> StructuredData:
        return extract_structured(self.tree, self.url, host=self.host, source=self.raw_lower)

    @cached_property
    def title_tag(self) -> str | None:
        t = self.tree.find("head/title")
        return " ".join(text_content(t).split()) if t is not None else None

    @cached_property
    def h1s(self) -> list[str]:
        out = []
        for h in self.body.iter("h1"):
            if h in self.excluded:
                continue
            t = " ".join(text_content(h).split())
            if t:
                out.append(t)
        return out

    @cached_property
    def decoys(self) -> list[HtmlElement]:
        """Containers of other vehicles, navigation and footers (never the main one)."""
        found: list[HtmlElement] = []
        if "<nav" in self.raw_lower or "<footer" in self.raw_lower:
            found.extend(self.body.iter("nav", "footer"))
        if "<form" in self.raw_lower:
            # a search or valuation form's fields are the visitor's inputs ("Mileage:
            # 160,000"), not the listing's; a form wrapping the whole page (ASP.NET) holds
            # the h1 and stays
            found.extend(
                f
                for f in self.body.iter("form")
                if f.find(".//h1") is None and f.find(".//img") is None
            )
        # class and id values, not their elements: most pages name no decoy at all
        values = _CLASS_ID_VALUES(self.body)
        if not _DECOY_WORDS.search(" ".join(values)):
            return found
        seen: set[HtmlElement] = set()
        for value in values:
            if not _DECOY_WORDS.search(value):
                continue
            el = value.getparent()
            if el in seen or el.tag in ("nav", "footer", "body", "html"):
                continue
            seen.add(el)
            attrs = (el.get("class") or "") + " " + (el.get("id") or "")
            if _DECOY.search(attrs) and el.find(".//h1") is None:
                found.append(el)
        return found

    @cached_property
    def excluded(self) -> set[HtmlElement]:
        """Every element inside a decoy container."""
        out: set[HtmlElement] = set()
        for d in self.decoys:
            if d in out:
                continue
            out.update(d.iter())
        return out

    @cached_property
    def lines(self) -> list[list[str]]:
        """The main content as lines of cells, decoys left out (see ``render_lines``)."""
        return render_lines(self.body, self.excluded, self.heading_lines)

    @cached_property
    def heading_lines(self) -> set[int]:
        """Indices of ``lines`` that are headings (filled when ``lines`` is built)."""
        return set()

    @cached_property
    def anchors(self) -> list[tuple[HtmlElement, str]]:
        """(element, absolute same-site URL without fragment) for every ``<a href>``,
        the first :data:`MAX_PAGE_LINKS` of them in page order."""
        out = []
        for a in self.body.iter("a"):
            url = absolutize(a.get("href"), self.url)
            if url and same_site(url, self.url):
                out.append((a, url))
                if len(out) >= MAX_PAGE_LINKS:
                    break
        return out


_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "summary", "legend", "caption"})
_LINE_TAGS = _BLOCK_TAGS | _HEADING_TAGS  # the elements that end a line


def render_lines(
    root: HtmlElement,
    excluded: set[HtmlElement] | None = None,
    headings: set[int] | None = None,
) -> list[list[str]]:
    """Render ``root`` as text lines split into cells.

    Block elements (div, p, li, td, dt, dd, br...) end a line; inline elements
    (span, strong, label, a...) end a cell, so ``<span>VIN:</span><span>X</span>``
    gives the cells ``["VIN:", "X"]``. Scripts, styles, SVGs, form controls and
    elements in ``excluded`` are skipped. Indices of lines that are headings
    (h1-h6, summary, legend, caption) are added to ``headings`` when given.
    """
    excluded = excluded or set()
    lines: list[list[str]] = []
    cells: list[str] = []
    buf: list[str] = []  # text of the cell being read
    line_tags, heading_tags, skip_tags = _LINE_TAGS, _HEADING_TAGS, _SKIP_TAGS
    # (the cell and line endings are written out inline: this loop meets every element
    # of every page, and a function call per event was a third of its time)
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        if event == "start" and (tag in skip_tags or not isinstance(tag, str) or el in excluded):
            walker.skip_subtree()
            if el is not root and (tail := el.tail):
                buf.append(tail)
            continue
        if buf:
            text = " ".join("".join(buf).split())
            buf.clear()
            if text:
                cells.append(text)
        if tag in line_tags and cells:
            lines.append(cells)
            cells = []
        # (each read of .text or .tail decodes it anew: read once)
        if event == "start":
            if own := el.text:
                buf.append(own)
        else:
            if headings is not None and tag in heading_tags and lines:
                headings.add(len(lines) - 1)
            if el is not root and (tail := el.tail):
                buf.append(tail)
    if buf:
        text = " ".join("".join(buf).split())
        if text:
            cells.append(text)
    if cells:
        lines.append(cells)
    return lines
