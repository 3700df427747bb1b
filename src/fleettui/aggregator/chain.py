"""Remote verification of a node's hash-chained audit log.

The aggregator walks the chain from genesis once, then only fetches what is new, each time
re-reading the newest entry it verified (the pin) to check it is still there unchanged. Links
are verified on the raw JSON the agent sent, never on a re-serialised model, so a field this
version does not know cannot make a good chain look broken. Any break is sticky: a chain that
was tampered with does not heal because the next entries happen to link.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fleettui.aggregator.http import FetchError, NodeClient, get_capped
from fleettui.aggregator.state import ChainStatus
from fleettui.wire import GENESIS_HASH, AuditEntry, AuditHead, AuditPage, audit_hash

AUDIT_PATH = "/api/v1/audit"
PAGE = 200
RECENT = 50


class ChainBroken(Exception):
    """Evidence the log was altered, truncated or reordered."""


class ChainUnreadable(Exception):
    """The node answered with something that is not an audit page."""


@dataclass(frozen=True)
class Page:
    entries: list[tuple[dict[str, Any], AuditEntry]]
    head: AuditHead


def parse_page(body: bytes) -> Page:
    """Validate the page's shape and keep each entry's raw dict for hashing."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChainUnreadable(f"invalid JSON: {exc}") from None
    try:
        page = AuditPage.model_validate(obj)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "(page)"
        raise ChainUnreadable(f"not an audit page: {loc}: {e['msg']}") from None
    raw = obj["entries"]
    return Page(list(zip(raw, page.entries, strict=True)), page.head)


def check_link(raw: dict[str, Any], entry: AuditEntry, prev_seq: int, prev_hash: str) -> None:
    """One link: consecutive seq, prev_hash pointing at the previous entry, hash over the body."""
    if entry.seq != prev_seq + 1:
        if entry.seq <= prev_seq:
            raise ChainBroken(f"seq {entry.seq}: sequence went backwards (after seq {prev_seq})")
        raise ChainBroken(f"seq {prev_seq + 1}: missing or out of order (found seq {entry.seq})")
    if entry.prev_hash != prev_hash:
        raise ChainBroken(f"seq {entry.seq}: prev_hash does not match seq {prev_seq}")
    try:
        ok = audit_hash(raw) == entry.hash
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ChainBroken(f"seq {entry.seq}: hash mismatch (entry altered)")


class ChainVerifier:
    """Pinned state of one node's chain: the newest (seq, hash) verified so far."""

    def __init__(self) -> None:
        self.pin_seq = 0
        self.pin_hash = GENESIS_HASH
        self.status = ChainStatus.UNKNOWN
        self.detail: str | None = None
        self.recent: deque[AuditEntry] = deque(maxlen=RECENT)
        self.verified = False  # walked from genesis at least once

    def broken(self, why: str) -> None:
        self.status = ChainStatus.BROKEN
        self.detail = why

    def check_head(self, head: AuditHead) -> bool:
        """Compare an advertised head with the pin; returns whether a fetch is needed."""
        if self.status is ChainStatus.BROKEN:
            return False
        if not self.verified:
            return True
        if head.seq < self.pin_seq:
            self.broken(
                f"head seq {head.seq} is behind verified seq {self.pin_seq} (log truncated)"
            )
            return False
        if head.seq == self.pin_seq:
            if head.head_hash != self.pin_hash:
                self.broken(
                    f"seq {head.seq}: head hash differs from the verified entry (rewritten)"
                )
            return False
        return True

    async def sync(self, client: NodeClient, *, timeout_s: float, rescan: bool = False) -> None:
        """Fetch and verify everything after the pin (or from genesis when `rescan`).

        Sets status OK when the node's head is reached; BROKEN with the seq and why on a bad
        link; UNKNOWN when the node answers with no audit page. An unreachable node raises
        FetchError and leaves the status as it was.
        """
        if self.status is ChainStatus.BROKEN:
            return
        try:
            await self._walk(client, timeout_s=timeout_s, rescan=rescan or not self.verified)
        except ChainBroken as exc:
            self.broken(str(exc))
        except ChainUnreadable as exc:
            self.status, self.detail = ChainStatus.UNKNOWN, f"audit: {exc}"
        except FetchError as exc:
            if not exc.reachable:
                raise
            self.status, self.detail = ChainStatus.UNKNOWN, f"audit: {exc.reason}"

    async def _walk(self, client: NodeClient, *, timeout_s: float, rescan: bool) -> None:
        seq, hsh = (0, GENESIS_HASH) if rescan else (self.pin_seq, self.pin_hash)
        expect = (self.pin_seq, self.pin_hash) if rescan and self.verified else None
        recheck = not rescan and seq > 0  # first re-read the pinned entry itself
        after = seq - 1 if recheck else seq
        while True:
            body = await get_capped(
                client, AUDIT_PATH, params={"after": after, "limit": PAGE}, timeout_s=timeout_s
            )
            page = parse_page(body)
            entries = page.entries
            if recheck:
                if not entries or entries[0][1].seq != seq:
                    raise ChainBroken(f"seq {seq}: verified entry is gone (history rewritten)")
                raw, first = entries[0]
                if first.hash != hsh or audit_hash(raw) != hsh:
                    raise ChainBroken(f"seq {seq}: differs from the verified entry (rewritten)")
                entries = entries[1:]
                recheck = False
            for raw, entry in entries:
                check_link(raw, entry, seq, hsh)
                if expect is not None and entry.seq == expect[0] and entry.hash != expect[1]:
                    raise ChainBroken(
                        f"seq {entry.seq}: differs from the entry verified earlier (rewritten)"
                    )
                seq, hsh = entry.seq, entry.hash
                self.recent.append(entry)
            head = page.head
            if expect is None or seq >= expect[0]:  # a rescan moves the pin only once past it
                self.pin_seq, self.pin_hash = seq, hsh
            if head.seq < seq:
                raise ChainBroken(f"head seq {head.seq} is behind verified seq {seq}")
            if head.seq == seq:
                if head.head_hash != hsh:
                    raise ChainBroken(f"seq {seq}: head hash does not match the entry served")
                if expect is not None and seq < expect[0]:
                    raise ChainBroken(
                        f"log ends at seq {seq}, before verified seq {expect[0]} (truncated)"
                    )
                self.verified = True
                self.status = ChainStatus.OK
                self.detail = f"verified through seq {seq}" if seq else "empty log"
                return
            if not entries:
                raise ChainBroken(f"head is seq {head.seq} but no entries are served after {seq}")
            after = seq
