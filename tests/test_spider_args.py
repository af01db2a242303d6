"""Typed spider arguments (nuke_crawl.spiders.args.SpiderArgs), with the org spider's."""

from __future__ import annotations

import pytest

from nuke_crawl.spiders.args import PARSED, ArgumentError
from nuke_crawl.spiders.org import OrgArgs, OrgSpider


def test_org_arguments_are_typed_with_their_defaults() -> None:
    args = OrgArgs.parse({"limit": "3", "dry_run": "yes", "url": "example.com"}, "org")
    assert (args.limit, args.dry_run, args.url) == (3, True, "https://example.com")
    assert (args.threshold, args.offset, args.max_vehicles, args.business_type) == (
        10, 0, 500, None)
    with pytest.raises(AttributeError):
        args.limit = 4  # type: ignore[misc]  # frozen
    assert args.as_dict()["limit"] == 3
    assert "limit (10): organizations per page" in OrgArgs.describe()


@pytest.mark.parametrize(("given", "message"), [
    ({"limit": "0"}, "argument limit='0': must be at least 1"),
    ({"offset": "x"}, "argument offset='x': expected a whole number"),
    ({"organization_id": "nope"}, "argument organization_id='nope': expected a UUID"),
    ({"colour": "red"}, "unknown argument(s) for spider 'org': colour"),
])
def test_a_bad_org_argument_is_refused_by_name(given: dict[str, str], message: str) -> None:
    with pytest.raises(ArgumentError) as refused:
        OrgArgs.parse(given, "org")
    assert message in str(refused.value)


def test_arguments_parsed_by_scrapy_crawl_are_not_parsed_again() -> None:
    parsed = OrgArgs.parse({"limit": "7"}, "org")
    spider = OrgSpider(**{PARSED: parsed, "limit": "not parsed again"})
    assert spider.args is parsed
    # without them (another runner, scrapyd's _job), the spider parses its own
    spider = OrgSpider(limit="7", _job="abc")
    assert spider.args == parsed
