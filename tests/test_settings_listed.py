"""Every setting the package reads is listed once in settings.py, with its default there.

Read from the source (``ast``), not by running it: a ``NUKE_*``/``CF_*`` name anywhere in
the package must be a setting in nuke_crawl/settings.py (or one of the few environment
variables the crawler passes to its worker processes); every setting read through a
``settings.get*`` call must be the project's or Scrapy's; and none is read with a literal
default written again where it is read (``defaults.NAME`` instead).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from scrapy.settings import default_settings as scrapy_defaults

from nuke_crawl import settings as project

PACKAGE = Path(project.__file__).parent

#: NUKE_* names that are environment variables of the worker processes, not settings.
# read from the environment (or refused as a setting: a secret, CF_IMAGES_TOKEN)
ENVIRONMENT_ONLY = frozenset(
    {"NUKE_WORKER_SYS_PATH", "NUKE_WORKER_GC_THRESHOLD", "CF_IMAGES_TOKEN"}
)
OWN_PREFIXES = ("NUKE_", "CF_")
GETTERS = frozenset(
    {
        "get",
        "getint",
        "getbool",
        "getfloat",
        "getlist",
        "getdict",
        "getdictorlist",
        "getpriority",
        "getwithbase",
        "__getitem__",
    }
)


def _listed(name: str) -> bool:
    return name.isupper() and hasattr(project, name)


def _own_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(OWN_PREFIXES)
        and value.replace("_", "").isalnum()
        and value.isupper()
    )


def _settings_reads(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    """``<...settings>.get*("NAME", ...)`` calls with a constant name."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in GETTERS
            and ast.unparse(node.func.value).split(".")[-1].endswith("settings")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node, node.args[0].value


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def problems(source: str, where: str) -> list[str]:
    """What is wrong with one module's settings reads (empty: nothing)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and _own_name(node.value)
            and not _listed(node.value)
            and node.value not in ENVIRONMENT_ONLY
        ):
            found.append(f"{where}:{node.lineno}: {node.value} is not in settings.py")
    for call, name in _settings_reads(tree):
        # an environment-only name is looked up in the settings only to refuse it there
        if (
            not _listed(name)
            and not hasattr(scrapy_defaults, name)
            and name not in ENVIRONMENT_ONLY
        ):
            found.append(
                f"{where}:{call.lineno}: setting {name} is neither the project's nor Scrapy's"
            )
        default = call.args[1] if len(call.args) > 1 else None
        if default is not None and _is_literal(default) and _listed(name):
            found.append(
                f"{where}:{call.lineno}: {name} read with a literal default "
                f"({ast.unparse(default)}); use defaults.{name}"
            )
    return found


def _modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != Path(project.__file__):
            yield path


def test_every_setting_read_is_listed_in_settings_py_with_its_default_there() -> None:
    found = []
    for path in _modules():
        found += problems(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    assert not found, "\n".join(found)


def test_the_environment_only_names_are_not_settings() -> None:
    assert not [name for name in ENVIRONMENT_ONLY if _listed(name)]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'x = settings.getint("NUKE_NOT_A_SETTING", 3)',
            "NUKE_NOT_A_SETTING is not in settings.py",
        ),
        ('NAME = "CF_NOWHERE"', "CF_NOWHERE is not in settings.py"),
        (
            'x = crawler.settings.getfloat("NUKE_BACKOFF_MAX", 60.0)',
            "NUKE_BACKOFF_MAX read with a literal default (60.0); use defaults.NUKE_BACKOFF_MAX",
        ),
        (
            'x = self.settings.getdict("NUKE_IMAGE_VARIANTS", {"thumb": (1, 2)})',
            "NUKE_IMAGE_VARIANTS read with a literal default",
        ),
        ('x = settings.get("MY_OWN_THING")', "setting MY_OWN_THING is neither"),
    ],
)
def test_the_check_finds_what_it_looks_for(source: str, message: str) -> None:
    assert any(message in problem for problem in problems(source, "x.py"))


def test_the_check_accepts_the_projects_way() -> None:
    source = (
        'a = settings.getfloat("NUKE_BACKOFF_MAX", defaults.NUKE_BACKOFF_MAX)\n'
        'b = settings.getint("CONCURRENT_REQUESTS")\n'
        'c = os.environ.get("NUKE_WORKER_SYS_PATH")\n'
    )
    assert problems(source, "x.py") == []
