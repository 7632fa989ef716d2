"""How a benchmark's result reads against the targets it was written for: one line per target
with the measured ratio, its interval, the target and the verdict (MET / MISSED / UNRESOLVED)."""
from typing import Dict

from . import eval_speed
from . import export_speed as export_bench
from . import op_profile


def target_lines(name: str, result: Dict) -> list:
    """One line per target of the issue: measured ratio (with its interval where the benchmark
    gives one), target, and the verdict: MET / MISSED, or UNRESOLVED when the interval straddles
    the target (ratios where lower is better; e2e adds the CPU-time ratio)."""
    lines = []
    if name in ("gn", "ws"):
        for label, t in result.get("targets", {}).items():
            measured = t.get("max", t.get("summed"))
            how = "worst shape" if "max" in t else "all shapes summed"
            lines.append((f"{name} {label} ({how})", measured, t.get("ci"), t["target"], None))
    elif name == "e2e":
        for label, t in result.get("ratios", {}).items():
            cpu = (t["cpu_ratio"], t.get("cpu_ci")) if "cpu_ratio" in t else None
            lines.append((label, t["ratio"], t.get("ci"), t["target"], cpu))
    elif name == "eval":
        return eval_speed.target_lines(result)
    elif name == "gn_routes":
        for shape, row in result.get("rows", {}).items():
            for key in (k for k in row if k.startswith("ours_vs_") and not k.endswith("_ci")):
                lines.append((f"{shape} ours / {key[len('ours_vs_'):]}", row[key],
                              row[f"{key}_ci"], None, None))
    elif name == "precision":
        for label, t in result.get("ratios", {}).items():
            lines.append((label, t["ratio"], t["ci"], t["target"], None))
    elif name == "export":
        for label, t, target in export_bench.ratio_lines(result):
            lines.append((label, t["ratio"], [t["low"], t["high"]], target, None))
    out = []
    for label, measured, ci, target, cpu in lines:
        out.append(f"  {label}: {_with_ci(measured, ci)}"
                   + (f", CPU time {_with_ci(*cpu)}" if cpu is not None else "")
                   + (f" (target <= {target:.2f}x): {verdict(measured, ci, target)}"
                      if target is not None else " (no target): reported"))
    if name == "e2e":
        for label, t in result.get("noise_floor", {}).items():
            out.append(f"  noise floor, same network: {label}: 1.00 "
                       f"{'within' if t['contains_1'] else 'OUTSIDE'} [{t['ci'][0]:.3f}, "
                       f"{t['ci'][1]:.3f}] (CPU time: "
                       f"{'within' if t['cpu_contains_1'] else 'OUTSIDE'})")
    if name == "export_accuracy":
        for norm, row in result.get("rows", {}).items():
            if "skipped" in row:
                out.append(f"  {norm}: skipped ({row['skipped']})")
                continue
            for what in next(iter(row.values())):
                cells = [cell[what] for cell in row.values()]
                out.append(f"  {norm} {what}: max |dbox| "
                           f"{max(c['max_box_px'] for c in cells):.2g} px "
                           f"({max(c['max_box_rel'] for c in cells):.2g} x box size), max "
                           f"|dscore| {max(c['max_score'] for c in cells):.2g}; matched "
                           f"{sum(c['matched'] for c in cells)}/"
                           f"{sum(c['reference'] for c in cells)}")
    if name == "precision_profile":
        out.extend(op_profile.shares_table(result).splitlines())
    if name == "export" and "callgrind" in result:
        cg = result["callgrind"]
        out.append(f"  export callgrind {cg['model']} {cg['size']}: eager GN+WS folded / eager "
                   f"GN-all instructions per image: {cg['folded_vs_gn_all']:.4f}x (target <= "
                   f"1.00x): {'MET' if cg['folded_vs_gn_all'] <= 1.0 else 'MISSED'}")
    return out


def _with_ci(measured: float, ci) -> str:
    return f"{measured:.3f}x" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def verdict(measured: float, ci, target: float) -> str:
    """MET / MISSED from the interval when there is one (UNRESOLVED if it straddles the target),
    else from the measured value."""
    if not ci:
        return "MET" if measured <= target else "MISSED"
    if ci[1] <= target:
        return "MET"
    return "MISSED" if ci[0] > target else "UNRESOLVED"


