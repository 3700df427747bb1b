"""CPU and memory through psutil."""

from __future__ import annotations

import platform
import socket
import time
from pathlib import Path

import psutil

from fleettui.agent.collect.bounds import bounded, measured
from fleettui.wire import Cpu, Memory, NodeInfo

PSI_MEMORY = Path("/proc/pressure/memory")


class HostCollector:
    """psutil's cpu_percent needs a previous call to measure against, so we keep one instance."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)
        self.problems: list[str] = []  # the boot time's, read once
        self.boot_time: float | None = bounded(
            NodeInfo, "boot_time", psutil.boot_time(), "host", self.problems
        )

    def node_info(self, agent_version: str) -> NodeInfo:
        boot = self.boot_time
        return NodeInfo(
            hostname=socket.gethostname(),
            os=f"{platform.system()} {platform.release()}",
            arch=platform.machine(),
            agent_version=agent_version,
            uptime_s=round(max(0.0, time.time() - boot), 1) if boot is not None else 0.0,
            boot_time=round(boot, 1) if boot is not None else None,
        )

    def cpu(self, problems: list[str]) -> Cpu:
        problems.extend(self.problems)
        try:
            percent, cores = psutil.cpu_percent(interval=None), psutil.cpu_count()
        except Exception as exc:  # psutil raises many kinds on odd kernels
            problems.append(f"cpu: {exc}")
            return Cpu()
        return Cpu(**measured(Cpu, "cpu", problems, percent=percent, cores=cores))

    @staticmethod
    def memory_stall_s(path: Path = PSI_MEMORY) -> float | None:
        """PSI's `some total` (microseconds any task waited for memory), where the kernel has
        PSI; None elsewhere (macOS, kernels without CONFIG_PSI)."""
        try:
            for line in path.read_text().splitlines():
                if line.startswith("some "):
                    fields = dict(f.split("=", 1) for f in line.split()[1:])
                    return int(fields["total"]) / 1e6
        except (OSError, ValueError, KeyError):
            return None
        return None

    def memory(self, problems: list[str]) -> Memory:
        try:
            vm = psutil.virtual_memory()
        except Exception as exc:
            problems.append(f"memory: {exc}")
            return Memory()
        mb = 1024 * 1024
        try:
            used = vm.total - vm.available
            total_mb, used_mb = round(vm.total / mb, 1), round(used / mb, 1)
            pressure = round(100.0 * used / vm.total, 1) if vm.total else None
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            problems.append(f"memory: odd figures from psutil: {exc}")
            total_mb = used_mb = pressure = None
        return Memory(
            **measured(
                Memory,
                "memory",
                problems,
                total_mb=total_mb,
                used_mb=used_mb,
                pressure_pct=pressure,
                stall_s_total=self.memory_stall_s(),
            )
        )
