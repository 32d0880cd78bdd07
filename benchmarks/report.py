#!/usr/bin/env python3
"""Turns warmpool_bench's rows (and scripts/bench's own) into results.md and SVG plots.

    report.py RESULTS.tsv OUT_DIR MACHINE.txt

RESULTS.tsv rows: figure, case, subject, metric, value, unit (tab-separated). MACHINE.txt holds
"key: value" lines that head the page. The plots need gnuplot; without it they are skipped.
"""
import collections
import os
import shutil
import subprocess
import sys


def load(path):
    rows = collections.defaultdict(dict)  # (figure, case) -> {(subject, metric): (value, unit)}
    order = collections.defaultdict(list)  # figure -> cases in order of appearance
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 6:
                continue
            figure, case, subject, metric, value, unit = parts
            if case not in order[figure]:
                order[figure].append(case)
            rows[(figure, case)][(subject, metric)] = (float(value), unit)
    return rows, order


def fmt(v, digits=3):
    if v is None:
        return "–"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def table(header, body):
    if not body:
        return "*Not measured in this run.*\n"
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out) + "\n"


class Report:
    def __init__(self, rows, order):
        self.rows, self.order = rows, order

    def get(self, figure, case, subject, metric):
        v = self.rows.get((figure, case), {}).get((subject, metric))
        return v[0] if v else None

    def skipped(self, figure):
        notes = []
        for case in self.order.get(figure, []):
            v = self.rows[(figure, case)].get(("skipped", "skipped"))
            if v:
                notes.append(f"*{case} skipped: {v[1]}.*\n")
        return "".join(notes)

    def checkout(self):
        body = []
        for case in self.order.get("checkout", []):
            g = lambda s, m="time": self.get("checkout", case, s, m)
            ratio = g("warmpool/soci", "ratio")
            body.append([case, fmt(g("warmpool")), fmt(g("soci::connection_pool")),
                         fmt(g("std::mutex lock+unlock")), f"**{fmt(ratio)}×**",
                         fmt(g("warmpool/mutex", "ratio")) + "×",
                         "met" if ratio is not None and ratio <= 1.0 else "missed"])
        return table(["traits", "warmpool ns", "soci::connection_pool ns", "std::mutex pair ns",
                      "warmpool / SOCI", "warmpool / mutex", "goal ≤ 1.0×"], body)

    def contention(self):
        out = []
        spin = self.get("contention", "spin", "work", "time")
        for work, title in (("none", "no work inside the lease"),
                            ("spin", f"a fixed spin inside the lease (~{fmt(spin)} ns)")):
            body = []
            for case in self.order.get("contention", []):
                if not case.endswith("work=" + work):
                    continue
                f = dict(kv.split("=") for kv in case.split())
                g = lambda s, m: self.get("contention", case, s, m)
                us = lambda s, m: fmt((g(s, m) or 0) / 1e3)
                tp, p99 = g("warmpool/soci", "throughput"), g("warmpool/soci", "p99")
                body.append([f["pool"], f["threads"],
                             fmt(g("warmpool", "throughput") / 1e6),
                             fmt(g("soci::connection_pool", "throughput") / 1e6),
                             f"**{fmt(tp)}×**",
                             f'{us("warmpool", "p50")} / {us("warmpool", "p99")} / '
                             f'{us("warmpool", "max")}',
                             f'{us("soci::connection_pool", "p50")} / '
                             f'{us("soci::connection_pool", "p99")} / '
                             f'{us("soci::connection_pool", "max")}',
                             f"**{fmt(p99)}×**",
                             f'{fmt(g("warmpool", "fairness"), 2)} / '
                             f'{fmt(g("soci::connection_pool", "fairness"), 2)}',
                             "met" if tp >= 1.0 and p99 <= 1.0 else "missed"])
            out.append(f"**{title}**\n\n" + table(
                ["pool", "threads", "warmpool M/s", "SOCI M/s", "throughput warmpool / SOCI",
                 "warmpool wait p50 / p99 / max µs", "SOCI wait p50 / p99 / max µs",
                 "p99 warmpool / SOCI", "fairness warmpool / SOCI",
                 "goal (≥ 1.0× throughput, p99 ≤ 1.0×)"], body))
        return "\n".join(out)

    def single_slot(self):
        g = lambda s, m="time": self.get("single_slot", "SQLite", s, m)
        added = g("added by warmpool", "difference")
        if added is None:
            return "*not run*\n"
        return table(["warmpool single_slot() ns", "static soci::session ns",
                      "added by warmpool ns", "goal ≤ 50 ns"],
                     [[fmt(g("warmpool single_slot()")), fmt(g("static soci::session")),
                       f"**{fmt(added)}**", "met" if added <= 50 else "missed"]])

    def reuse(self):
        body = []
        for case in self.order.get("reuse", []):
            g = lambda s, m="time": self.get("reuse", case, s, m)
            if g("reconnect/pooled", "ratio") is None:
                continue
            body.append([case, fmt(g("warmpool: acquire + SELECT 1 + give back")),
                         fmt(g("open + SELECT 1 + close")),
                         f'**{fmt(g("reconnect/pooled", "ratio"))}×**'])
        return table(["server", "pooled: acquire + SELECT 1 + give back µs",
                      "open + SELECT 1 + close µs", "reconnect / pooled"], body) + \
            self.skipped("reuse")

    def thaw(self):
        body = []
        for case in self.order.get("thaw", []):
            g = lambda s, m="time": self.get("thaw", case, s, m)
            if g("ping/warm", "ratio") is None:
                continue
            body.append([case, fmt(g("warm acquire (defaults)")),
                         fmt(g("warm acquire, socket_check_after = 1 s")),
                         fmt(g("after the validation window (one ping)")),
                         fmt(g("after a server-side close (one reconnect)")),
                         f'**{fmt(g("ping/warm", "ratio"))}×**',
                         f'**{fmt(g("reconnect/warm", "ratio"))}×**'])
        return table(["server", "warm acquire µs (defaults: one socket poll)",
                      "warm acquire µs (socket_check_after = 1 s: no poll)",
                      "one ping µs (validation_window = 0)", "one reconnect µs",
                      "ping / warm", "reconnect / warm"], body) + self.skipped("thaw")

    def pgbench(self):
        # scripts/bench runs pgbench and the pool in alternating turns ("clients=N turn=K"):
        # medians over turns, and the median of the per-turn ratios.
        turns = collections.defaultdict(list)
        for case in self.order.get("pgbench", []):
            if case.startswith("clients="):
                turns[case.split()[0]].append(case)
        body = []
        for clients, cases in turns.items():
            def col(subject, metric="tps"):
                return [self.get("pgbench", c, subject, metric) for c in cases]

            def per_turn(a, b):
                return [x / y for x, y in zip(col(a), col(b)) if x and y]

            def med(values):
                values = sorted(v for v in values if v is not None)
                if not values:
                    return None
                n = len(values)
                return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2

            ours, theirs = med(col("warmpool + SOCI")), med(col("pgbench -S"))
            if ours is None or theirs is None:
                continue
            vs_simple = med(per_turn("warmpool + SOCI", "pgbench -S"))
            vs_ext = med(per_turn("warmpool + SOCI", "pgbench -S -M extended"))
            body.append([clients.replace("clients=", ""), str(len(cases)), fmt(theirs),
                         fmt(med(col("pgbench -S -M extended"))), fmt(ours),
                         f"**{fmt(vs_simple)}×**", (fmt(vs_ext) + "×") if vs_ext else "–",
                         fmt(med(col("SOCI, a session per thread"))),
                         fmt(med(col("pooled/unpooled", "ratio"))) + "×"])
        return table(["clients", "turns", "pgbench -S tps", "pgbench -S -M extended tps",
                      "warmpool + SOCI tps", "warmpool + SOCI / pgbench -S",
                      "warmpool + SOCI / pgbench -S -M extended",
                      "SOCI, a session per thread tps",
                      "warmpool + SOCI / SOCI unpooled (interleaved)"], body) + \
            self.skipped("pgbench")

    def compile(self):
        body = []
        for case in self.order.get("compile", []):
            g = lambda s: self.get("compile", case, s, "time")
            w, s = g("<warmpool/soci.hpp>"), g("<soci/soci.h> only")
            if w is None or s is None:
                continue
            body.append([f"`{case}`", fmt(w), fmt(s), f"**{fmt(w / s)}×**", fmt(w - s)])
        return table(["g++", "with `<warmpool/soci.hpp>` s", "`<soci/soci.h>` only s",
                      "ratio", "added s"], body)


