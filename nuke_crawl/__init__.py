"""nuke_crawl: vehicle listings into a database, images trickled in later."""
