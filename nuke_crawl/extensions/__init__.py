"""Scrapy extensions of nuke_crawl."""
