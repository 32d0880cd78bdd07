#!/usr/bin/env python3
"""warmpool's metrics checked by Prometheus' own tools. Run by ctest (tests/metrics/CMakeLists.txt).

    check.py exposition PROGRAM          PROGRAM's stdout must pass `promtool check metrics`
    check.py rules RULES [TESTS [DOC]]   `promtool check rules RULES`, then `promtool test rules
                                         TESTS`, then `promtool check rules` on every ```yaml
                                         block of the Markdown file DOC that holds `groups:`
    check.py endpoint PROGRAM            start examples/metrics_endpoint, scrape it twice under
                                         load, check the counters moved and the live scrape
                                         passes promtool; stop it with SIGTERM
    check.py missing REASON...           the endpoint test where the example could not be
                                         built: skipped, or failed when CI=true

promtool (Debian: prometheus) must be on PATH, or named by PROMTOOL. Without it the check
exits 77, which ctest reports as skipped, unless CI=true: then it fails. promtool's lint
findings count as failures: it must exit 0 and print nothing. Where prometheus_client (Debian:
python3-prometheus-client) is importable, the text is parsed by it too, and the histograms'
invariants are checked on what it read. Python 3 standard library only.
"""

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
CI = os.environ.get("CI", "") in ("true", "1")


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def find_promtool():
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool:
        return promtool
    message = "promtool not found (Debian: apt-get install prometheus; or set PROMTOOL)"
    if CI:
        fail(message + "; CI=true allows no skipping")
    print(f"SKIPPED: {message}")
    sys.exit(SKIP)


def promtool_check_metrics(promtool, text, what):
    """promtool check metrics reads stdin; lint problems go to its output and its exit code."""
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    said = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or said:
        fail(f"promtool check metrics rejected {what} (exit {result.returncode}):\n{said}")
    print(f"promtool check metrics: {what} accepted, {len(text.splitlines())} lines")


# Run in whichever interpreter has prometheus_client: this one, or Debian's when this one is a
# private Python (pyenv, a virtualenv) without Debian's packages.
PARSE = r"""
import sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
names = [f.name for f in families]
dups = sorted({n for n in names if names.count(n) > 1})
if dups:
    sys.exit("families written more than once: " + ", ".join(dups))
histograms = 0
for f in families:
    if f.type != "histogram":
        continue
    series = {}
    for s in f.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
    for key, h in series.items():
        values = [v for _, v in h["buckets"]]
        bounds = [b for b, _ in h["buckets"]]
        if bounds != sorted(bounds) or bounds[-1] != float("inf"):
            sys.exit(f"{f.name} {key}: bucket bounds out of order or no +Inf: {bounds}")
        if values != sorted(values):
            sys.exit(f"{f.name} {key}: buckets are not cumulative: {values}")
        if values[-1] != h["count"]:
            sys.exit(f"{f.name} {key}: +Inf bucket {values[-1]} != _count {h['count']}")
        histograms += 1
print(f"prometheus_client: {len(families)} families, {histograms} histogram series checked")
"""


