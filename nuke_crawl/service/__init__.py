"""``scrapy serve``: the image processor as an HTTP service (API, admin page, schedules).

- :mod:`.app`: the Starlette application (routes, auth, the admin page).
- :mod:`.jobs`: spider runs as supervised ``scrapy crawl`` processes or scrapyd jobs,
  recorded in ``nuke_service_jobs`` (migration 6).
- :mod:`.queries`: what the API reads (image status reuses ``scrapy status``'s code).
- :mod:`.schedules`: cron schedules (croniter).
"""
