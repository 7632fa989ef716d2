"""What a measurement must be read with: the CPU, cores, torch threads and versions, the load, and
a process's peak resident memory."""
import os
import platform
import resource
import sys
from typing import Dict, Optional, Union


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo, as lscpu prints it), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> float:
    """1-minute load average (nan where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")


def machine_info() -> Dict[str, object]:
    """CPU, cores, torch threads and versions, CUDA device and load average, for a results file."""
    import torch

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "cuda": torch.cuda.is_available(), "load_avg_1m": load_average()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def peak_rss_mb(pid: Union[int, str] = "self", usage=None) -> Optional[float]:
    """Peak resident memory in MB: the high-water mark (VmHWM) of a live process from /proc;
    else the kernel's ru_maxrss from `usage` (e.g. what os.wait4 returned for a finished child)
    or, for this process, from getrusage; None where neither is known."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    if usage is None and pid in ("self", os.getpid()):
        usage = resource.getrusage(resource.RUSAGE_SELF)
    if usage is None:
        return None
    return usage.ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)