def plots(rep, out_dir):
    if shutil.which("gnuplot") is None:
        print("report: gnuplot not found; no plots", file=sys.stderr)
        return []
    data = os.path.join(out_dir, ".plotdata")
    os.makedirs(data, exist_ok=True)
    made = []
    script = ['set terminal svg size 900,420 noenhanced font "sans,11" background "white"',
              'set datafile separator "\\t"', "set grid ytics", "set key top left"]

    # Figure 1: clustered bars.
    with open(os.path.join(data, "checkout.dat"), "w") as f:
        f.write("case\twarmpool\tsoci::connection_pool\tstd::mutex lock+unlock\n")
        for case in rep.order.get("checkout", []):
            g = lambda s: rep.get("checkout", case, s, "time") or 0
            f.write(f"{case}\t{g('warmpool')}\t{g('soci::connection_pool')}\t"
                    f"{g('std::mutex lock+unlock')}\n")
    if rep.order.get("checkout"):
        made.append("checkout.svg")
        script += [f'set output "{out_dir}/checkout.svg"',
                   'set title "Checkout cycle, one thread, pool of 4 (lower is better)"',
                   'set ylabel "ns per acquire + give back"', "set style data histograms",
                   "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
                   "set boxwidth 0.9", "set key autotitle columnhead",
                   f'plot "{data}/checkout.dat" using 2:xtic(1), "" using 3, "" using 4',
                   "unset key; set key noautotitle; set key top left", "unset style data"]

    # Figure 2: throughput and p99 against threads, one panel per pool size.
    sizes = []
    for case in rep.order.get("contention", []):
        if case.startswith("pool="):
            size = case.split()[0].split("=")[1]
            if size not in sizes:
                sizes.append(size)
    for size in sizes:
        with open(os.path.join(data, f"contention_{size}.dat"), "w") as f:
            for work in ("none", "spin"):
                for case in rep.order["contention"]:
                    if case.startswith(f"pool={size} ") and case.endswith("work=" + work):
                        threads = case.split()[1].split("=")[1]
                        g = lambda s, m: rep.get("contention", case, s, m) or 0
                        f.write(f"{threads}\t{g('warmpool', 'throughput') / 1e6}\t"
                                f"{g('soci::connection_pool', 'throughput') / 1e6}\t"
                                f"{g('warmpool', 'p99') / 1e3}\t"
                                f"{g('soci::connection_pool', 'p99') / 1e3}\n")
                f.write("\n\n")
    if sizes:
        made.append("contention.svg")
        script += [f'set output "{out_dir}/contention.svg"', "set terminal svg size 1200,700 noenhanced",
                   f"set multiplot layout 2,{len(sizes)} title "
                   '"Contention: warmpool (red) vs soci::connection_pool (blue); '
                   'solid = no work, dashed = spin"',
                   "set logscale x 2", "set xlabel \"threads\"", "set key off"]
        for row in ("throughput", "p99"):
            for size in sizes:
                d = f"{data}/contention_{size}.dat"
                if row == "throughput":
                    script += [f'set title "pool of {size}: throughput"', "unset logscale y",
                               'set ylabel "M checkouts/s"', "set yrange [0:*]"]
                    a, b = 2, 3
                else:
                    script += [f'set title "pool of {size}: p99 wait"', "set logscale y",
                               'set ylabel "µs"', "set yrange [*:*]"]
                    a, b = 4, 5
                script.append(
                    f'plot "{d}" index 0 using 1:{a} with linespoints lc rgb "red" dt 1, '
                    f'"{d}" index 0 using 1:{b} with linespoints lc rgb "blue" dt 1, '
                    f'"{d}" index 1 using 1:{a} with linespoints lc rgb "red" dt 2, '
                    f'"{d}" index 1 using 1:{b} with linespoints lc rgb "blue" dt 2')
        script += ["unset multiplot", "unset logscale", "set terminal svg size 900,420 noenhanced",
                   "unset xlabel", "set yrange [*:*]", "set key top left"]

    # Figures 4 and 5: one bar chart per server, log scale.
    servers = [c for c in rep.order.get("thaw", []) if rep.get("thaw", c, "ping/warm", "ratio")]
    if servers:
        with open(os.path.join(data, "servers.dat"), "w") as f:
            labels = [("reuse", "warmpool: acquire + SELECT 1 + give back", "pooled SELECT 1"),
                      ("reuse", "open + SELECT 1 + close", "open + SELECT 1 + close"),
                      ("thaw", "warm acquire (defaults)", "warm acquire"),
                      ("thaw", "after the validation window (one ping)", "acquire + ping"),
                      ("thaw", "after a server-side close (one reconnect)",
                       "acquire + reconnect")]
            f.write("what\t" + "\t".join(servers) + "\n")
            for fig, subject, label in labels:
                f.write(label + "\t" + "\t".join(
                    str(rep.get(fig, s, subject, "time") or "NaN") for s in servers) + "\n")
        made.append("servers.svg")
        cols = ", ".join(('"" ' if i else f'"{data}/servers.dat" ') + f"using {i + 2}" +
                         (":xtic(1)" if i == 0 else "") for i in range(len(servers)))
        script += [f'set output "{out_dir}/servers.svg"',
                   'set title "Real servers on loopback (lower is better, log scale)"',
                   'set ylabel "µs per operation"', "set logscale y", "set style data histograms",
                   "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
                   "set key autotitle columnhead", f"plot {cols}", "unset logscale y"]
    with open(os.path.join(data, "plots.gp"), "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", os.path.join(data, "plots.gp")], capture_output=True, text=True)
    if r.returncode != 0:
        print("report: gnuplot failed:\n" + r.stderr, file=sys.stderr)
        return []
    shutil.rmtree(data)
    return made


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    rows, order = load(sys.argv[1])
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    rep = Report(rows, order)
    with open(sys.argv[3]) as f:
        machine = [line.rstrip("\n") for line in f if line.strip()]
    made = plots(rep, os.path.abspath(out_dir))
    md = ["# warmpool benchmark results\n",
          "Generated by `scripts/bench` (do not edit; see ../benchmarks.md for what each figure "
          "means). Every ratio compares subjects measured side by side in the same run.\n"]
    md += ["| | |", "|---|---|"] + [
        "| " + " | ".join(p.strip() for p in line.split(":", 1)) + " |" for line in machine]
    sections = [
        ("1. Checkout cycle: acquire + give back, one thread, pool of 4", rep.checkout,
         "checkout.svg"),
        ("2. Contention: 1–16 threads over pools of 1, 4 and 16 (no-op traits)", rep.contention,
         "contention.svg"),
        ("3. Single-slot warm invocation (SQLite)", rep.single_slot, None),
        ("4. Reuse vs reconnect on real servers (loopback)", rep.reuse, "servers.svg"),
        ("5. Thaw: first acquire after an idle period / after a server-side close", rep.thaw,
         None),
        ("6. Pooled SOCI vs pgbench -S (select-only, same server)", rep.pgbench, None),
        ("7. Compile time of one translation unit (median of repetitions)", rep.compile, None),
    ]
    for title, fn, plot in sections:
        md.append(f"\n## {title}\n")
        md.append(fn())
        if plot and plot in made:
            md.append(f"\n![{title}]({plot})\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(md))
    print(f"report: wrote {os.path.join(out_dir, 'results.md')}"
          + (f" and {', '.join(made)}" if made else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
