"""Whole-machine ("wall") power from the board's BMC: IPMI DCMI or a Redfish chassis.

GPUs and RAPL leave out fans, disks, NICs and the power supply's losses; a BMC measures the
machine at its inlet. Where one is configured (`[wall_power]` in agent.toml) its reading is the
node's power and energy, scope `wall`, and the GPUs and CPU zones stay visible as parts. BMCs
give power, not energy, so the meter integrates their samples (a declared approximation).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from fleettui.agent.collect.energy import Reading

DCMI_RE = re.compile(r"Instantaneous power reading:\s*([0-9.]+)\s*Watts", re.I)
MAX_OUTPUT = 64 * 1024


def parse_dcmi(text: str) -> float:
    """Watts from `ipmitool dcmi power reading` output; ValueError names what was missing."""
    m = DCMI_RE.search(text)
    if m is None:
        raise ValueError("no 'Instantaneous power reading' line (is DCMI power management on?)")
    return float(m.group(1))


def parse_redfish(doc: Any) -> float:
    """Watts from a Redfish Power resource (PowerControl[0].PowerConsumedWatts) or a newer
    EnvironmentMetrics / PowerSupply resource (PowerWatts.Reading)."""
    if isinstance(doc, dict):
        ctl = doc.get("PowerControl")
        if isinstance(ctl, list) and ctl and isinstance(ctl[0], dict):
            v = ctl[0].get("PowerConsumedWatts")
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        pw = doc.get("PowerWatts")
        if isinstance(pw, dict):
            v = pw.get("Reading")
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
    raise ValueError("no PowerControl[0].PowerConsumedWatts or PowerWatts.Reading in the answer")


class WallCollector:
    """One configured BMC; every failure is a problem line for this tick, never an exception."""

    def __init__(
        self,
        source: str,
        *,
        argv: list[str] | None = None,
        url: str | None = None,
        username: str | None = None,
        password_file: str | None = None,
        verify_tls: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        self.source = source
        self.argv = argv or ["ipmitool", "dcmi", "power", "reading"]
        self.url = url
        self.timeout_s = timeout_s
        self.problem: str | None = None
        auth = None
        if username is not None:
            try:
                password = Path(password_file).read_text().strip() if password_file else ""
            except OSError as exc:
                self.problem = f"wall power: password_file unreadable: {exc.strerror}"
                password = ""
            auth = httpx.BasicAuth(username, password)
        self._client = (
            httpx.Client(trust_env=False, verify=verify_tls, timeout=timeout_s, auth=auth)
            if source == "redfish"
            else None
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _watts(self) -> float:
        if self._client is not None:
            assert self.url is not None
            r = self._client.get(self.url, headers={"Accept": "application/json"})
            if r.status_code != 200:
                raise ValueError(f"HTTP {r.status_code}")
            if len(r.content) > MAX_OUTPUT:
                raise ValueError("answer too large")
            return parse_redfish(r.json())
        done = subprocess.run(
            self.argv, capture_output=True, timeout=self.timeout_s, check=False, text=True
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-200:].strip()
            raise ValueError(f"{self.argv[0]} exited {done.returncode}: {tail}")
        return parse_dcmi(done.stdout[:MAX_OUTPUT])

    def readings(self, problems: list[str]) -> list[Reading]:
        """Always one reading (watts None when the BMC failed), so the scope never changes. A
        figure no machine draws (negative, a megawatt) is dropped by the meter (bounds.py)."""
        try:
            if self.problem:
                raise ValueError(self.problem)
            watts: float | None = self._watts()
        except (
            OSError,
            ValueError,
            OverflowError,
            subprocess.SubprocessError,
            httpx.HTTPError,
        ) as exc:  # OverflowError: float() of a 400-digit integer
            problems.append(f"wall power ({self.source}): {exc}")
            watts = None
        return [Reading(name="wall", kind="wall", source=self.source, key="wall", watts=watts)]
