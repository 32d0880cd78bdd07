#!/usr/bin/env python3
"""Checks the Node.js subjects of the fleet benchmark against real servers, through
tests/lambda/emulator.py, and measures them:

    tests/fleet/node/install.sh DEST
    eval "$(bash scripts/servers.sh start)"      # WARMPOOL_TEST_PG, WARMPOOL_TEST_MYSQL
    python3 tests/fleet/node/check.py DEST [--subject postgres|mysql] [--parallel 6]

Per subject (postgres_handler.js with WARMPOOL_TEST_PG, mysql_handler.js with
WARMPOOL_TEST_MYSQL):

* lifecycle: one environment: a cold invocation, warm ones, two freeze/thaw cycles, all with
  work_ms 50, then a redelivered request id. Every response must carry the expected balance;
  the table must hold exactly one row per answered request id (the redelivery adds none).
* latency: 30 warm invocations with work_ms 0 and 30 with work_ms 50 (p50, p99).
* parallel: N environments (default 6) at once on shared accounts: every answer right, one row
  each, and the final balances add up, so nothing is shared between processes by accident.

Prints the measurements as JSON lines; exits non-zero on the first failed check. Needs psql and
the mariadb (or mysql) client to read the table.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lambda"))
import emulator  # noqa: E402

SUBJECTS = {
    "postgres": ("postgres_handler.js", "WARMPOOL_TEST_PG"),
    "mysql": ("mysql_handler.js", "WARMPOOL_TEST_MYSQL"),
}


class CheckFailed(Exception):
    pass


def params_of(connect_string):
    scheme, _, rest = connect_string.partition("://")
    out = {}
    for item in rest.split():
        k, _, v = item.partition("=")
        out[k] = v.strip("'")
    return scheme, out


def sql_rows(database, sql):
    """Rows of `sql` as lists of strings, through the command-line client."""
    scheme, p = params_of(database)
    env = dict(os.environ)
    if scheme == "postgresql":
        conninfo = " ".join(f"{k}={v}" for k, v in p.items())
        cmd = ["psql", conninfo, "-AtF", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql]
    else:
        client = shutil.which("mariadb") or shutil.which("mysql")
        env["MYSQL_PWD"] = p.get("password", p.get("pass", ""))
        cmd = [client, "-h", p.get("host", "127.0.0.1"), "-P", p.get("port", "3306"),
               "-u", p["user"], "-D", p.get("db", p.get("dbname", "")), "-N", "-B", "-e", sql]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def rows_for(database, prefix):
    """{request_id: (account, amount)} of the rows whose account starts with prefix, and how
    many rows there are per request id (the primary key: always 1)."""
    rows = sql_rows(
        database,
        f"select request_id, account, amount from ledger where account like '{prefix}%'",
    )
    return {r[0]: (r[1], int(r[2])) for r in rows}, len(rows)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def expect(cond, text):
    if not cond:
        raise CheckFailed(text)


def environment(dest, subject, database, name, log_dir):
    handler, _ = SUBJECTS[subject]
    return emulator.Environment(
        [shutil.which("node"), os.path.join(dest, "runtime.js"), os.path.join(dest, handler)],
        {"DATABASE": database},
        name=name,
        log_path=os.path.join(log_dir, f"{name}.log"),
    )


def answered(inv, account, balance):
    expect(
        inv.outcome == "response" and inv.result == {"account": account, "balance": balance},
        f"expected {{'account': {account!r}, 'balance': {balance}}}; got {inv.describe()}",
    )


def lifecycle(dest, subject, database, log_dir):
    prefix = f"lc-{uuid.uuid4().hex[:8]}-"
    acct = prefix + "a"
    env = environment(dest, subject, database, f"{subject}-lifecycle", log_dir)
    env.start()
    try:
        expected = {}
        balance = 0
        kinds = []
        init_cpu = None
        for step in range(9):
            if step in (5, 7):
                env.freeze()
                time.sleep(1.0)
                env.thaw()
            amount = step + 1
            inv = env.invoke({"account": acct, "amount": amount, "work_ms": 50})
            inv.wait(15)
            balance += amount
            answered(inv, acct, balance)
            expected[inv.request_id] = (acct, amount)
            kinds.append(inv.kind)
            if step == 0:
                init_ms = env.init_duration_s * 1000
                expect(env.wait_idle(5), f"{env.name}: did not go back to /next")
        expect(kinds.count("cold") == 1 and kinds.count("thaw") == 2,
               f"{env.name}: kinds {kinds}")
        # Redelivery: the first request id again, with another amount: the answer is the
        # balance as it stands, and no row is added.
        first = next(iter(expected))
        inv = env.invoke({"account": acct, "amount": 1000, "work_ms": 50}, request_id=first)
        inv.wait(15)
        answered(inv, acct, balance)
        rows, count = rows_for(database, prefix)
        expect(rows == expected and count == len(expected),
               f"{env.name}: table holds {count} rows {rows}; expected {expected}")
        expect(not env.violations, f"{env.name}: protocol violations {env.violations}")
        # CPU used by init and the ten invocations: the process is idle in /next now.
        expect(env.wait_idle(5), f"{env.name}: did not go back to /next")
        cpu_total = cpu_seconds(env.pid)
        thaw = [i.latency_s * 1000 for i in env.invocations if i.kind == "thaw"]
        cold = [i.latency_s * 1000 for i in env.invocations if i.kind == "cold"][0]
        return {"subject": subject, "check": "lifecycle", "init_ms": round(init_ms, 1),
                "cold_invocation_ms": round(cold, 1),
                "thaw_ms": [round(t, 1) for t in thaw],
                "cpu_s_after_10_invocations": round(cpu_total, 3)}
    finally:
        env.close()


def init_cost(dest, subject, database, log_dir, runs=5):
    """Spawn to the first /next (node start, modules loaded, connected, table created) and the
    CPU seconds the process used by then, over `runs` fresh processes."""
    init_ms, cpu = [], []
    for i in range(runs):
        env = environment(dest, subject, database, f"{subject}-init-{i}", log_dir)
        env.start()
        try:
            expect(env.wait_idle(15), f"{env.name}: never reached /next: {env.log_tail()}")
            init_ms.append(env.init_duration_s * 1000)
            cpu.append(cpu_seconds(env.pid))
        finally:
            env.close()
    return {"subject": subject, "check": "init", "runs": runs,
            "init_ms_p50": round(emulator.percentile(init_ms, 50), 1),
            "init_ms_max": round(max(init_ms), 1),
            "init_cpu_s_p50": round(emulator.percentile(cpu, 50), 3),
            "init_cpu_s_max": round(max(cpu), 3)}


def latency(dest, subject, database, log_dir, n=30):
    prefix = f"lat-{uuid.uuid4().hex[:8]}-"
    env = environment(dest, subject, database, f"{subject}-latency", log_dir)
    env.start()
    out = {"subject": subject, "check": "warm_latency"}
    try:
        env.invoke({"account": prefix + "warmup", "amount": 1}).wait(15)
        for work in (0, 50):
            invs = []
            for i in range(n):
                inv = env.invoke({"account": f"{prefix}{work}", "amount": 1, "work_ms": work})
                inv.wait(15)
                answered(inv, f"{prefix}{work}", i + 1)
                invs.append(inv)
            lat = [i.latency_s * 1000 for i in invs]
            out[f"work_ms_{work}"] = {"p50_ms": round(emulator.percentile(lat, 50), 2),
                                      "p99_ms": round(emulator.percentile(lat, 99), 2)}
        return out
    finally:
        env.close()


def parallel(dest, subject, database, log_dir, n_envs, per_env=10):
    prefix = f"par-{uuid.uuid4().hex[:8]}-"
    accounts = [prefix + a for a in ("x", "y")]
    envs = [environment(dest, subject, database, f"{subject}-par-{i}", log_dir)
            for i in range(n_envs)]
    for e in envs:
        e.start()
    failures = []
    done = collections.defaultdict(list)

    def drive(env, idx):
        try:
            for k in range(per_env):
                acct = accounts[(idx + k) % 2]
                inv = env.invoke({"account": acct, "amount": idx * 100 + k + 1, "work_ms": 50})
                inv.wait(20)
                if inv.outcome != "response" or inv.result.get("account") != acct:
                    failures.append(inv.describe())
                else:
                    done[env.name].append(inv)
        except Exception as exc:  # reported below, with the others
            failures.append(f"{env.name}: {exc}")

    try:
        threads = [threading.Thread(target=drive, args=(e, i)) for i, e in enumerate(envs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect(not failures, f"parallel {subject}: {failures[:3]}")
        expected = {}
        for invs in done.values():
            for inv in invs:
                ev = json.loads(inv.payload)
                expected[inv.request_id] = (ev["account"], ev["amount"])
        rows, count = rows_for(database, prefix)
        expect(rows == expected and count == len(expected),
               f"parallel {subject}: {count} rows, expected {len(expected)}")
        # Each answer is the balance its own transaction saw: at least its own amount plus
        # every amount committed before it on that account, at most the final sum.
        for acct in accounts:
            final = sum(a for (ac, a) in expected.values() if ac == acct)
            for invs in done.values():
                for inv in invs:
                    if inv.result["account"] == acct:
                        expect(0 < inv.result["balance"] <= final,
                               f"parallel {subject}: {inv.describe()} beyond the final {final}")
        violations = [v for e in envs for v in e.violations]
        expect(not violations, f"parallel {subject}: violations {violations[:3]}")
        warm = [i.latency_s * 1000 for invs in done.values() for i in invs if i.kind == "warm"]
        return {"subject": subject, "check": "parallel", "environments": n_envs,
                "invocations": len(expected),
                "warm_p50_ms": round(emulator.percentile(warm, 50), 1),
                "warm_p99_ms": round(emulator.percentile(warm, 99), 1)}
    finally:
        for e in envs:
            e.close()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", help="the directory install.sh installed into")
    p.add_argument("--subject", choices=sorted(SUBJECTS), action="append")
    p.add_argument("--parallel", type=int, default=6, help="environments at once (default 6)")
    p.add_argument("--logs", help="directory for the environments' logs (default: a temporary one)")
    a = p.parse_args(argv)
    if not os.path.exists(os.path.join(a.dest, "node_modules", "serverless-mysql")):
        p.error(f"{a.dest} has no installed modules; run tests/fleet/node/install.sh {a.dest}")
    log_dir = a.logs or tempfile.mkdtemp(prefix="fleet-node-check-")
    os.makedirs(log_dir, exist_ok=True)
    print(json.dumps({"logs": log_dir}), flush=True)
    for subject in a.subject or sorted(SUBJECTS):
        _, var = SUBJECTS[subject]
        database = os.environ.get(var)
        if not database:
            print(f"check.py: {var} is not set; start the servers (scripts/servers.sh)",
                  file=sys.stderr)
            return 2
        try:
            for result in (
                init_cost(a.dest, subject, database, log_dir),
                lifecycle(a.dest, subject, database, log_dir),
                latency(a.dest, subject, database, log_dir),
                parallel(a.dest, subject, database, log_dir, a.parallel),
            ):
                print(json.dumps(result), flush=True)
        except CheckFailed as exc:
            print(f"check.py: FAILED: {exc} (logs in {log_dir})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
