"""Small helpers shared by several rooms (like :mod:`scrapy.utils`)."""
