"""The org crawl's selector learning (issue 13): when an organization's detail pages give
no vehicle, one trimmed page goes to an OpenAI-compatible model, once per site, for CSS
selectors in the ``metadata.selectors`` shape; they are kept only if they give year and
make on two other detail pages of the site, then stored on the organization
(``metadata.selectors`` and ``metadata.selectors_learned``: ``learned_at``, ``model``) so
later crawls use them without a call. Learned selectors that stop working (detail pages
giving no vehicle while nothing else was found) are dropped and learned again.

Settings: ``NUKE_LEARN_SELECTORS`` (off by default), ``NUKE_LEARN_MAX_CALLS`` (model calls
a run may make, over all organizations), ``NUKE_LEARN_MODEL`` (default
``NUKE_OPENAI_MODEL``), ``NUKE_OPENAI_TIMEOUT``; ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``
from the settings or the environment (the key is never logged).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nuke_crawl import settings as defaults
from nuke_crawl.db.connection import Database, Json, loads_json
from nuke_crawl.extraction.learn import (
    parse_selectors,
    selector_messages,
    selectors_read,
    trim_page,
    verify_selectors,
)
from nuke_crawl.extraction.urls import looks_like_vehicle_url

logger = logging.getLogger(__name__)

SAMPLES = 3  # one page shown to the model, two to verify on
MAX_SAMPLES = 10  # unread pages kept per organization, to be read again once learned
FAILURES_TO_DROP = 3  # detail pages in a row the learned selectors could not read
_NO_VEHICLE = ("missing_year_make", "not_a_listing")


@dataclass
class _OrgState:
    samples: list[tuple[str, str]] = field(default_factory=list)  # (html, url)
    tried: bool = False  # one call per organization and run
    pending: bool = False  # the call is in flight: pages meanwhile wait with the samples
    learned_now: bool = False  # learned in this run: pages read without them are re-read
    failures: int = 0


def save_selectors(
    db: Database, org_id: str, selectors: dict[str, str] | None, learned: dict[str, Any] | None
) -> None:
    """Store (or, with ``None``, drop) learned selectors on the organization."""
    with db.transaction():
        row = db.fetchone("SELECT metadata FROM businesses WHERE id = ?", [org_id])
        if row is None:
            return
        meta = loads_json(row["metadata"]) or {}
        if selectors is None:
            meta.pop("selectors", None)
            meta.pop("selectors_learned", None)
        else:
            meta["selectors"] = selectors
            meta["selectors_learned"] = learned
        db.execute(
            "UPDATE businesses SET metadata = ?, updated_at = ? WHERE id = ?",
            [Json(meta), db.now(), org_id],
        )


class SelectorLearner:
    """Per-run learning state; :meth:`from_settings` gives None when learning is off or no
    endpoint is configured."""

    def __init__(
        self, *, api_key: str, base_url: str | None, model: str, max_calls: int, timeout: float
    ) -> None:
        self.api_key, self.base_url, self.model = api_key, base_url, model
        self.max_calls, self.timeout = max_calls, timeout
        self.calls = 0
        self.orgs: dict[str, _OrgState] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> SelectorLearner | None:
        if not settings.getbool("NUKE_LEARN_SELECTORS", defaults.NUKE_LEARN_SELECTORS):
            return None

        def read(name: str) -> str | None:
            return settings.get(name) or os.environ.get(name) or None

        api_key = read("OPENAI_API_KEY")
        if api_key is None:
            logger.warning(
                "NUKE_LEARN_SELECTORS is on but OPENAI_API_KEY is not set: "
                "no selectors will be learned"
            )
            return None
        return cls(
            api_key=api_key,
            base_url=read("OPENAI_BASE_URL"),
            model=read("NUKE_LEARN_MODEL")
            or read("NUKE_OPENAI_MODEL")
            or defaults.NUKE_OPENAI_MODEL,
            max_calls=settings.getint("NUKE_LEARN_MAX_CALLS", defaults.NUKE_LEARN_MAX_CALLS),
            timeout=settings.getfloat("NUKE_OPENAI_TIMEOUT", defaults.NUKE_OPENAI_TIMEOUT),
        )

    async def after_page(
        self,
        org: Any,
        vehicles_found: int,
        html: str,
        url: str,
        skip_reason: str | None,
        detail: bool,
        adb: Any,
    ) -> dict[str, str] | None:
        """Look at one page's outcome. Returns the selectors just learned (already set on
        ``org.metadata`` and stored) when this page completed a sample and they passed;
        the caller re-reads the samples with them (:meth:`samples`)."""
        meta = org.metadata
        learned = meta.get("selectors_learned")
        if meta.get("selectors") and not learned:
            return None  # selectors someone wrote: never second-guessed
        state = self.orgs.setdefault(org.id, _OrgState())
        if skip_reason not in _NO_VEHICLE or not (detail or looks_like_vehicle_url(url)):
            if learned and skip_reason is None:
                state.failures = 0
            return None
        if state.learned_now:
            # extracted before the selectors were learned (or still unreadable): read again
            state.samples.append((html, url))
            return meta.get("selectors")
        if state.pending:
            state.samples.append((html, url))
            return None
        state.samples.append((html, url))
        del state.samples[:-MAX_SAMPLES]  # the latest pages no rule could read
        if learned:
            state.failures += 1
            if state.failures < FAILURES_TO_DROP or vehicles_found:
                return None
            logger.info(
                "Learned selectors of %s stopped working: dropped, to be learned again", org.website
            )
            meta.pop("selectors", None)
            meta.pop("selectors_learned", None)
            if adb is not None:
                await adb.run(save_selectors, org.id, None, None)
        if state.tried or vehicles_found:
            return None
        if len(state.samples) < SAMPLES:
            return None
        state.tried = True
        if self.calls >= self.max_calls:
            state.samples = []
            logger.info(
                "NUKE_LEARN_MAX_CALLS (%d) reached: no selectors learned for %s",
                self.max_calls,
                org.website,
            )
            return None
        self.calls += 1
        state.pending = True
        try:
            selectors = await self._ask(state.samples[0])
        finally:
            state.pending = False
        if not selectors or not verify_selectors(selectors, state.samples[1:]):
            logger.info(
                "Selectors learned for %s did not read its pages: not kept (%s; checked on %s)",
                org.website,
                sorted(selectors),
                [u for _, u in state.samples[1:]],
            )
            state.samples = []
            return None
        info = {"learned_at": datetime.now(UTC).isoformat(), "model": self.model}
        state.learned_now = True
        meta["selectors"] = selectors
        meta["selectors_learned"] = info
        if adb is not None:
            await adb.run(save_selectors, org.id, selectors, info)
        logger.info(
            "Learned selectors for %s with %s: %s", org.website, self.model, sorted(selectors)
        )
        return selectors

    def samples(self, org_id: str) -> list[tuple[str, str]]:
        """The pages a learning used (to be read again with its selectors), once."""
        state = self.orgs.get(org_id)
        if state is None:
            return []
        out, state.samples = state.samples, []
        return out

    async def _ask(self, sample: tuple[str, str]) -> dict[str, str]:
        from openai import AsyncOpenAI, OpenAIError

        html, url = sample
        client = AsyncOpenAI(
            api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=2
        )
        try:
            reply = await client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=selector_messages(trim_page(html, url)),
                response_format={"type": "json_object"},
                temperature=0,
            )
        except OpenAIError as exc:
            logger.warning("Selector learning for %s failed: %s", url, type(exc).__name__)
            return {}
        finally:
            await client.close()
        content = reply.choices[0].message.content if reply.choices else None
        return parse_selectors(content)


__all__ = ["SelectorLearner", "save_selectors", "selectors_read"]
