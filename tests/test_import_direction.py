"""The rooms' import direction, read from the source with ``ast`` (docs/architecture.md).

- no spider imports a pipeline (items live in ``nuke_crawl.items``);
- no extension, command or pipeline imports a spider module (spider arguments and their
  parsers live in ``nuke_crawl.params``, neutral ground);
- ``db/``, ``extraction/``, ``storage/`` and ``workers/pool.py`` (and the image worker's
  modules) import no Scrapy and no Twisted: they run in worker processes, threads and
  other tools as well as in a crawl.

Every import counts: at the top, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import nuke_crawl

PACKAGE = Path(nuke_crawl.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``source`` (relative ones resolved;
    ``from a import b`` gives ``a.b`` too, as ``b`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


#: (modules the rule is about, modules they must not import, why)
RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (
        ("nuke_crawl.spiders",),
        ("nuke_crawl.pipelines",),
        "a spider imports no pipeline (items: nuke_crawl.items)",
    ),
    (
        ("nuke_crawl.extensions", "nuke_crawl.commands", "nuke_crawl.pipelines"),
        ("nuke_crawl.spiders",),
        "extensions, commands and pipelines import no spider (arguments: nuke_crawl.params)",
    ),
    (
        (
            "nuke_crawl.db",
            "nuke_crawl.extraction",
            "nuke_crawl.storage",
            "nuke_crawl.workers.pool",
            "nuke_crawl.workers.process",
            "nuke_crawl.params",
            "nuke_crawl.imaging",
            "nuke_crawl.pipelines._imageworker",
        ),
        ("scrapy", "twisted"),
        "this room runs outside a crawl too: no Scrapy, no Twisted",
    ),
]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    found = []
    for line, name in imports(source, module, is_package):
        for rooms, forbidden, why in RULES:
            if any(_under(module, room) for room in rooms) and any(
                _under(name, f) for f in forbidden
            ):
                found.append(f"{module}:{line} imports {name}: {why}")
    return sorted(set(found))


def _modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, module_name(path)


def test_no_module_imports_against_the_rooms_direction() -> None:
    found = []
    for path, module in _modules():
        found += violations(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert not found, "\n".join(found)


def test_the_rooms_exist() -> None:
    """A rule about a room that was renamed away would pass without checking anything."""
    names = {module for _, module in _modules()}
    for rooms, _, _ in RULES:
        for room in rooms:
            assert any(_under(name, room) for name in names), room


@pytest.mark.parametrize(
    ("source", "module", "message"),
    [
        (
            "from nuke_crawl.pipelines.images import ImageFailed",
            "nuke_crawl.spiders.x",
            "imports nuke_crawl.pipelines.images",
        ),
        ("from ..pipelines import images", "nuke_crawl.spiders.x", "imports nuke_crawl.pipelines"),
        (
            "def f():\n    import nuke_crawl.spiders.org\n",
            "nuke_crawl.extensions.x",
            "nuke_crawl.extensions.x:2 imports nuke_crawl.spiders.org",
        ),
        ("from nuke_crawl import spiders", "nuke_crawl.commands.x", "imports nuke_crawl.spiders"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from scrapy import Spider\n",
            "nuke_crawl.db.store",
            "imports scrapy",
        ),
        ("from twisted.internet import reactor", "nuke_crawl.workers.pool", "imports twisted"),
    ],
)
def test_the_check_finds_a_wrong_way_import(source: str, module: str, message: str) -> None:
    assert any(message in problem for problem in violations(source, module))


def test_the_check_allows_the_right_direction() -> None:
    source = (
        "from nuke_crawl.items import VehicleImagesItem\n"
        "from nuke_crawl.params import SpiderArgs\nimport scrapy\n"
    )
    assert violations(source, "nuke_crawl.spiders.x") == []
    assert violations("from nuke_crawl.db import store", "nuke_crawl.pipelines.x") == []
