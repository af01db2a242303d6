"""Run a scrapy command line and write the process's peak memory (KiB) to a file.

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
        out.write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
