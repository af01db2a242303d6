"""Shared plumbing of nuke_crawl's ``scrapy`` commands (the commands are in
:mod:`nuke_crawl.commands`).

This cannot live in ``commands/``: Scrapy loads every module of ``COMMANDS_MODULE``
and registers each ``ScrapyCommand`` subclass it defines as a command named after the
module, so a base class there would appear in ``scrapy -h`` as a command of its own.
"""
