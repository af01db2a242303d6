"""The org crawl's bounds and progress line, without a crawl (the end-to-end tests are
tests/test_org_bounds.py and tests/test_org_progress.py)."""

from __future__ import annotations

import pytest
from scrapy.settings import Settings

from nuke_crawl import settings as project_settings
from nuke_crawl.spiders.bounds import CrawlBounds, OrgBudget
from nuke_crawl.spiders.orgwatch import duration, progress_line


def test_defaults_come_from_the_settings_module() -> None:
    bounds = CrawlBounds.from_settings(Settings(vars(project_settings)))
    assert bounds == CrawlBounds(
        max_pages=project_settings.NUKE_ORG_MAX_PAGES,
        max_sitemaps=project_settings.NUKE_ORG_MAX_SITEMAPS,
        max_sitemap_entries=project_settings.NUKE_ORG_MAX_SITEMAP_ENTRIES,
        sitemap_max_depth=project_settings.NUKE_SITEMAP_MAX_DEPTH,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NUKE_ORG_MAX_PAGES", "0", "setting NUKE_ORG_MAX_PAGES=0: must be at least 1"),
        ("NUKE_SITEMAP_MAX_DEPTH", "-1", "setting NUKE_SITEMAP_MAX_DEPTH=-1: must be at least 0"),
        (
            "NUKE_ORG_MAX_SITEMAPS",
            "x",
            "setting NUKE_ORG_MAX_SITEMAPS='x': expected a whole number",
        ),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        CrawlBounds.from_settings(Settings({name: value}))


def test_budget_caps_and_what_it_records() -> None:
    budget = OrgBudget(
        CrawlBounds(max_pages=2, max_sitemaps=2, max_sitemap_entries=3, sitemap_max_depth=1), "Org"
    )
    assert budget.allow_page() and budget.allow_page() and not budget.allow_page()
    assert budget.allow_sitemap("http://a/s.xml", 0)
    assert not budget.allow_sitemap("http://a/s.xml#x", 0)  # the same sitemap
    assert not budget.allow_sitemap("http://a/deep.xml", 2)  # too deep
    assert budget.allow_sitemap("http://a/t.xml", 1)
    assert not budget.allow_sitemap("http://a/u.xml", 1)  # the third
    entries = [{"loc": f"http://a/{i}"} for i in range(5)]
    assert budget.sitemap_urls(entries) == ["http://a/0", "http://a/1", "http://a/2"]
    assert budget.sitemap_urls(entries) == []
    assert budget.follow_pages(paged=False, added=0, at_vehicle_cap=False)
    assert not budget.follow_pages(paged=True, added=0, at_vehicle_cap=False)
    assert budget.follow_pages(paged=True, added=1, at_vehicle_cap=False)
    assert not budget.follow_pages(paged=False, added=5, at_vehicle_cap=True)
    assert budget.summary() == {
        "caps_hit": {"pages": 2, "sitemap_depth": 1, "sitemaps": 2, "sitemap_entries": 3},
        "pagination_stopped": 1,
    }


def test_exactly_the_cap_of_entries_is_not_a_cap_hit() -> None:
    budget = OrgBudget(CrawlBounds(max_sitemap_entries=3))
    assert len(budget.sitemap_urls([{"loc": "x"}] * 3)) == 3
    assert budget.caps_hit == {}


def test_progress_line() -> None:
    assert progress_line(0, 10, 5, 0, 2.0) == (
        "Progress: 0 of 10 organizations done, 5 pages, 0 vehicles found, 2.5 pages/s, ETA unknown"
    )
    assert progress_line(2, 10, 120, 40, 60.0).endswith("2.0 pages/s, ETA 4m00s")
    assert progress_line(3, 3, 1, 1, 1.0).endswith("ETA 0s")
    assert [duration(s) for s in (5, 61, 7322)] == ["5s", "1m01s", "2h02m"]


def test_without_the_project_settings_the_defaults_are_the_same() -> None:
    """A crawler built without nuke_crawl.settings (a test's get_crawler) reads the
    same caps: the defaults come from that module, not repeated literals."""
    assert CrawlBounds.from_settings(Settings()) == CrawlBounds.from_settings(
        Settings(vars(project_settings))
    )


# -- the links one page can yield (nuke_crawl.extraction) -------------------------------


def _flood(vehicles: int, pages: int) -> str:
    cars = "".join(
        f'<li><a href="/vehicle/{i}/2015-ford-mustang-gt">2015 Ford Mustang GT</a></li>'
        for i in range(vehicles)
    )
    nav = " ".join(f'<a href="/inventory?page={n}">{n}</a>' for n in range(2, pages + 2))
    return (
        f"<html><head><title>Inventory</title></head><body><h1>Used cars</h1><ul>{cars}"
        f"</ul><nav>{nav}</nav></body></html>"
    )


def test_one_page_yields_at_most_the_capped_links_in_page_order() -> None:
    from nuke_crawl.extraction.extract import MAX_NEXT_PAGES, MAX_VEHICLE_LINKS, extract_page

    url = "https://dealer.example/inventory?page=1"
    result = extract_page(_flood(MAX_VEHICLE_LINKS + 50, MAX_NEXT_PAGES + 50), url)
    assert len(result.vehicle_links) == MAX_VEHICLE_LINKS
    assert result.vehicle_links[0] == "https://dealer.example/vehicle/0/2015-ford-mustang-gt"
    assert result.vehicle_links[-1].endswith(
        f"/vehicle/{MAX_VEHICLE_LINKS - 1}/2015-ford-mustang-gt"
    )
    assert result.next_pages == [
        f"https://dealer.example/inventory?page={n}" for n in range(2, MAX_NEXT_PAGES + 2)
    ]
    assert result.skip_reason == "inventory_page"


def test_links_beyond_max_page_links_are_not_read() -> None:
    """The flood of the issue (vehicle links, then page links): only the first
    MAX_PAGE_LINKS anchors are read, so the page numbers after them are not seen."""
    from nuke_crawl.extraction.extract import MAX_VEHICLE_LINKS, extract_page
    from nuke_crawl.extraction.page import MAX_PAGE_LINKS, Page

    html = _flood(MAX_PAGE_LINKS + 10, 10)
    page = Page(html, "https://dealer.example/inventory?page=1")
    assert len(page.anchors) == MAX_PAGE_LINKS
    assert page.anchors[-1][1].endswith(f"/vehicle/{MAX_PAGE_LINKS - 1}/2015-ford-mustang-gt")
    result = extract_page(html, "https://dealer.example/inventory?page=1")
    assert len(result.vehicle_links) == MAX_VEHICLE_LINKS and result.next_pages == []
