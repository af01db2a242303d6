"""How pages and images are downloaded: pieces that plug into Scrapy's downloader.

- :mod:`nuke_crawl.downloader.browser`: the org crawl's download handler, which starts
  a browser (scrapy-playwright, Chromium) only for pages that need one;
- :mod:`nuke_crawl.downloader.slotsafe`: a ``DOWNLOADER`` honouring per-slot concurrency
  for bursts of requests (the image backfill).
"""
