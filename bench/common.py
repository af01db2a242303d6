"""Set-up every benchmark shares."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_bytecode() -> None:
    """Let the processes a benchmark starts cache their bytecode, as a deployment's do.

    Where the environment forbids writing bytecode (``PYTHONDONTWRITEBYTECODE``, set on
    these machines), every crawler and worker process compiled nuke_crawl again as it
    started: about 0.1 CPU second each, which no installed copy pays. They cache it in a
    folder of their own instead (``PYTHONPYCACHEPREFIX``), never beside the sources, as
    the test suite does (tests/conftest.py)."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault(
        "PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "nuke_crawl-bench-pycache")
    )
