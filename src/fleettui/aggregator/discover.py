"""Listen on the local link for agents (and asiai nodes) that advertise over mDNS.

mDNS has no end of answers, so a browse is a fixed listening time. Whatever arrives is
untrusted: at most `mdns.MAX_ADVERTS` services are resolved, each check is `mdns.read_advert`,
and the reasons for skipped ones are kept to a few lines, so a machine that announces
thousands of odd services costs `fleet discover` its timeout and a count, nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from fleettui.mdns import ASIAI_TYPE, MAX_ADVERTS, SERVICE_TYPE, Advert, read_advert
from fleettui.textsafe import clean

RESOLVERS = 16  # services resolved at once
MAX_SKIPPED_LINES = 20


@dataclass
class Discovery:
    """What one browse heard: usable adverts by name, and what was not used and why."""

    adverts: dict[str, Advert] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    skipped_more: int = 0  # skipped beyond the lines kept
    overflow: int = 0  # announcements of services past the first MAX_ADVERTS: ignored

    def skip(self, reason: str) -> None:
        if len(self.skipped) < MAX_SKIPPED_LINES:
            self.skipped.append(reason)
        else:
            self.skipped_more += 1


def zeroconf_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("zeroconf") is None


async def browse(timeout_s: float) -> Discovery:
    """Listen for `timeout_s` seconds; every advert heard in that time, judged."""
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    found = Discovery()
    heard: set[tuple[str, str]] = set()
    send, receive = anyio.create_memory_object_stream[tuple[str, str]](MAX_ADVERTS)

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        key = (service_type, name)
        if state_change is ServiceStateChange.Removed or key in heard:
            return
        if len(heard) >= MAX_ADVERTS:
            found.overflow += 1
            return
        heard.add(key)
        send.send_nowait(key)  # never full: at most MAX_ADVERTS keys are ever sent

    async def resolve(
        zc: AsyncZeroconf, key: tuple[str, str], limit: anyio.CapacityLimiter
    ) -> None:
        service_type, name = key
        async with limit:
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(zc.zeroconf, 1500):
                found.skip(f"{clean(name[:80])}: did not answer its details")
                return
        advert = read_advert(
            service_type, name, info.port, info.parsed_addresses(), dict(info.properties)
        )
        if isinstance(advert, str):
            found.skip(advert)
        elif advert.name in found.adverts:
            found.skip(f"{advert.name}: advertised twice; the first one is listed")
        else:
            found.adverts[advert.name] = advert

    zc = AsyncZeroconf()
    try:
        browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE, ASIAI_TYPE], handlers=[on_change])
        limit = anyio.CapacityLimiter(RESOLVERS)
        with anyio.move_on_after(timeout_s):
            async with anyio.create_task_group() as tg:
                async for key in receive:
                    tg.start_soon(resolve, zc, key, limit)
        await browser.async_cancel()
    finally:
        send.close()
        receive.close()
        with anyio.CancelScope(shield=True):
            await zc.async_close()
    return found
