"""Remote verification of a node's hash-chained audit log against a pin that lasts.

The first check walks the chain from genesis; after that the aggregator only extends it: it
re-reads the newest entry it verified (the pin) and verifies what is new. Since a node can edit
any line without touching the others, the older part is re-read too, a few pages per check: a
sweep rotates through the log one checkpoint gap (one page) at a time, each page verified link
by link from one pinned checkpoint hash to the next, so every entry is read again within a
bounded time (docs/aggregator.md has the formula). The pin, the checkpoints and any break live
in a `Pin` that `pins.PinStore` persists, so a later `fleet status` or dashboard starts from them.
A one-shot (`fleet status`) does the tail and the SPOT_PAGES pages verified longest ago (the pin
records when each was), so its cost is bounded at any log size and repeated runs (cron) still
pass over the whole log: every page within ceil(pages / SPOT_PAGES) runs.

Links are verified on the raw JSON the agent sent, never on a re-serialised model, so a field this
version does not know cannot make a good chain look broken. A break is sticky: a chain that was
tampered with does not heal because the next entries happen to link.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fleettui.aggregator.pins import CHECKPOINT_EVERY, Pin
from fleettui.aggregator.state import ChainStatus
from fleettui.aggregator.transport.client import NodeClient
from fleettui.aggregator.transport.errors import FetchError
from fleettui.wire import GENESIS_HASH, AuditEntry, AuditHead, audit_hash

AUDIT_PATH = "/api/v1/audit"
PAGE = CHECKPOINT_EVERY
SWEEP_MAX_PAGES = 10  # per check: at most 2000 entries re-read per node per chain_recheck_s
SPOT_PAGES = 10  # a one-shot's share of the older log: 2000 entries, ~0.1 s a node
ALL_PAGES = sys.maxsize  # `sweep=ALL_PAGES`: every page (`--full-audit`)
MAX_INT_DIGITS = 30  # a seq, ts or status code never needs more; longer is tampering


class ChainBroken(Exception):
    """Evidence the log was altered, truncated or reordered."""


class ChainUnreadable(Exception):
    """The node answered with something that is not an audit page."""


@dataclass(frozen=True)
class HugeInt:
    """Stands in for an integer too long to convert (Python refuses 4300+ digits)."""

    digits: int


@dataclass(frozen=True)
class Page:
    # each entry's raw dict (hashed as sent) and its model, or why it is not an audit entry
    entries: list[tuple[Any, AuditEntry | str]]
    head: AuditHead


def _entry(raw: Any, huge: bool) -> AuditEntry | str:
    if not isinstance(raw, dict):
        return "not a JSON object"
    for key, value in raw.items() if huge else ():
        if isinstance(value, HugeInt):
            return f"{key}: an integer of {value.digits} digits"
    try:
        return AuditEntry.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}"


def parse_page(body: bytes) -> Page:
    """Validate the page's shape; each entry is checked where the walk reaches it, so a bad
    entry is evidence at its seq, not an unreadable page."""
    huge: list[HugeInt] = []

    def parse_int(text: str) -> int | HugeInt:
        if len(text) <= MAX_INT_DIGITS:
            return int(text)
        huge.append(HugeInt(len(text)))
        return huge[-1]

    try:
        obj = json.loads(body, parse_int=parse_int)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChainUnreadable(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("entries"), list):
        raise ChainUnreadable("not an audit page: entries: missing or not a list")
    head = obj.get("head")
    if isinstance(head, dict) and any(isinstance(v, HugeInt) for v in head.values()):
        raise ChainUnreadable("not an audit page: head: an integer too long to be a seq")
    try:
        parsed_head = AuditHead.model_validate(head)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in ("head", *e["loc"]))
        raise ChainUnreadable(f"not an audit page: {loc}: {e['msg']}") from None
    return Page([(raw, _entry(raw, bool(huge))) for raw in obj["entries"]], parsed_head)


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


def _valid(raw: Any, entry: AuditEntry | str, seq: int) -> AuditEntry:
    if isinstance(entry, str):
        raise ChainBroken(f"seq {seq}: the entry served there is not an audit entry ({entry})")
    return entry


class ChainVerifier:
    """One node's chain as this process checks it, over a `Pin` that may come from disk.

    Status: BROKEN when the pin records a break (ours or another process's, sticky) or while
    the agent itself reports its log damaged; otherwise the outcome of the last check (OK, or
    UNKNOWN when the node answered with no audit page).
    """

    def __init__(self, pin: Pin | None = None, *, key: str = "") -> None:
        self.pin = pin or Pin(key=key)
        self.checked = ChainStatus.UNKNOWN
        self.check_detail: str | None = None
        self.agent_problem: str | None = None  # what the agent's snapshot says of its log
        self.store_problem: str | None = None  # the pin file cannot be used (not saved to)
        self.save_problem: str | None = None  # the pin cannot be written (checks still count)
        self.dirty = False  # the pin moved since it was last saved
        self.cursor = random.randrange(1 << 30)  # where the sweep resumes (per process)
        # pages of the sweep due (see sweep_due); a random start spreads a fleet's page reads
        self.credit = random.random()
        self.credit_at: float | None = None

    # -- status
    @property
    def status(self) -> ChainStatus:
        if self.pin.broken or self.agent_problem:
            return ChainStatus.BROKEN
        if self.store_problem:
            return ChainStatus.UNKNOWN
        return self.checked

    @property
    def detail(self) -> str | None:
        if self.pin.broken:
            return self.pin.broken
        if self.agent_problem:
            return f"the agent reports its audit log damaged: {self.agent_problem}"
        detail = self.store_problem or self.check_detail
        if self.save_problem and detail:
            return f"{detail}; {self.save_problem}"
        return detail or self.save_problem

    def broken(self, why: str) -> None:
        if not self.pin.broken:
            self.pin.broken = why
            self.dirty = True

    def adopt(self, pin: Pin, *, reset: bool) -> None:
        """Take the merged (or, after a forget, the new) pin from the store."""
        self.pin = pin
        if reset:
            self.checked, self.check_detail = ChainStatus.UNKNOWN, None

    def check_head(self, head: AuditHead) -> bool:
        """Compare an advertised head with the pin; returns whether a fetch is needed."""
        if self.pin.broken:
            return False
        if self.pin.epoch is not None or self.pin.seq > 0:  # something is pinned
            if head.seq < self.pin.seq:
                self.broken(
                    f"head seq {head.seq} is behind verified seq {self.pin.seq} (log truncated)"
                )
                return False
            if head.seq == self.pin.seq and head.head_hash != self.pin.hash:
                self.broken(
                    f"seq {head.seq}: head hash differs from the verified entry (rewritten)"
                )
                return False
        return self.checked is not ChainStatus.OK or head.seq != self.pin.seq

    def sweep_due(self, now: float, rescan_s: float) -> int:
        """Pages of the older log to re-read at this check: they fall due at S pages per
        rescan_s, so the round robin passes over every page once per rescan_s; at most
        SWEEP_MAX_PAGES a check."""
        segments = math.ceil(self.pin.seq / PAGE)
        if self.credit_at is not None:
            self.credit += segments * (now - self.credit_at) / rescan_s
        self.credit_at = now
        self.credit = min(self.credit, float(segments))
        return min(SWEEP_MAX_PAGES, int(self.credit))

    def next_due(self, rescan_s: float) -> float:
        """When (monotonic) the next sweep page falls due; inf while nothing is pinned."""
        segments = math.ceil(self.pin.seq / PAGE)
        if not segments or self.credit_at is None:
            return math.inf
        return self.credit_at + max(0.0, 1.0 - self.credit) * rescan_s / segments

    # -- checking
    async def sync(
        self, client: NodeClient, *, timeout_s: float, sweep: int | None = None, tail: bool = True
    ) -> None:
        """Extend the pin to the node's head (unless `tail` is False: a check only for pages
        of the sweep that fell due), then re-read `sweep` pages of the older log round robin
        (a running view's share, see `sweep_due`; ALL_PAGES: all of them) or, with None, as a
        one-shot does, the SPOT_PAGES verified longest ago (`stalest`).

        BROKEN with the seq and why on any bad link or a mismatch with the pin; UNKNOWN when
        the node answers with no audit page. An unreachable node raises FetchError and leaves
        the status as it was.
        """
        if self.pin.broken:
            return
        try:
            fresh = self.pin.seq == 0  # the tail walks the whole log: nothing to sweep
            if tail or fresh:
                await self._tail(client, timeout_s)
            if fresh:
                return
            segments = math.ceil(self.pin.seq / PAGE)
            if sweep is None:
                for i in self.stalest(SPOT_PAGES, segments):
                    await self._segment(client, timeout_s, i)
                    # saved, so the next run goes on from here; a log this run read whole
                    # needs no save (1 ms a node, fsync'd)
                    self.dirty = self.dirty or segments > SPOT_PAGES
                return
            for _ in range(min(sweep, segments)):
                await self._segment(client, timeout_s, self.cursor % segments)
                self.cursor = (self.cursor % segments) + 1
                self.credit = max(0.0, self.credit - 1)
        except ChainBroken as exc:
            self.broken(str(exc))
        except ChainUnreadable as exc:
            self.checked, self.check_detail = ChainStatus.UNKNOWN, f"audit: {exc}"
        except FetchError as exc:
            if not exc.reachable:
                raise
            self.checked, self.check_detail = ChainStatus.UNKNOWN, f"audit: {exc.reason}"

    def stalest(self, k: int, segments: int) -> list[int]:
        """The `k` pages verified longest ago by any process sharing the pin (never first,
        then by seq), so consecutive one-shots cover the log a share at a time."""
        cps, swept = self.pin.checkpoints, self.pin.swept
        pages = (i for i in range(segments) if i == 0 or i * PAGE in cps)  # else unverifiable
        return heapq.nsmallest(k, pages, key=lambda i: (swept.get(i * PAGE, 0.0), i))

    async def _page(self, client: NodeClient, after: int, timeout_s: float) -> Page:
        body = await client.get(
            AUDIT_PATH, params={"after": after, "limit": PAGE}, timeout_s=timeout_s
        )
        return parse_page(body)

    def _passed(self, seq: int, hsh: str) -> None:
        """A verified entry: it must match what the pin holds for its seq; new checkpoints and
        the pin itself move forward."""
        known = self.pin.known(seq)
        if known is not None and known != hsh:
            raise ChainBroken(f"seq {seq}: differs from the entry verified earlier (rewritten)")
        if seq % CHECKPOINT_EVERY == 0 and known is None:
            self.pin.checkpoints[seq] = hsh
            self.dirty = True

    async def _tail(self, client: NodeClient, timeout_s: float) -> None:
        """Re-read the pinned entry, then verify every entry after it up to the head."""
        seq, hsh = self.pin.seq, self.pin.hash
        covered = -(-seq // PAGE) * PAGE  # pages from here on are walked whole: marked swept
        after = seq - 1 if seq > 0 else 0
        page = await self._page(client, after, timeout_s)
        entries = page.entries
        if seq > 0:
            if not entries:
                raise ChainBroken(f"seq {seq}: verified entry is gone (history rewritten)")
            raw, first = entries[0]
            first = _valid(raw, first, seq)
            if first.seq != seq:
                raise ChainBroken(f"seq {seq}: verified entry is gone (history rewritten)")
            try:
                same = first.hash == hsh and audit_hash(raw) == hsh
            except (TypeError, ValueError):
                same = False
            if not same:
                raise ChainBroken(f"seq {seq}: differs from the verified entry (rewritten)")
            entries = entries[1:]
        while True:
            for raw, entry in entries:
                entry = _valid(raw, entry, seq + 1)
                check_link(raw, entry, seq, hsh)
                seq, hsh = entry.seq, entry.hash
                self._passed(seq, hsh)
            if seq != self.pin.seq:
                self.pin.seq, self.pin.hash = seq, hsh
                self.dirty = True
            head = page.head
            if head.seq < seq:
                raise ChainBroken(f"head seq {head.seq} is behind verified seq {seq}")
            if head.seq == seq:
                if head.head_hash != hsh:
                    raise ChainBroken(f"seq {seq}: head hash does not match the entry served")
                self.checked = ChainStatus.OK
                self.check_detail = f"verified through seq {seq}" if seq else "empty log"
                now = time.time()
                self.pin.swept.update(dict.fromkeys(range(covered, seq, PAGE), now))
                return
            if not entries:
                raise ChainBroken(f"head is seq {head.seq} but no entries are served after {seq}")
            page = await self._page(client, seq, timeout_s)
            entries = page.entries

    async def _segment(self, client: NodeClient, timeout_s: float, i: int) -> None:
        """Re-verify seqs (i*PAGE, (i+1)*PAGE] (the last gap ends at the pin): one page, every
        link, from one pinned hash to the next. Any edit, deletion, insertion or reorder in
        the gap breaks a link or lands a different hash on the far checkpoint."""
        start = i * PAGE
        end = min(start + PAGE, self.pin.seq)
        start_hash = GENESIS_HASH if start == 0 else self.pin.checkpoints.get(start)
        if start_hash is None:  # a pin from before that checkpoint existed: walked next time
            return
        page = await self._page(client, start, timeout_s)
        seq, hsh = start, start_hash
        for raw, entry in page.entries:
            entry = _valid(raw, entry, seq + 1)
            check_link(raw, entry, seq, hsh)
            seq, hsh = entry.seq, entry.hash
            self._passed(seq, hsh)
            if seq == end:
                self.pin.swept[start] = time.time()
                return
        raise ChainBroken(
            f"seq {seq + 1}: missing (the log served ends at seq {seq}, "
            f"before verified seq {self.pin.seq}: truncated or entries deleted)"
        )
