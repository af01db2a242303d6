"""Run a scrapy command line and write what it used to a file, as JSON: its peak
memory in KiB (the crawler process's plus the largest of its children: the
extraction worker) and its CPU seconds (user + system, its own and its children's).

Usage: python bench/_child.py STATS_FILE scrapy-args...
"""

from __future__ import annotations

import json
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
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.write_text(
            json.dumps(
                {
                    "peak_kib": own.ru_maxrss + children.ru_maxrss,
                    "cpu_crawler": own.ru_utime + own.ru_stime,
                    "cpu_children": children.ru_utime + children.ru_stime,
                }
            )
        )
