"""Run a scrapy command line and write its peak memory (KiB) to a file: the
crawler process's plus the largest of its children (the extraction worker).

Usage: python bench/_child.py MAXRSS_FILE scrapy-args...
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from scrapy.cmdline import execute

if __name__ == "__main__":
    out = Path(sys.argv[1])
    sys.argv = ["scrapy", *sys.argv[2:]]
    try:
        execute()
    finally:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out.write_text(str(own + children))
