#!/usr/bin/env python3
"""Turn a Google Benchmark JSON result file into a Markdown table and a PNG chart.

Benchmarks are named <part>/<mode>/<backend>/<shape>; each (part) gets one table
with a row per (shape, mode) and a column group per backend, and one chart panel
showing how close each backend gets to the machine's limit: the measured FMA peak
for prefill modes, the measured DRAM read bandwidth for decode modes. --extra merges
the benchmarks of other result files (bench/torch_layer.py's PyTorch comparison),
measured against the limits of the main file.
"""

import argparse
import json
import math
import sys
from pathlib import Path

BACKEND_ORDER = ["x86", "arm", "cuda", "opencl", "baseline", "torch", "reference"]
PART_ORDER = ["layer", "proj", "core"]
PROBE_PART = "probe"
TIME_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
MISSING = "–"


def fail(message):
    print(f"bench_report.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def load_results(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(f"{path} is not valid JSON: {e}")
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not benchmarks or not isinstance(benchmarks, list):
        fail(f"{path} holds no benchmarks (expected Google Benchmark JSON output)")
    if not all(isinstance(e, dict) and "real_time" in e for e in benchmarks):
        fail(f"{path} has benchmark entries without a real_time")
    return data


def benchmark_key(entry):
    """(part, mode, backend, shape) of an entry, or None when the name has fewer parts."""
    name = entry.get("run_name")
    if name is None:
        # Old reporters lack run_name; aggregates then carry an "_<aggregate>" suffix.
        name = entry.get("name", "")
        suffix = "_" + entry.get("aggregate_name", "")
        if entry.get("run_type") == "aggregate" and name.endswith(suffix):
            name = name[: -len(suffix)]
    parts = name.split("/")
    # Anything after the 4th component is a Google Benchmark suffix (/real_time, /threads:N).
    return tuple(parts[:4]) if len(parts) >= 4 else None


def select_medians(benchmarks):
    """One entry per benchmark: the median aggregate if there is one, else the median iteration."""
    medians, iterations = {}, {}
    for entry in benchmarks:
        # Skipped runs (e.g. a backend with no device) report an error and a zero time.
        if entry.get("error_occurred") or entry.get("error_message"):
            continue
        key = benchmark_key(entry)
        if key is None:
            continue
        if entry.get("run_type") == "aggregate":
            if entry.get("aggregate_name") == "median":
                medians[key] = entry
        else:
            iterations.setdefault(key, []).append(entry)
    selected = dict(medians)
    for key, runs in iterations.items():
        if key not in selected:
            # Repetitions without aggregates: take the middle run by time.
            runs.sort(key=lambda e: e["real_time"])
            selected[key] = runs[len(runs) // 2]
    # Keep registration order, which is how the benchmark author grouped them.
    order = {key: i for i, key in enumerate(unique_in_order(benchmark_key(e) for e in benchmarks))}
    return dict(sorted(selected.items(), key=lambda item: order[item[0]]))


def usable_results(path):
    """The context and the selected median of each benchmark of one result file."""
    data = load_results(path)
    results = select_medians(data["benchmarks"])
    if not results:
        fail(f"{path} has no usable <part>/<mode>/<backend>/<shape> benchmarks")
    return data.get("context", {}), results


def merge_extras(results, extras):
    """results with each extra file's benchmarks but its probes; a benchmark in two files is an error."""
    merged, source = dict(results), {}
    for path in extras:
        _, extra = usable_results(path)
        for key, entry in extra.items():
            if key[0] == PROBE_PART:
                continue  # the machine's limits are the main run's
            if key in merged:
                where = source.get(key, "the main results")
                fail(f"{'/'.join(key)} is both in {where} and in {path}")
            merged[key], source[key] = entry, path
    return merged


def time_ms(entry):
    return entry["real_time"] * TIME_TO_MS.get(entry.get("time_unit", "ns"), 1e-6)


def machine_limits(context, results):
    """The best FMA peak (GFLOP/s) and DRAM read (GB/s) the run measured: at start
    (context) or as probe benchmarks among the others. On a shared machine a
    probe can only come out low, so the highest is the machine's limit."""
    limits = {}
    for key, mode, counter in (("fma_peak_gflops", "fma_peak", "GFLOP/s"), ("dram_read_gbs", "dram_read", "GB/s")):
        seen = [entry[counter] for (part, m, _, _), entry in results.items()
                if part == PROBE_PART and m == mode and counter in entry]
        try:
            seen.append(float(context[key]))
        except (KeyError, ValueError):
            pass
        if seen:
            limits[counter] = max(seen)
    return limits


def limit_fraction(entry, mode, limits):
    """Fraction of the machine limit that bounds this mode, or None if not known."""
    counter = "GB/s" if mode.startswith("decode") else "GFLOP/s"
    if counter not in entry or not limits.get(counter):
        return None
    return entry[counter] / limits[counter]


def sig3(x):
    """x with 3 significant digits and no exponent, which reads better in a table."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    if x == 0:
        return "0"
    decimals = 2 - math.floor(math.log10(abs(x)))
    return f"{x:.{decimals}f}" if decimals > 0 else f"{round(x, decimals):.0f}"


def ordered(names, preferred):
    known = [n for n in preferred if n in names]
    return known + sorted(n for n in names if n not in preferred)


def unique_in_order(items):
    return list(dict.fromkeys(items))


def machine_header(context, results):
    """One line naming the machine and its measured limits."""
    facts = []
    if "host_name" in context:
        facts.append(f"host `{context['host_name']}`")
    if "num_cpus" in context:
        cpus = f"{context['num_cpus']} CPUs"
        if "mhz_per_cpu" in context:
            cpus += f" @ {context['mhz_per_cpu']} MHz"
        facts.append(cpus)
    if "date" in context:
        facts.append(str(context["date"]))
    for key, label, unit in (("fma_peak_gflops", "FMA peak", "GFLOP/s"), ("dram_read_gbs", "DRAM read", "GB/s")):
        if key in context:
            try:
                facts.append(f"{label} {sig3(float(context[key]))} {unit}")
            except ValueError:
                facts.append(f"{label} {context[key]} {unit}")
    for (part, mode, _, _), entry in results.items():
        if part == PROBE_PART:
            for counter in ("GFLOP/s", "GB/s"):
                if counter in entry:
                    facts.append(f"probe {mode}: {sig3(entry[counter])} {counter}")
    return "**Machine:** " + (", ".join(facts) if facts else "no context recorded")


def part_layout(results, part):
    """Rows (shape, mode), backends and the entry of each (shape, mode, backend) for one part."""
    entries = {(shape, mode, backend): e for (p, mode, backend, shape), e in results.items() if p == part}
    shapes = unique_in_order(s for s, _, _ in entries)
    modes = unique_in_order(m for _, m, _ in entries)
    backends = ordered({b for _, _, b in entries}, BACKEND_ORDER)
    rows = [(s, m) for s in shapes for m in modes if any((s, m, b) in entries for b in backends)]
    return rows, backends, entries


def part_table(results, part, limits):
    rows, backends, entries = part_layout(results, part)
    columns = [("shape", [s for s, _ in rows]), ("mode", [m for _, m in rows])]
    for backend in backends:
        cells = {"ms": [], "GFLOP/s": [], "GB/s": [], "% limit": [], "vs baseline": []}
        for shape, mode in rows:
            entry = entries.get((shape, mode, backend))
            baseline = entries.get((shape, mode, "baseline"))
            if entry is None:
                for values in cells.values():
                    values.append(MISSING)
                continue
            fraction = limit_fraction(entry, mode, limits)
            cells["ms"].append(sig3(time_ms(entry)))
            cells["GFLOP/s"].append(sig3(entry.get("GFLOP/s")))
            cells["GB/s"].append(sig3(entry.get("GB/s")))
            cells["% limit"].append(MISSING if fraction is None else f"{100 * fraction:.1f}%")
            ratio = time_ms(baseline) / time_ms(entry) if baseline and backend != "baseline" else None
            cells["vs baseline"].append(MISSING if ratio is None else sig3(ratio) + "x")
        columns += [(f"{backend} {label}", values) for label, values in cells.items()]
    # A column with no value anywhere (no GB/s counter, no baseline run) only adds width.
    columns = columns[:2] + [(h, v) for h, v in columns[2:] if any(c != MISSING for c in v)]
    header = "| " + " | ".join(h for h, _ in columns) + " |"
    rule = "|" + "|".join([":---"] * 2 + ["---:"] * (len(columns) - 2)) + "|"
    lines = ["| " + " | ".join(row) + " |" for row in zip(*(v for _, v in columns))]
    return "\n".join([header, rule] + lines)


def table_parts(results):
    return ordered({p for p, _, _, _ in results if p != PROBE_PART}, PART_ORDER)


def markdown_report(sources, context, results):
    limits = machine_limits(context, results)
    limit_text = ", ".join(f"{sig3(v)} {k}" for k, v in limits.items())
    title = " + ".join(source.name for source in sources)
    sections = [f"# Benchmark report: {title}", machine_header(context, results),
                f"`% limit`: fraction of the machine's limit ({limit_text}, the best the run measured): "
                "the FMA peak for prefill, the DRAM read bandwidth for decode. "
                "`vs baseline`: baseline time / backend time, above 1x is faster."]
    for part in table_parts(results):
        sections += [f"## {part}", part_table(results, part, limits)]
    return "\n\n".join(sections) + "\n"


def write_chart(path, results, limits):
    """Bar chart of % of machine limit; returns False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on benchmark machines
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    parts = table_parts(results)
    layouts = [part_layout(results, part) for part in parts]
    # One colour per backend across all panels, so x86 is the same bar everywhere.
    all_backends = ordered({b for _, backends, _ in layouts for b in backends}, BACKEND_ORDER)
    colours = {backend: f"C{i}" for i, backend in enumerate(all_backends)}
    widest = max(len(rows) for rows, _, _ in layouts)
    fig, axes = plt.subplots(len(parts), 1, figsize=(max(6.0, 1.2 * widest), 4.0 * len(parts)), squeeze=False)
    for ax, part, (rows, backends, entries) in zip(axes[:, 0], parts, layouts):
        width = 0.8 / len(backends)
        for i, backend in enumerate(backends):
            xs, heights = [], []
            for x, (shape, mode) in enumerate(rows):
                entry = entries.get((shape, mode, backend))
                fraction = limit_fraction(entry, mode, limits) if entry else None
                if fraction is not None:
                    xs.append(x - 0.4 + width * (i + 0.5))
                    heights.append(100 * fraction)
            ax.bar(xs, heights, width, label=backend, color=colours[backend])
        ax.axhline(100, color="black", linestyle="--", linewidth=1)
        ax.set_ylim(0, max(110, ax.get_ylim()[1]))
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{shape}\n{mode}" for shape, mode in rows], fontsize=8)
        ax.set_ylabel("% of machine limit")
        ax.set_title(f"{part} (limit: FMA peak for prefill, DRAM read bandwidth for decode)", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="Google Benchmark JSON output")
    parser.add_argument("--table", type=Path, help="Markdown output (default: RESULTS with .md)")
    parser.add_argument("--png", type=Path, help="chart output (default: RESULTS with .png)")
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="FILE",
                        help="more Google Benchmark JSON whose benchmarks join the table and chart "
                        "(e.g. bench/torch_layer.py's); repeatable")
    args = parser.parse_args()

    context, results = usable_results(args.results)
    results = merge_extras(results, args.extra)
    report = markdown_report([args.results] + args.extra, context, results)

    table_path = args.table or args.results.with_suffix(".md")
    try:
        table_path.write_text(report, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {table_path}: {e.strerror}")
    print(report, end="")
    png_path = args.png or args.results.with_suffix(".png")
    try:
        limits = machine_limits(context, results)
        if table_parts(results) and not write_chart(png_path, results, limits):
            print("matplotlib not found: install python3-matplotlib for the chart", file=sys.stderr)
    except OSError as e:
        fail(f"cannot write {png_path}: {e.strerror}")


if __name__ == "__main__":
    main()
