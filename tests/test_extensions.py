"""The crawl-wide extensions that need no site: GC tuning."""

from __future__ import annotations

import gc

import pytest
from scrapy import Spider, signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.test import get_crawler

from nuke_crawl.extensions.gctune import GcTuning


def test_gc_tuning_for_the_engine_run_only():
    before = gc.get_threshold()
    crawler = get_crawler(Spider, {"NUKE_GC_THRESHOLD": 12345, "MEMUSAGE_ENABLED": False})
    ext = GcTuning.from_crawler(crawler)  # signals hold their receivers weakly
    crawler.signals.send_catch_log(signals.engine_started)
    try:
        assert gc.get_threshold() == (12345, *before[1:])
        assert gc.get_freeze_count() > 0  # start-up objects are no longer scanned
    finally:
        crawler.signals.send_catch_log(signals.engine_stopped)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert ext.saved is None


@pytest.mark.parametrize("value", [0, -1])
def test_gc_tuning_off_or_refused(value):
    with pytest.raises(NotConfigured):
        GcTuning.from_crawler(get_crawler(Spider, {"NUKE_GC_THRESHOLD": value}))
