"""Typed spider arguments (nuke_crawl.params.SpiderArgs), with the org spider's."""

from __future__ import annotations

import uuid

import pytest

from nuke_crawl.params import PARSED, ArgumentError
from nuke_crawl.spiders.org import OrgArgs, OrgSpider


def test_org_arguments_are_typed_with_their_defaults() -> None:
    args = OrgArgs.parse({"limit": "3", "dry_run": "yes", "url": "example.com"}, "org")
    assert (args.limit, args.dry_run, args.url) == (3, True, "https://example.com")
    assert (args.threshold, args.offset, args.max_vehicles, args.business_type) == (
        10,
        0,
        500,
        None,
    )
    with pytest.raises(AttributeError):
        args.limit = 4  # type: ignore[misc]  # frozen
    assert args.as_dict()["limit"] == 3
    assert "limit (10): organizations per page" in OrgArgs.describe()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"limit": "0"}, "argument limit='0': must be at least 1"),
        ({"offset": "x"}, "argument offset='x': expected a whole number"),
        ({"organization_id": "nope"}, "argument organization_id='nope': expected a UUID"),
        ({"colour": "red"}, "unknown argument(s) for spider 'org': colour"),
    ],
)
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


def test_image_spiders_arguments_are_typed_and_parsed_once() -> None:
    from datetime import UTC, datetime

    from nuke_crawl.spiders.image_analysis import AnalysisArgs, ImageAnalysisSpider
    from nuke_crawl.spiders.image_backfill import BackfillArgs, ImageBackfillSpider

    args = BackfillArgs.parse(
        {"limit": "5", "created_after": "2026-01-31T12:00:00Z", "min_priority": "-3"},
        "image_backfill",
    )
    assert (args.limit, args.batch_size, args.max_images, args.min_priority) == (5, 10, 20, -3)
    assert args.created_after == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert not args.dry_run and not args.retry_failed
    spider = ImageBackfillSpider(**{PARSED: args, "limit": "not parsed again"})
    assert spider.args is args
    assert (
        ImageBackfillSpider(
            limit="5", created_after="2026-01-31T12:00:00Z", min_priority="-3", _job="abc"
        ).args
        == args
    )

    parsed = AnalysisArgs.parse({"providers": "local,local", "check": "1"}, "image_analysis")
    assert (parsed.limit, parsed.providers, parsed.check, parsed.image_ids) == (
        1000,
        ("local",),
        True,
        (),
    )
    assert ImageAnalysisSpider(**{PARSED: parsed}).args is parsed
    assert "limit (100): vehicles to process in this run" in BackfillArgs.describe()


def test_backfill_vehicle_ids_is_a_comma_list_of_uuids() -> None:
    from nuke_crawl.spiders.image_backfill import BackfillArgs, ImageBackfillSpider

    ids = [str(uuid.uuid4()) for _ in range(3)]
    given = f" {ids[0].upper()}, {ids[1]},,{ids[2]} "  # spaces, case, an empty item
    args = BackfillArgs.parse({"vehicle_ids": given}, "image_backfill")
    assert args.vehicle_ids == tuple(ids) and args.vehicle_id is None
    assert BackfillArgs.parse({}, "image_backfill").vehicle_ids == ()
    most = [str(uuid.UUID(int=i)) for i in range(1000)]  # the bound itself is accepted
    assert len(BackfillArgs.parse({"vehicle_ids": ",".join(most)}, "x").vehicle_ids) == 1000
    # carried to the claims' selection, next to vehicle_id
    spider = ImageBackfillSpider(vehicle_ids=",".join(ids), vehicle_id=ids[0])
    selection = spider._selection()
    assert (selection.vehicle_ids, selection.vehicle_id) == (tuple(ids), ids[0])


@pytest.mark.parametrize(
    ("spider", "given", "message"),
    [
        ("image_backfill", {"limit": "0"}, "argument limit='0': must be at least 1"),
        ("image_backfill", {"created_after": "soon"}, "created_after='soon': expected an ISO"),
        ("image_backfill", {"colour": "red"}, "unknown argument(s) for spider 'image_backfill'"),
        ("image_backfill", {"vehicle_ids": "1,2"}, "argument vehicle_ids='1': expected a UUID"),
        ("image_backfill", {"vehicle_ids": " , "}, "argument vehicle_ids: expected a comma list"),
        (
            "image_backfill",
            {"vehicle_ids": ",".join(str(uuid.UUID(int=i)) for i in range(1001))},
            "argument vehicle_ids: at most 1000 UUIDs (got 1001)",
        ),
        ("image_analysis", {"providers": "magic"}, "unknown provider(s) magic"),
        ("image_analysis", {"vehicle_ids": "1,2"}, "argument vehicle_ids='1': expected a UUID"),
        ("image_analysis", {"concurrency": "0"}, "argument concurrency='0': must be at least 1"),
        ("image_analysis", {"image_ids": " , "}, "argument image_ids: expected a comma list"),
    ],
)
def test_a_bad_image_spider_argument_is_refused_by_name(
    spider: str, given: dict[str, str], message: str
) -> None:
    from nuke_crawl.spiders.image_analysis import AnalysisArgs
    from nuke_crawl.spiders.image_backfill import BackfillArgs

    arguments = BackfillArgs if spider == "image_backfill" else AnalysisArgs
    with pytest.raises(ArgumentError) as refused:
        arguments.parse(given, spider)
    assert message in str(refused.value)
