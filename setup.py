"""For ``scrapyd-deploy``, which builds an egg through ``setup.py bdist_egg``; everything
about the package (and the ``scrapy`` settings entry point scrapyd needs) is in
pyproject.toml."""

from setuptools import setup

setup()
