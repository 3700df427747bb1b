"""CPU and memory through psutil."""

from __future__ import annotations

import platform
import socket
import time
from pathlib import Path

import psutil

from fleettui.wire import Cpu, Memory, NodeInfo

PSI_MEMORY = Path("/proc/pressure/memory")


class HostCollector:
    """psutil's cpu_percent needs a previous call to measure against, so we keep one instance."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)
        self.boot_time = psutil.boot_time()

    def node_info(self, agent_version: str) -> NodeInfo:
        return NodeInfo(
            hostname=socket.gethostname(),
            os=f"{platform.system()} {platform.release()}",
            arch=platform.machine(),
            agent_version=agent_version,
            uptime_s=round(max(0.0, time.time() - self.boot_time), 1),
            boot_time=round(self.boot_time, 1),
        )

    def cpu(self, problems: list[str]) -> Cpu:
        try:
            return Cpu(percent=psutil.cpu_percent(interval=None), cores=psutil.cpu_count())
        except Exception as exc:  # psutil raises many kinds on odd kernels
            problems.append(f"cpu: {exc}")
            return Cpu()

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
        used = vm.total - vm.available
        return Memory(
            total_mb=round(vm.total / mb, 1),
            used_mb=round(used / mb, 1),
            pressure_pct=round(100.0 * used / vm.total, 1) if vm.total else None,
            stall_s_total=self.memory_stall_s(),
        )
