"""gn_det.utils.machine: the machine facts results are reported with, and peak RSS from /proc
and from a finished child's resource usage."""
import os
import subprocess
import sys

from gn_det.utils.machine import load_average, machine_info, peak_rss_mb


def test_machine_info_names_cpu_and_cores():
    info = machine_info()
    assert info["cpu"] and info["cores"] >= 1 and 1 <= info["usable_cores"] <= info["cores"]
    assert info["torch_threads"] >= 1
    assert info["torch"] and isinstance(info["cuda"], bool)
    assert load_average() >= 0


def test_peak_rss_of_a_live_child_and_of_a_finished_one():
    """A child that allocates ~200 MB and frees it: its VmHWM while alive is its own peak; its
    ru_maxrss from os.wait4 after it ended is at least that (an upper bound: a forked child's
    count starts from its parent's peak)."""
    code = ("import sys; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "del b; sys.stdin.readline()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        live = None
        while live is None or live < 200:
            live = peak_rss_mb(proc.pid)
            if proc.poll() is not None:
                break
        assert 200 <= live < 300
    finally:
        proc.stdin.write(b"\n")
        proc.stdin.close()
    _, _, usage = os.wait4(proc.pid, 0)
    assert peak_rss_mb(proc.pid) is None or peak_rss_mb(proc.pid) < 200  # gone from /proc
    assert peak_rss_mb(proc.pid, usage=usage) >= live
    assert peak_rss_mb() >= 50  # this process: torch is loaded
