"""Worker processes for CPU-bound work (page extraction, vehicle batches, image decoding).

- :mod:`nuke_crawl.workers.pool`: :class:`~nuke_crawl.workers.pool.WorkerPool`, the
  crawler's side (asyncio, no Scrapy);
- :mod:`nuke_crawl.workers.process`: the worker's side (``python -m
  nuke_crawl.workers.process``).

A crawl's one pool is the :class:`~nuke_crawl.extensions.workers.WorkerPoolExtension`'s
(``worker_pool(crawler)``). This package imports nothing itself: a worker process
starts by importing it, and must stay light.
"""