def second_parser(text, what):
    candidates = []
    for python in (sys.executable, "/usr/bin/python3"):
        if python and os.path.exists(python) and python not in candidates:
            candidates.append(python)
    for python in candidates:
        probe = subprocess.run([python, "-c", "import prometheus_client"], capture_output=True)
        if probe.returncode != 0:
            continue
        result = subprocess.run([python, "-c", PARSE], input=text, capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0:
            fail(f"prometheus_client rejected {what}:\n{(result.stdout + result.stderr).strip()}")
        print(result.stdout.strip())
        return
    print("note: prometheus_client not installed (Debian: python3-prometheus-client); "
          "checked with promtool only")


def exposition(program):
    promtool = find_promtool()
    result = subprocess.run([program], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        fail(f"{program} exited {result.returncode}:\n{result.stderr}")
    text = result.stdout
    if not text.strip():
        fail(f"{program} printed nothing")
    promtool_check_metrics(promtool, text, f"the output of {os.path.basename(program)}")
    second_parser(text, "the rendered text")


def check_rules(promtool, rules_file, what):
    result = subprocess.run([promtool, "check", "rules", rules_file], capture_output=True,
                            text=True, timeout=60)
    said = (result.stdout + result.stderr).strip()
    # A clean file: exit 0, "SUCCESS: N rules found", and no lint warnings.
    if result.returncode != 0 or "SUCCESS" not in said or "WARNING" in said.upper():
        fail(f"promtool check rules rejected {what} (exit {result.returncode}):\n{said}")
    print(said)


def doc_rule_blocks(doc):
    """The ```yaml blocks of a Markdown file that are rule files (they hold `groups:`)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", open(doc, encoding="utf-8").read(),
                        re.MULTILINE | re.DOTALL)
    return [b for b in blocks if re.search(r"^groups:", b, re.MULTILINE)]


def rules(rules_file, tests_file=None, doc=None):
    promtool = find_promtool()
    check_rules(promtool, rules_file, rules_file)
    if tests_file:
        result = subprocess.run([promtool, "test", "rules", tests_file], capture_output=True,
                                text=True, timeout=120)
        said = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or "SUCCESS" not in said:
            fail(f"promtool test rules {tests_file} (exit {result.returncode}):\n{said}")
        print(said)
    if doc:
        blocks = doc_rule_blocks(doc)
        if not blocks:
            fail(f"{doc} has no ```yaml block with groups: to check")
        for i, block in enumerate(blocks, 1):
            with tempfile.NamedTemporaryFile("w", suffix=".rules.yml") as f:
                f.write(block)
                f.flush()
                check_rules(promtool, f.name, f"rule block {i} of {doc}")


def sample_values(text, name):
    """{labels: value} for every sample of exactly this name (label text kept as written)."""
    values = {}
    pattern = re.compile(r"^" + re.escape(name) + r"(\{[^}]*\})? (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            values[match.group(1) or ""] = float(match.group(2))
    return values


def total(text, name):
    values = sample_values(text, name)
    if not values:
        fail(f"no {name} in the scrape:\n{text[:2000]}")
    return sum(values.values())


def endpoint(program):
    promtool = find_promtool()
    curl = shutil.which("curl")
    if not curl:
        fail("curl not found (Debian: apt-get install curl)")
    process = subprocess.Popen([program, "0", "--seconds", "120"], stdout=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        # The first line is the port; the program has 30 s to open the pool and bind.
        ready, _, _ = select.select([process.stdout], [], [], 30)
        if not ready:
            fail("metrics_endpoint printed no port within 30 s")
        first = process.stdout.readline().strip()
        if not first.isdigit() or not 0 < int(first) < 65536:
            try:
                status = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                status = "still running"
            fail(f"metrics_endpoint's first line is not a port: {first!r} (exit {status})")
        url = f"http://127.0.0.1:{first}/metrics"

        def scrape():
            result = subprocess.run([curl, "-sS", "--fail", "--max-time", "10", "-D", "-", url],
                                    capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                fail(f"curl {url} failed (exit {result.returncode}): {result.stderr.strip()}")
            head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
            types = [line.split(":", 1)[1].strip() for line in head.splitlines()
                     if line.lower().startswith("content-type:")]
            if types != ["text/plain; version=0.0.4; charset=utf-8"]:
                fail(f"Content-Type is {types}, not text/plain; version=0.0.4; charset=utf-8")
            return body

        first_scrape = scrape()
        acquired = total(first_scrape, "db_client_connection_acquired_total")
        waits = total(first_scrape, "db_client_connection_wait_time_seconds_count")
        uses = total(first_scrape, "db_client_connection_use_time_seconds_count")
        # The workers keep the pool busy: within 20 s the counters must have moved.
        deadline = time.monotonic() + 20
        while True:
            time.sleep(0.3)
            second_scrape = scrape()
            moved = (total(second_scrape, "db_client_connection_acquired_total") > acquired and
                     total(second_scrape, "db_client_connection_wait_time_seconds_count") > waits
                     and total(second_scrape, "db_client_connection_use_time_seconds_count") >
                     uses)
            if moved:
                break
            if time.monotonic() > deadline or process.poll() is not None:
                fail("the counters did not move between scrapes (acquired_total "
                     f"{acquired} -> {total(second_scrape, 'db_client_connection_acquired_total')}"
                     f", wait_time_seconds_count {waits} -> "
                     f"{total(second_scrape, 'db_client_connection_wait_time_seconds_count')})")
        print(f"acquired_total {acquired:.0f} -> "
              f"{total(second_scrape, 'db_client_connection_acquired_total'):.0f}, "
              f"wait_time_seconds_count {waits:.0f} -> "
              f"{total(second_scrape, 'db_client_connection_wait_time_seconds_count'):.0f}")
        promtool_check_metrics(promtool, second_scrape, "the live scrape")
        second_parser(second_scrape, "the live scrape")

        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail("metrics_endpoint did not stop within 20 s of SIGTERM")
        if status != 0:
            fail(f"metrics_endpoint exited {status} after SIGTERM")
        print("metrics_endpoint stopped on SIGTERM")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def main(argv):
    if len(argv) >= 3 and argv[1] == "exposition":
        exposition(argv[2])
    elif len(argv) in (3, 4, 5) and argv[1] == "rules":
        rules(*argv[2:])
    elif len(argv) == 3 and argv[1] == "endpoint":
        endpoint(argv[2])
    elif len(argv) >= 3 and argv[1] == "missing":
        reason = " ".join(argv[2:])
        if CI:
            fail(reason + "; CI=true allows no skipping")
        print(f"SKIPPED: {reason}")
        return SKIP
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
