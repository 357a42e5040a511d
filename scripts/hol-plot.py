#!/usr/bin/env python3
"""Plots of the head-of-line benchmark (scripts/bench-hol.sh).

    hol-plot.py RESULTS_DIR OUT.png [LABEL ...]

RESULTS_DIR holds one LABEL.json per mode (written by `hol run`). OUT.png gets the probe
latency distributions side by side (strip + box per mode and phase, with the echo limit), and
beside it (OUT with "latency" replaced by "timeline", or "-timeline" added) gets the loaded window's probes over time,
and ("yield" in place of "latency") the heavy lane's sending rate, pacing rate and measured
path delay over the loaded window of each mode that recorded them, above its /health probes.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pct(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    i = max(1, min(len(v), int(-(-q * len(v) // 1))))
    return v[i - 1]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rdir, out = sys.argv[1], sys.argv[2]
    labels = sys.argv[3:] or ["shared", "bulkhead"]
    runs = {}
    for label in labels:
        with open(os.path.join(rdir, label + ".json")) as f:
            runs[label] = json.load(f)
    deadline = next(iter(runs.values()))["args"]["deadline_ms"]

    groups = []  # (name, values ms, misses, colour)
    colours = {"shared": "#d62728", "bulkhead": "#1f77b4", "yield": "#9467bd"}
    for label, run in runs.items():
        for phase in run["phases"]:
            h = [s["ms"] for s in phase["health"]]
            misses = sum(1 for s in phase["health"] if not s["ok"])
            groups.append((f"/health\n{label}\n{phase['name']}", h, misses, colours.get(label, "gray")))
    for label, run in runs.items():
        for phase in run["phases"]:
            if phase["name"] != "loaded":
                continue
            e = [s["rtt_ms"] if s.get("rtt_ms") is not None else 5000.0 for s in phase["echo"]]
            groups.append((f"TCP echo\n(fresh conn.)\n{label} loaded", e, 0, "#2ca02c"))

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, vals, misses, colour) in enumerate(groups):
        jitter = [(i + 1) + ((k * 0.6180339) % 1 - 0.5) * 0.5 for k in range(len(vals))]
        ax.scatter(jitter, vals, s=4, alpha=0.35, color=colour, linewidths=0)
        ax.boxplot([vals], positions=[i + 1], widths=0.6, whis=(1, 99), showfliers=False,
                   medianprops={"color": "black"})
        p50, p99 = pct(vals, 0.5), pct(vals, 0.99)
        text = f"p50 {p50:.0f}\np99 {p99:.0f}"
        if misses:
            text += f"\n{misses} miss"
        ax.annotate(text, (i + 1, max(vals) if vals else 1), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.axhline(deadline, color="gray", linestyle="--", linewidth=1)
    ax.text(0.55, deadline * 1.08, f"deadline {deadline} ms", color="gray", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.3, max(6000, deadline * 6))
    ax.set_xticks(range(1, len(groups) + 1))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("Realtime probe latency: idle vs under 8 × 8 MB uploads (box: p1–p99, line: p50)")

    # Right: complementary CDF of the loaded window.
    for label, run in runs.items():
        for phase in run["phases"]:
            if phase["name"] != "loaded":
                continue
            for what, vals, style in (
                ("/health", [s["ms"] for s in phase["health"]], "-"),
                ("echo", [s["rtt_ms"] if s.get("rtt_ms") is not None else 5000.0 for s in phase["echo"]], ":"),
            ):
                v = sorted(vals)
                n = len(v)
                if not n:
                    continue
                ax2.step(v, [1 - k / n for k in range(n)], where="post", linestyle=style,
                         color=colours.get(label, "gray") if what == "/health" else
                         ("#2ca02c" if label == "bulkhead" else "#98df8a"),
                         label=f"{what} ({label})")
    ax2.axvline(deadline, color="gray", linestyle="--", linewidth=1)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_ylim(1e-3, 1.05)
    ax2.axhline(0.01, color="lightgray", linewidth=1)
    ax2.text(0.5, 0.011, "p99", color="gray", fontsize=8)
    ax2.set_xlabel("latency, ms (log)")
    ax2.set_ylabel("fraction of probes slower (log)")
    ax2.set_title("Loaded window: share of probes slower than x")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)

    # Timeline of the loaded window.
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for label, run in runs.items():
        for phase in run["phases"]:
            if phase["name"] != "loaded":
                continue
            ax.scatter([s["t"] for s in phase["health"]], [s["ms"] for s in phase["health"]],
                       s=6, color=colours.get(label, "gray"), label=f"/health ({label})", alpha=0.7)
            ax.scatter([s["t"] for s in phase["echo"]],
                       [s["rtt_ms"] if s.get("rtt_ms") is not None else 5000.0 for s in phase["echo"]],
                       s=4, marker="x", color="#2ca02c" if label == "bulkhead" else "#98df8a",
                       label=f"echo ({label} run)", alpha=0.6)
    ax.axhline(deadline, color="gray", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the loaded window")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("Probes over time under load")
    ax.legend(fontsize=8, ncol=4, loc="lower right")
    fig.tight_layout()
    base, ext = os.path.splitext(out)
    timeline = base.replace("latency", "timeline") if "latency" in base else base + "-timeline"
    fig.savefig(timeline + ext, dpi=110)

    # The heavy lane's sending rate against the delay its pacer measured.
    paced = [(label, phase) for label, run in runs.items() for phase in run["phases"]
             if phase["name"] == "loaded"
             and any(p["sent_bytes"] for p in phase.get("heavy_timeline", []))]
    if not paced:
        return
    fig, axes = plt.subplots(2, len(paced), figsize=(7 * len(paced), 7), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for col, (label, phase) in enumerate(paced):
        tl = phase["heavy_timeline"]
        t = [p["t"] for p in tl[1:]]
        # Sent over the last 0.5 s (5 scrapes): one scrape's increase is mostly h2's bursts.
        sent = [(tl[i]["sent_bytes"] - tl[max(0, i - 5)]["sent_bytes"])
                / max(1e-3, tl[i]["t"] - tl[max(0, i - 5)]["t"]) * 8 / 1e6
                for i in range(1, len(tl))]
        pace = [p["pacing_rate"] * 8 / 1e6 for p in tl[1:]]
        delay = [p["path_delay_s"] * 1e3 for p in tl[1:]]
        ax = axes[0][col]
        ax.plot(t, sent, color="#1f77b4", linewidth=1, label="heavy lane sent (0.5 s average), Mbit/s")
        if any(pace):
            ax.plot(t, pace, color="#ff7f0e", linewidth=1, label="pacing rate, Mbit/s (0: none)")
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{label}: heavy lane's rate and the path delay it measured")
        axd = ax.twinx()
        if any(delay):
            axd.plot(t, delay, color="#2ca02c", linewidth=1, label="measured queueing delay, ms")
        axd.set_ylabel("ms")
        lines = ax.get_legend_handles_labels()
        lines2 = axd.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower left")
        axp = axes[1][col]
        axp.scatter([s["t"] for s in phase["health"]], [s["ms"] for s in phase["health"]],
                    s=5, color=colours.get(label, "gray"), label="/health")
        axp.scatter([s["t"] for s in phase["echo"]],
                    [s["rtt_ms"] if s.get("rtt_ms") is not None else 5000.0 for s in phase["echo"]],
                    s=4, marker="x", color="#2ca02c", label="echo (fresh connection)")
        axp.set_yscale("log")
        axp.set_ylabel("probe latency, ms (log)")
        axp.set_xlabel("seconds into the loaded window")
        axp.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(base.replace("latency", "yield") + ext if "latency" in base else base + "-yield" + ext,
                dpi=110)


if __name__ == "__main__":
    main()
