"""CPU and memory through psutil."""

from __future__ import annotations

import platform
import socket
import time

import psutil

from fleettui.wire import Cpu, Memory, NodeInfo


class HostCollector:
    """psutil's cpu_percent needs a previous call to measure against, so we keep one instance."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)
        self._boot = psutil.boot_time()

    def node_info(self, agent_version: str) -> NodeInfo:
        return NodeInfo(
            hostname=socket.gethostname(),
            os=f"{platform.system()} {platform.release()}",
            arch=platform.machine(),
            agent_version=agent_version,
            uptime_s=round(max(0.0, time.time() - self._boot), 1),
        )

    def cpu(self, problems: list[str]) -> Cpu:
        try:
            return Cpu(percent=psutil.cpu_percent(interval=None), cores=psutil.cpu_count())
        except Exception as exc:  # psutil raises many kinds on odd kernels
            problems.append(f"cpu: {exc}")
            return Cpu()

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
        )
