#!/usr/bin/env python3
"""End-to-end checks of warmpool's Lambda example (examples/lambda, the ledger `bootstrap`)
against the Runtime API emulator (emulator.py), on PostgreSQL and MariaDB.

Run by tests/lambda/run.sh, which builds the bootstrap and its zip and finds the servers; see
tests/lambda/README.md for what each scenario does and how to run it by hand.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator import (  # noqa: E402
    KINDS,
    EmulatorError,
    Environment,
    describe_returncode,
    percentile,
    wait_stopped,
    summarize,
)

# Server idle timeout during the tests, and how long a freeze lasts: longer than the timeout, so
# the server has closed the idle connection by the time the environment thaws.
IDLE_TIMEOUT_S = 1
FREEZE_S = IDLE_TIMEOUT_S + 0.5
SIGTERM_LIMIT_S = 0.300  # the example's documented limit
DEADLINE_EVENT_MS = 1500  # the deadline scenario's deadline, from delivery
# What a deadline-bound failure may be reported as (the example's documented error types).
DEADLINE_ERROR_TYPES = (
    "warmpool.AcquireTimeout",
    "warmpool.ConnectError",
    "DatabaseError",
    "DeadlineExceeded",
)
ROTATING_USER = "warmpool_rotating"  # the password-checked account (scripts/servers.sh)
RESULT_WAIT_S = 20  # how long a check waits for any result before calling it lost
REQUEST_ID_MAX_BYTES = 64  # the ledger's request_id is varchar(64)


class DatabaseError(Exception):
    pass


def parse_soci_params(text):
    """key=value pairs of a SOCI connect string's parameters; values may be 'single quoted'."""
    params, i, n = {}, 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise ValueError(f"connect string parameter without '=' at offset {i}")
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == "'":
            i += 1
            value = []
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            params[key] = "".join(value)
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            params[key] = text[start:i]
    return params


def _conninfo_quote(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Database:
    """One test server, reached through its command-line client (python has no drivers here)."""

    def __init__(self, kind, connect_string, ctl, tls_connect_string=None):
        self.kind = kind  # "postgresql" | "mysql"
        self.label = "PostgreSQL" if kind == "postgresql" else "MariaDB"
        self.short = "pg" if kind == "postgresql" else "mysql"
        self.connect_string = connect_string
        self.tls_connect_string = tls_connect_string
        self.ctl_command = ctl
        scheme, sep, rest = connect_string.partition("://")
        if not sep or scheme not in ("postgresql", "postgres", "mysql", "mariadb"):
            raise DatabaseError(f"{self.label}: not a SOCI connect string (scheme://params)")
        self.params = parse_soci_params(rest)
        self.port = int(self.params.get("port", "5432" if kind == "postgresql" else "3306"))
        self._saved_wait_timeout = None

    # --- SQL through the CLI ------------------------------------------------------------------
    def sql(self, statement, timeout=30):
        """Rows (lists of strings) of the statement's result; raises DatabaseError."""
        p = self.params
        env = dict(os.environ)
        if self.kind == "postgresql":
            conninfo = " ".join(
                f"{k}={_conninfo_quote(v)}" for k, v in p.items() if k != "password"
            )
            env["PGPASSWORD"] = p.get("password", "")
            env["PGCONNECT_TIMEOUT"] = "5"
            env["PGCLIENTENCODING"] = "UTF8"  # request ids and accounts compared as UTF-8
            argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
            argv += ["-d", conninfo, "-c", statement]
        else:
            env["MYSQL_PWD"] = p.get("password", "")
            argv = ["mariadb", "--no-defaults", "--batch", "--skip-column-names"]
            argv += ["--default-character-set=utf8mb4"]
            argv += ["--connect-timeout=5", "-h", p.get("host", "127.0.0.1"), "-P", str(self.port)]
            database = p.get("db", p.get("dbname", ""))
            argv += ["-u", p.get("user", ""), "-D", database, "-e", statement]
        try:
            out = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise DatabaseError(f"{self.label}: `{statement[:80]}` took more than {timeout} s")
        if out.returncode != 0:
            raise DatabaseError(
                f"{self.label}: `{statement[:80]}` failed ({out.returncode}): "
                f"{out.stderr.strip()[:400]}"
            )
        return [line.split("\t") for line in out.stdout.splitlines() if line != ""]

    def scalar(self, statement):
        rows = self.sql(statement)
        return rows[0][0] if rows and rows[0] else None

    def ctl(self, action, timeout=120, reapply=True):
        """The servers' control command (scripts/servers.sh): stop, start, restart, terminate."""
        try:
            out = subprocess.run(
                [self.ctl_command, action], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise DatabaseError(
                f"{self.label}: `{os.path.basename(self.ctl_command)} {action}` took more than "
                f"{timeout} s"
            )
        if out.returncode != 0:
            raise DatabaseError(
                f"{self.label}: `{os.path.basename(self.ctl_command)} {action}` failed "
                f"({out.returncode}): {out.stderr.strip()[:400]}"
            )
        if action in ("start", "restart") and reapply:
            self.apply_idle_timeout()

    # --- the idle timeout the freezes outlast ---------------------------------------------------
    def bootstrap_connect_string(self, base=None):
        """The connect string the bootstrap gets. PostgreSQL: idle_session_timeout through libpq's
        `options`, for the bootstrap's sessions only. MariaDB has no per-connection way in a SOCI
        connect string: the global wait_timeout is set instead (apply_idle_timeout)."""
        base = base or self.connect_string
        if self.kind == "postgresql":
            return base + f" options='-c idle_session_timeout={IDLE_TIMEOUT_S * 1000}'"
        return base

    def apply_idle_timeout(self):
        if self.kind == "mysql":
            if self._saved_wait_timeout is None:
                self._saved_wait_timeout = self.scalar("select @@global.wait_timeout")
            # New sessions take the global value; a restarted server forgot it (ctl re-applies).
            self.sql(f"set global wait_timeout = {IDLE_TIMEOUT_S}")

    def restore_idle_timeout(self):
        if self.kind == "mysql" and self._saved_wait_timeout is not None:
            self.sql(f"set global wait_timeout = {int(self._saved_wait_timeout)}")

    # --- what the server sees of a client -------------------------------------------------------
    def sessions_from(self, client_ports):
        """How many server sessions come from these client ports on 127.0.0.1."""
        if not client_ports:
            return 0
        if self.kind == "postgresql":
            ports = ",".join(str(p) for p in client_ports)
            return int(self.scalar(
                f"select count(*) from pg_stat_activity where client_port in ({ports})"))
        hosts = ",".join(f"'127.0.0.1:{p}'" for p in client_ports)
        return int(self.scalar(
            f"select count(*) from information_schema.processlist where host in ({hosts})"))

    def wait_sessions_gone(self, client_ports, timeout):
        end = time.monotonic() + timeout
        while True:
            n = self.sessions_from(client_ports)
            if n == 0 or time.monotonic() >= end:
                return n
            time.sleep(0.05)

    def abandoned_sessions(self):
        """Sessions whose client went away without saying goodbye: PostgreSQL's
        pg_stat_database.sessions_abandoned (EOF without a Terminate message), MariaDB's
        Aborted_clients (no COM_QUIT; wait_timeout expiries count there too)."""
        if self.kind == "postgresql":
            return int(self.scalar(
                "select sessions_abandoned from pg_stat_database "
                "where datname = current_database()"))
        return int(self.sql("show global status like 'Aborted_clients'")[0][1])

    def tls_sessions(self, client_ports):
        """PostgreSQL: how many of these sessions use TLS. MariaDB: None (not visible per
        session without performance_schema; the caller uses Ssl_accepts instead)."""
        if self.kind != "postgresql" or not client_ports:
            return None
        ports = ",".join(str(p) for p in client_ports)
        return int(self.scalar(
            "select count(*) from pg_stat_ssl s join pg_stat_activity a using (pid) "
            f"where a.client_port in ({ports}) and s.ssl"))

    def ssl_accepts(self):
        return int(self.sql("show global status like 'Ssl_accepts'")[0][1])

    # --- hanging the server (SIGSTOP) -----------------------------------------------------------
    def server_pids(self):
        """The server's processes (PostgreSQL: postmaster first, then its children), or [] when
        they cannot be found or signalled from here."""
        d = os.environ.get("WARMPOOL_TEST_SERVERS_DIR")
        if not d:
            return []
        if self.kind == "postgresql":
            if os.environ.get("WARMPOOL_TEST_SIGSTOP") != "1":
                return []
            pidfile = os.path.join(d, "postgresql", "data", "postmaster.pid")
        else:
            pidfile = os.path.join(d, "mariadb", "mysqld.pid")
        try:
            with open(pidfile) as f:
                main = int(f.readline().strip())
            os.kill(main, 0)
        except (OSError, ValueError):
            return []
        pids = [main]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue
                if ppid == main:
                    pids.append(int(entry))
        return pids

    def ledger_rows(self, account_prefix):
        rows = self.sql(
            f"select request_id, account, amount from ledger where account like '{account_prefix}%'"
        )
        return {r[0]: (r[1], int(r[2])) for r in rows}


class RotatingAccount:
    """The password-checked account ROTATING_USER (PostgreSQL checks its password because
    scripts/servers.sh lists it with scram-sha-256 in pg_hba.conf; MariaDB checks every
    account's), with the rights the ledger needs on the test database. Statements holding a
    password are run so that a failure's message does not show them."""

    def __init__(self, db):
        self.db = db
        self.owner = None

    def _secret_sql(self, statement, what):
        try:
            self.db.sql(statement)
        except DatabaseError as e:
            # The message quotes the statement: keep only the server's answer after it.
            raise DatabaseError(
                f"{self.db.label}: {what} for {ROTATING_USER} failed: "
                f"{str(e).rsplit(': ', 1)[-1][:300]}"
            ) from None

    def literal(self, password):
        if self.db.kind == "postgresql":  # standard_conforming_strings: only ' is special
            return "'" + password.replace("'", "''") + "'"
        return "'" + password.replace("\\", "\\\\").replace("'", "''") + "'"

    def create(self, password):
        self.drop()
        if self.db.kind == "postgresql":
            self.owner = self.db.scalar("select current_user")
            self._secret_sql(
                f"create role {ROTATING_USER} login password {self.literal(password)}",
                "create role",
            )
            # The ledger's init runs create table/index if not exists, which need CREATE on the
            # schema and ownership of an existing table: membership in its owner gives that.
            self.db.sql(f"grant create, usage on schema public to {ROTATING_USER}")
            self.db.sql(f'grant "{self.owner}" to {ROTATING_USER}')
        else:
            self._secret_sql(
                f"create user '{ROTATING_USER}'@'127.0.0.1' identified by "
                f"{self.literal(password)}",
                "create user",
            )
            # The test account has ALL PRIVILEGES without GRANT OPTION, so GRANT is refused; a
            # row in mysql.db (dropped with the user) gives the same database-level rights.
            database = self.db.params.get("db", self.db.params.get("dbname", ""))
            self.db.sql(
                "insert into mysql.db (Host, Db, User, Select_priv, Insert_priv, Update_priv, "
                "Delete_priv, Create_priv, Index_priv) values ('127.0.0.1', "
                f"'{database}', '{ROTATING_USER}', 'Y', 'Y', 'Y', 'Y', 'Y', 'Y')"
            )
            self.db.sql("flush privileges")

    def set_password(self, password):
        if self.db.kind == "postgresql":
            statement = f"alter role {ROTATING_USER} password {self.literal(password)}"
        else:
            statement = (
                f"alter user '{ROTATING_USER}'@'127.0.0.1' identified by {self.literal(password)}"
            )
        self._secret_sql(statement, "changing the password")

    def terminate_sessions(self):
        """Ends the account's sessions (scripts/servers.sh's terminate ends only the test
        accounts' on MariaDB); returns how many there were."""
        if self.db.kind == "postgresql":
            return int(self.db.scalar(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                f"where usename = '{ROTATING_USER}'"))
        ids = [r[0] for r in self.db.sql(
            f"select id from information_schema.processlist where user = '{ROTATING_USER}'")]
        for i in ids:
            try:
                self.db.sql(f"kill {int(i)}")
            except DatabaseError:
                pass  # it ended meanwhile
        return len(ids)

    def connect_string(self):
        """The bootstrap's DATABASE for the account: the test server's, without a password."""
        p = dict(self.db.params)
        p.pop("password", None)
        p["user"] = ROTATING_USER
        if self.db.kind == "postgresql":
            base = " ".join(f"{k}={_conninfo_quote(v)}" for k, v in p.items())
        else:
            base = " ".join(f"{k}={v}" for k, v in p.items())
        scheme = self.db.connect_string.partition("://")[0]
        return self.db.bootstrap_connect_string(f"{scheme}://{base}")

    def drop(self):
        if self.db.kind == "postgresql":
            exists = self.db.scalar(
                f"select count(*) from pg_roles where rolname = '{ROTATING_USER}'")
            if exists != "0":
                owner = self.owner or self.db.scalar("select current_user")
                # A ledger table it created (when it ran first) is handed back before the drop.
                self.db.sql(f'reassign owned by {ROTATING_USER} to "{owner}"')
                self.db.sql(f"drop owned by {ROTATING_USER}")
                self.db.sql(f"drop role {ROTATING_USER}")
        else:
            self.db.sql(f"drop user if exists '{ROTATING_USER}'@'127.0.0.1'")


def _signal_all(pids, sig):
    """Signals each process; one that ended meanwhile (a backend closing) is no error."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class ServerRun:
    """Everything recorded about one server's run."""

    def __init__(self, db, prefix):
        self.db = db
        self.prefix = prefix  # accounts of this run on this server start with it
        self.balance = collections.defaultdict(int)  # expected balance per account
        self.uncertain = set()  # accounts whose balance a failed invocation may have changed
        self.succeeded = []  # invocations answered with a correct-looking response
        self.deliberate = []  # the deadline scenario's invocations, which must fail
        self.environments = []
        self.sigterm_ms = []
        self.init_ms = []
        self.deadline_margins_ms = []
        self.lock = threading.Lock()


class Suite:
    def __init__(self, args):
        self.args = args
        self.failures = []
        self.notes = []
        self.run_id = time.strftime("%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.rng = random.Random(args.seed)
        self.runs = []
        os.makedirs(args.logs, exist_ok=True)
        self.env_count = 0

    # --- reporting ------------------------------------------------------------------------------
    def fail(self, run, scenario, message, env=None):
        where = f"[{run.db.label} / {scenario}]"
        text = f"FAIL {where} {message}"
        if env is not None:
            state = "running" if env.returncode is None else describe_returncode(env.returncode)
            text += f"\n    process: {state}; log: {env.log_path}"
            tail = env.log_tail(15)
            if tail:
                indented = "\n".join("      " + line for line in tail.splitlines())
                text += "\n    last lines of its log:\n" + indented
        self.failures.append(f"{where} {message}")
        print(text, flush=True)

    def say(self, run, scenario, message):
        print(f"  [{run.db.label} / {scenario}] {message}", flush=True)

    # --- environments ---------------------------------------------------------------------------
    def make_env(self, run, scenario, tree=False, database=None, variables=None, **kw):
        self.env_count += 1
        name = f"{run.db.short}-{scenario}-{self.env_count}"
        bootstrap = self.args.tree_bootstrap if tree else self.args.zip_bootstrap
        variables = dict(variables or {})
        variables["DATABASE"] = database or run.db.bootstrap_connect_string()
        if not tree:
            # Lambda sets it for every runtime; the unzipped folder plays /var/task.
            variables["LAMBDA_TASK_ROOT"] = os.path.dirname(bootstrap)
        env = Environment(
            [bootstrap],
            variables,
            name=name,
            log_path=os.path.join(self.args.logs, name + ".log"),
            **kw,
        )
        env.start()
        run.environments.append(env)
        return env

    def finish_env(self, run, scenario, env):
        """Protocol checks every environment gets at its end, then close()."""
        for v in env.violations:
            self.fail(run, scenario, f"Runtime API protocol: {v}", env)
        for _, et, em, _ in env.init_errors:
            self.fail(
                run,
                scenario,
                f"expected no POST /runtime/init/error, got errorType={et!r} "
                f"errorMessage={em!r}",
                env,
            )
        if env.init_duration_s is not None:
            run.init_ms.append(env.init_duration_s * 1000)
        env.close()

    def alive_or_fail(self, run, scenario, env):
        if env.alive:
            return True
        self.fail(run, scenario, "expected the runtime process to keep running; it exited", env)
        return False

    # --- invocations ----------------------------------------------------------------------------
    def event(self, run, account, amount, work_ms=None):
        e = {"account": account, "amount": amount}
        if work_ms is not None:
            e["work_ms"] = work_ms
        return e

    def send(
        self,
        run,
        scenario,
        env,
        account,
        amount=None,
        work_ms=None,
        timeout_ms=10000,
        group="",
        request_id=None,
    ):
        """Invokes and waits; the result is checked against the expected balance. `group` keeps
        an invocation's latency apart in the report (TLS)."""
        if amount is None:
            amount = self.rng.randint(-500, 1000)
        inv = env.invoke(
            self.event(run, account, amount, work_ms),
            timeout_ms=timeout_ms,
            request_id=request_id,
            meta={
                "account": account,
                "amount": amount,
                "work_ms": work_ms or 0,
                "scenario": scenario,
                "group": group,
            },
        )
        if not inv.wait(RESULT_WAIT_S):
            self.fail(
                run,
                scenario,
                f"expected a result within {RESULT_WAIT_S} s; none came: {inv.describe()}",
                env,
            )
            run.uncertain.add(account)
            return inv
        self.check_response(run, scenario, inv, env)
        return inv

    def check_response(self, run, scenario, inv, env=None):
        account, amount = inv.meta["account"], inv.meta["amount"]
        with run.lock:
            expected = run.balance[account] + amount
            if inv.outcome != "response":
                run.uncertain.add(account)
                self.fail(
                    run,
                    scenario,
                    f"expected a response with balance {expected}; got {inv.describe()}",
                    env,
                )
                return False
            res = inv.result
            good = (
                isinstance(res, dict)
                and res.get("account") == account
                and type(res.get("balance")) is int
                and res.get("balance") == expected
            )
            run.balance[account] = expected
            run.succeeded.append(inv)
        if not good:
            hint = ""
            if account in run.uncertain:
                hint = " (an earlier invocation for this account failed, so the balance may be off)"
            self.fail(
                run,
                scenario,
                f'expected {{"account":"{account}","balance":{expected}}} (the sum of the '
                f"amounts sent for the account); got {inv.body.decode(errors='replace')[:300]}"
                f"{hint}",
                env,
            )
        return good

    def expect_kind(self, run, scenario, inv, kind):
        if inv.kind != kind:
            self.fail(
                run,
                scenario,
                f"expected request {inv.request_id} to be delivered as a {kind} invocation; "
                f"it was {inv.kind}",
            )

    # --- checks shared by scenarios -------------------------------------------------------------
    def held_connections(self, run, scenario, env, require):
        ports = env.tcp_connections(run.db.port)
        if require and not ports:
            self.fail(
                run,
                scenario,
                f"expected the idle environment to keep its database connection between "
                f"invocations (that is what the pool is for); its processes hold no TCP "
                f"connection to port {run.db.port}",
                env,
            )
        return ports

    def sigterm(self, run, scenario, env, polite_check=False, account=None):
        """SIGTERM while idle in /next: exit within 300 ms, and its sessions are gone from the
        server; with polite_check, also closed with the protocol's goodbye (not just dropped).
        The polite check needs a connection the server lists: if the server's idle timeout
        closed it meanwhile (a slow machine), one more invocation on `account` opens another."""
        if not env.wait_idle(10):
            self.fail(
                run,
                scenario,
                f"expected the runtime back in /next before SIGTERM; state {env.state()}",
                env,
            )
            return
        ports = env.tcp_connections(run.db.port)
        for _ in range(3):
            if not polite_check or account is None or not ports:
                break
            if run.db.sessions_from(ports) == len(ports):
                break
            self.send(run, scenario, env, account)
            env.wait_idle(10)
            ports = env.tcp_connections(run.db.port)
        if polite_check:
            if not ports:
                self.fail(
                    run,
                    scenario,
                    "expected a database connection open before SIGTERM (to check it is "
                    "closed); there was none",
                    env,
                )
                return
            seen = run.db.sessions_from(ports)
            if seen != len(ports):
                self.fail(
                    run,
                    scenario,
                    f"expected the server to list the runtime's {len(ports)} connection(s) "
                    f"(client ports {ports}) before SIGTERM; it lists {seen}",
                )
            abandoned_before = run.db.abandoned_sessions()
        took = env.sigterm(timeout=5)
        if took is None:
            self.fail(
                run,
                scenario,
                f"expected the runtime to exit within {SIGTERM_LIMIT_S * 1000:.0f} ms of "
                "SIGTERM; it was still running after 5 s (SIGKILLed)",
                env,
            )
            return
        run.sigterm_ms.append(took * 1000)
        if took >= SIGTERM_LIMIT_S:
            self.fail(
                run,
                scenario,
                f"expected the runtime to exit within {SIGTERM_LIMIT_S * 1000:.0f} ms of "
                f"SIGTERM; it took {took * 1000:.1f} ms",
                env,
            )
        rc = env.returncode
        if rc is not None and rc < 0:
            self.fail(
                run,
                scenario,
                "expected the runtime to handle SIGTERM (close its pool, then exit); it was "
                f"{describe_returncode(rc)}",
                env,
            )
        elif rc not in (0, 128 + signal.SIGTERM):
            self.fail(
                run,
                scenario,
                f"expected exit code 0 (or 143) after SIGTERM; got {describe_returncode(rc)}",
                env,
            )
        left = run.db.wait_sessions_gone(ports, 2.0)
        if left:
            self.fail(
                run,
                scenario,
                f"expected the server to drop the runtime's sessions (client ports {ports}) "
                f"once it exited; {left} still listed after 2 s",
            )
        if polite_check:
            # The server counts the session's end when its backend exits: give it a moment.
            time.sleep(0.3)
            abandoned = run.db.abandoned_sessions() - abandoned_before
            if abandoned > 0:
                what = "Aborted_clients"
                if run.db.kind == "postgresql":
                    what = "pg_stat_database.sessions_abandoned"
                self.fail(
                    run,
                    scenario,
                    f"expected the runtime to close its {len(ports)} connection(s) with the "
                    f"protocol's goodbye on SIGTERM (pool closed); the server counted "
                    f"{abandoned} session(s) "
                    f"abandoned without it ({what} +{abandoned})",
                    env,
                )

    def freeze_for(self, run, scenario, env, action=None):
        """Freeze once the runtime waits in /next, do `action` to the server while frozen, stay
        frozen FREEZE_S in all (longer than the server's idle timeout), thaw. Returns the client
        ports the environment held when frozen."""
        env.freeze(timeout=10)
        t0 = time.monotonic()
        ports = env.tcp_connections(run.db.port)
        try:
            if action == "idle":
                # The point of the scenario: the server closes the idle session while frozen.
                left = run.db.wait_sessions_gone(ports, IDLE_TIMEOUT_S + 3)
                if left:
                    self.fail(
                        run,
                        scenario,
                        f"expected the server to close the frozen environment's idle session "
                        f"after its idle timeout of {IDLE_TIMEOUT_S} s; {left} session(s) still "
                        f"open after "
                        f"{IDLE_TIMEOUT_S + 3} s (is the idle timeout applied?)",
                    )
            elif action in ("terminate", "restart"):
                run.db.ctl(action)
                if action == "terminate":
                    left = run.db.wait_sessions_gone(ports, 3)
                    if left:
                        self.fail(
                            run,
                            scenario,
                            f"expected `{action}` to close the frozen environment's sessions; "
                            f"{left} still open",
                        )
            rest = FREEZE_S - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
        finally:
            env.thaw()
        return ports

    # --- scenarios ------------------------------------------------------------------------------
    def scenario_tree_smoke(self, run):
        """The bootstrap from the build tree (not the zip): a cold start, warm invocations."""
        sc = "build-tree bootstrap"
        env = self.make_env(run, "tree", tree=True)
        try:
            acct = f"{run.prefix}tree"
            first = self.send(run, sc, env, acct)
            self.expect_kind(run, sc, first, "cold")
            for _ in range(5):
                self.send(run, sc, env, acct)
            if self.alive_or_fail(run, sc, env):
                self.sigterm(run, sc, env)
        finally:
            self.finish_env(run, sc, env)

    def scenario_cold_starts(self, run, count):
        sc = "cold starts"
        for i in range(count):
            env = self.make_env(run, "cold")
            try:
                inv = self.send(run, sc, env, f"{run.prefix}cold{i}")
                self.expect_kind(run, sc, inv, "cold")
                if i == 0:
                    self.check_bundle(run, sc, env)
                if self.alive_or_fail(run, sc, env):
                    self.sigterm(run, sc, env)
            finally:
                self.finish_env(run, sc, env)

    def check_bundle(self, run, scenario, env):
        """The zip must be self-contained: every shared object the running bootstrap mapped
        comes from the unzipped folder (glibc's NSS modules excepted: glibc loads them from the
        system by design, and every Linux has them)."""
        root = os.path.dirname(os.path.realpath(self.args.zip_bootstrap)) + os.sep
        outside = set()
        try:
            with open(f"/proc/{env.pid}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    path = parts[5].strip() if len(parts) == 6 else ""
                    if ".so" not in os.path.basename(path) or not path.startswith("/"):
                        continue
                    if os.path.realpath(path).startswith(root) or path.startswith(root):
                        continue
                    if os.path.basename(path).startswith("libnss_"):
                        continue
                    outside.add(path)
        except OSError as e:
            self.fail(run, scenario, f"cannot read /proc/{env.pid}/maps to check the bundle: {e}")
            return
        if outside:
            self.fail(
                run,
                scenario,
                f"expected the unzipped bootstrap to load only libraries from its own folder "
                f"{root}; it mapped {len(outside)} from elsewhere: {', '.join(sorted(outside))}",
            )
        else:
            self.say(
                run,
                scenario,
                "the running bootstrap maps only libraries from the unzipped folder",
            )

    def scenario_lifecycle(self, run, warm_count):
        """Cold, warm, then thaws: after the server's idle timeout, after its sessions were
        terminated, after it restarted, all while frozen. Ends with the SIGTERM check."""
        sc = "warm and thaw"
        env = self.make_env(run, "lifecycle")
        try:
            acct = f"{run.prefix}life"
            self.expect_kind(run, sc, self.send(run, sc, env, acct), "cold")
            for _ in range(warm_count):
                self.send(run, sc, env, acct)
            if not self.alive_or_fail(run, sc, env):
                return
            plan = [("idle", 3), ("terminate", 2), ("restart", 1)]
            for action, times in plan:
                sub = f"thaw after {'idle timeout' if action == 'idle' else action}"
                for _ in range(times):
                    if not env.wait_idle(10):
                        self.fail(
                            run,
                            sub,
                            f"expected the runtime back in /next; state {env.state()}",
                            env,
                        )
                        return
                    self.held_connections(run, sub, env, require=True)
                    self.freeze_for(run, sub, env, action)
                    inv = self.send(run, sub, env, acct)
                    self.expect_kind(run, sub, inv, "thaw")
                    for _ in range(3):
                        self.send(run, sub, env, acct)
                    if not self.alive_or_fail(run, sub, env):
                        return
            # The polite-close check counts sessions ended without a goodbye; MariaDB counts the
            # ones its wait_timeout ends there too, so this last connection gets a long one.
            if run.db.kind == "mysql":
                run.db.sql("set global wait_timeout = 3600")
                run.db.ctl("terminate", reapply=False)
            try:
                self.send(run, "SIGTERM", env, acct)
                self.sigterm(run, "SIGTERM", env, polite_check=True, account=acct)
            finally:
                run.db.apply_idle_timeout()
        finally:
            self.finish_env(run, sc, env)

    def scenario_snap_start(self, run):
        """SnapStart: init, /restore/next (the snapshot), server sessions killed meanwhile, the
        restored copy answers invocations; /restore/error is never used."""
        sc = "SnapStart restore"
        env = self.make_env(run, "snapstart", snap_start=True)
        try:
            if not env.wait_restore_next(15):
                calls = ", ".join(c for _, c in env.api_calls) or "none"
                self.fail(
                    run,
                    sc,
                    "expected GET /runtime/restore/next after init with "
                    "AWS_LAMBDA_INITIALIZATION_TYPE=snap-start; Runtime API calls seen: "
                    f"{calls}",
                    env,
                )
                return
            held = env.tcp_connections(run.db.port)
            self.say(
                run,
                sc,
                f"at the snapshot the runtime holds {len(held)} database connection(s)",
            )
            # The snapshot: the process is frozen at /restore/next; the restored copy's sockets
            # are dead (the server ends them here, the closest a test can get), and its clocks
            # would have jumped, which cannot be emulated without privileges (clock_settime
            # would step the whole machine's clock).
            env.freeze_now()
            try:
                run.db.ctl("terminate")
                time.sleep(FREEZE_S)
            finally:
                env.release_restore()
            acct = f"{run.prefix}snap"
            first = self.send(run, sc, env, acct)
            self.expect_kind(run, sc, first, "restore")
            for _ in range(4):
                self.send(run, sc, env, acct)
            # A second thaw of the restored copy, with its sessions killed again.
            if self.alive_or_fail(run, sc, env):
                self.freeze_for(run, sc, env, "terminate")
                self.expect_kind(run, sc, self.send(run, sc, env, acct), "thaw")
            for _, et, em, _ in env.restore_errors:
                self.fail(
                    run,
                    sc,
                    f"expected no POST /runtime/restore/error; got errorType={et!r} "
                    f"errorMessage={em!r}",
                    env,
                )
            if self.alive_or_fail(run, sc, env):
                self.sigterm(run, sc, env)
        finally:
            self.finish_env(run, sc, env)

    def scenario_concurrency(self, run, chains=4, per_chain=8, work_ms=100):
        """AWS_LAMBDA_MAX_CONCURRENCY=4: four chains of events at once on one environment, each
        chain on its own account (so every balance is exact)."""
        sc = "MAX_CONCURRENCY=4"
        env = self.make_env(run, "concurrency", max_concurrency=chains)
        try:
            self.send(run, sc, env, f"{run.prefix}conc-init")
            if not env.wait_idle(10):
                self.fail(
                    run,
                    sc,
                    f"expected the runtime to wait in {chains} concurrent /next calls when "
                    f"idle; state {env.state()}",
                    env,
                )
            results = [[] for _ in range(chains)]

            def chain(i):
                for _ in range(per_chain):
                    amount = self.rng.randint(-500, 1000)
                    acct = f"{run.prefix}conc{i}"
                    inv = env.invoke(
                        self.event(run, acct, amount, work_ms),
                        timeout_ms=10000,
                        meta={
                            "account": acct,
                            "amount": amount,
                            "work_ms": work_ms,
                            "scenario": sc,
                        },
                    )
                    results[i].append(inv)
                    if not inv.wait(RESULT_WAIT_S) or inv.outcome != "response":
                        return

            threads = [threading.Thread(target=chain, args=(i,)) for i in range(chains)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for i in range(chains):
                for inv in results[i]:
                    self.check_response(run, sc, inv, env)
                if len(results[i]) < per_chain:
                    self.fail(
                        run,
                        sc,
                        f"chain {i} stopped after its failed invocation ({len(results[i])} of "
                        f"{per_chain} sent)",
                    )
            if env.max_inflight != chains:
                self.fail(
                    run,
                    sc,
                    f"expected {chains} invocations in flight at once with "
                    f"AWS_LAMBDA_MAX_CONCURRENCY={chains} and {chains} concurrent callers; at "
                    f"most {env.max_inflight} were",
                )
            if self.alive_or_fail(run, sc, env):
                ports = self.held_connections(run, sc, env, require=False)
                self.say(
                    run,
                    sc,
                    f"at most {env.max_inflight} in flight; {len(ports)} database "
                    "connection(s) open when idle",
                )
                self.sigterm(run, sc, env)
        finally:
            self.finish_env(run, sc, env)

    def deadline_invocation(self, run, scenario, env, how):
        """One event with a deadline DEADLINE_EVENT_MS away while the server is unreachable or
        hung: it must be posted to /error, before the deadline, with a useful errorType."""
        acct = f"{run.prefix}deadline"
        amount = self.rng.randint(1, 1000)
        inv = env.invoke(
            self.event(run, acct, amount),
            timeout_ms=DEADLINE_EVENT_MS,
            meta={
                "account": acct,
                "amount": amount,
                "work_ms": 0,
                "scenario": scenario,
                "deliberate": True,
                "figures": False,
            },
        )
        run.deliberate.append(inv)
        inv.wait(DEADLINE_EVENT_MS / 1000 + 1.0)
        return inv

    def settle_deliberate(self, run, inv):
        """A deadline invocation that came back with a response after all (a failure already
        reported) did change the balance: count it, so later checks do not fail for it too."""
        if inv.outcome == "response" or inv.late_post == "response":
            with run.lock:
                run.balance[inv.meta["account"]] += inv.meta["amount"]

    def judge_deadline(self, run, scenario, env, inv, how, server_back):
        """Judged once the server is back and the runtime idle again, so that a late answer is
        seen and described; what counts is when it arrived."""
        want = (
            f"a POST /error before the deadline ({DEADLINE_EVENT_MS} ms after delivery) with "
            f"errorType one of {', '.join(DEADLINE_ERROR_TYPES)}"
        )
        back_ms = (server_back - inv.t_delivered) * 1000 if inv.t_delivered else None
        if inv.outcome is None:
            self.fail(
                run,
                scenario,
                f"{how}: expected {want}; nothing came at all, not even the emulator's timeout",
                env,
            )
            return
        if inv.outcome == "timed_out":
            # The emulator times an invocation out at its deadline, as Lambda does; whatever
            # the runtime posted later is in describe().
            when = ""
            if inv.late_post and back_ms is not None:
                took = inv.wall_late_ms - inv.wall_delivered_ms
                if took > back_ms:
                    when = (
                        f" (posted {took:.0f} ms after delivery, {took - back_ms:.0f} ms after "
                        f"the server was back at {back_ms:.0f} ms)"
                    )
                else:
                    when = f" (posted {took:.0f} ms after delivery, the server still down)"
            self.fail(run, scenario, f"{how}: expected {want}; {inv.describe()}{when}", env)
            return
        margin = inv.deadline_ms - inv.wall_result_ms
        if inv.outcome != "error":
            took = (inv.t_result - inv.t_delivered) * 1000
            self.fail(
                run,
                scenario,
                f"{how}: expected {want}; got a {inv.outcome} {took:.0f} ms after delivery: "
                f"{inv.describe()}",
                env,
            )
            return
        if inv.error_type not in DEADLINE_ERROR_TYPES:
            self.fail(
                run,
                scenario,
                f"{how}: expected {want}; got errorType {inv.error_type!r}: {inv.describe()}",
                env,
            )
        if not inv.error_message:
            self.fail(
                run,
                scenario,
                f"{how}: expected an errorMessage saying what failed; it was empty",
            )
        run.deadline_margins_ms.append(margin)
        self.say(
            run,
            scenario,
            f"{how}: /error {inv.error_type} {margin} ms before the deadline: "
            f"{inv.error_message[:160] if inv.error_message else ''}",
        )

    def scenario_deadline(self, run):
        """An event due 1.5 s after delivery while the server cannot answer: hung (SIGSTOP, when
        the server's processes can be signalled from here) with a connection used just before
        (handed out without a ping) and with one idle for 0.7 s (past the example's 500 ms
        validation window: pinged at checkout, and replaced when the ping fails); then stopped
        (connections refused). Each must end in /error before the deadline, and the environment
        must serve the next event once the server is back."""
        sc = "deadline"
        env = self.make_env(run, "deadline")
        acct = f"{run.prefix}deadline"
        try:
            self.send(run, sc, env, acct)
            pids = run.db.server_pids()
            if pids:
                for label, idle_s in (
                    ("hung, connection just used", 0.0),
                    ("hung, connection idle 0.7 s", 0.7),
                ):
                    self.send(run, sc, env, acct)
                    if not env.wait_idle(10):
                        self.fail(
                            run,
                            sc,
                            f"expected the runtime back in /next; state {env.state()}",
                            env,
                        )
                        return
                    time.sleep(idle_s)
                    pids = run.db.server_pids()
                    _signal_all(pids, signal.SIGSTOP)
                    try:
                        # The event must meet a server already hung, not one still finishing.
                        if not wait_stopped(pids):
                            raise EmulatorError(
                                f"{run.db.label}'s processes {pids} did not all stop within 2 s "
                                "of SIGSTOP"
                            )
                        inv = self.deadline_invocation(run, sc, env, label)
                    finally:
                        _signal_all(reversed(pids), signal.SIGCONT)
                    back = time.monotonic()
                    idle = env.wait_idle(15)
                    self.judge_deadline(run, sc, env, inv, label, back)
                    if not idle:
                        self.fail(
                            run,
                            sc,
                            f"{label}: expected the runtime back in /next once the server "
                            f"resumed; state {env.state()}",
                            env,
                        )
                        return
                    self.settle_deliberate(run, inv)
                    self.send(run, f"{sc} (after: {label})", env, acct)
            else:
                why = "its process cannot be signalled from here"
                if run.db.kind == "postgresql":
                    why = "WARMPOOL_TEST_SIGSTOP is not 1"
                self.say(run, sc, f"hung-server variants not run: {why}")
            if not env.wait_idle(10):
                self.fail(run, sc, f"expected the runtime back in /next; state {env.state()}", env)
                return
            run.db.ctl("stop")
            try:
                inv = self.deadline_invocation(run, sc, env, "stopped")
            finally:
                run.db.ctl("start")
            back = time.monotonic()
            idle = env.wait_idle(15)
            self.judge_deadline(run, sc, env, inv, "stopped", back)
            if not idle:
                self.fail(
                    run,
                    sc,
                    "stopped: expected the runtime back in /next once the server started "
                    f"again; state {env.state()}",
                    env,
                )
                return
            self.settle_deliberate(run, inv)
            self.send(run, f"{sc} (after: stopped)", env, acct)
            if self.alive_or_fail(run, sc, env):
                self.sigterm(run, sc, env)
        finally:
            self.finish_env(run, sc, env)

    def escaped_request_ids(self, run):
        """Request ids the runtime must percent-encode in its result's path: a quote, spaces,
        percent signs (some that look like escapes), '/', '?', '#', '+', '&', non-ASCII UTF-8
        (2, 3 and 4 bytes), one exactly REQUEST_ID_MAX_BYTES long. Unique to the run; none
        longer than the ledger's varchar(64), none with a control character (the example
        rejects those)."""
        tag = f"{self.run_id}{run.db.short}"
        ids = [
            f"{tag} \"quoted\" it's",
            f"{tag} 100% %41%2F%zz%",
            f"{tag}/a/b?c=d#e+f&g;h",
            f"{tag} é € 😀 ünï",
        ]
        fill = f"{tag} ï"
        while len((fill + "é").encode()) <= REQUEST_ID_MAX_BYTES:
            fill += "é"
        ids.append(fill + "x" * (REQUEST_ID_MAX_BYTES - len(fill.encode())))
        for rid in ids:
            assert len(rid.encode()) <= REQUEST_ID_MAX_BYTES, rid
        return ids

    def scenario_escaped_ids(self, run):
        """Request ids with characters a URL path must escape: the runtime gets each in the
        Lambda-Runtime-Aws-Request-Id header, posts its response to
        /runtime/invocation/{percent-encoded id}/response (the emulator decodes it and matches
        the exact id), and the ledger row is keyed by the exact id."""
        sc = "escaped request ids"
        env = self.make_env(run, "escaped-ids")
        acct = f"{run.prefix}escaped"
        ids = self.escaped_request_ids(run)
        try:
            sent = [self.send(run, sc, env, acct, request_id=rid) for rid in ids]
            rows = run.db.ledger_rows(acct)
            for inv in sent:
                if inv.outcome != "response":
                    continue  # send() has said why
                row = rows.get(inv.request_id)
                if row != (acct, inv.meta["amount"]):
                    near = [r for r in rows if r not in ids]
                    self.fail(
                        run,
                        sc,
                        f"expected a ledger row keyed by the exact request id "
                        f"{inv.request_id!r} ({len(inv.request_id.encode())} bytes) with "
                        f"({acct!r}, {inv.meta['amount']}); found {row!r}; rows of the account "
                        f"under other ids: {near[:3]!r}",
                    )
            if self.alive_or_fail(run, sc, env):
                good = sum(inv.outcome == "response" for inv in sent)
                self.say(run, sc, f"{good} of {len(ids)} ids answered and found in the ledger")
                self.sigterm(run, sc, env)
        finally:
            self.finish_env(run, sc, env)

    def scenario_tls(self, run):
        sc = "TLS thaw after terminate"
        tls = run.db.tls_connect_string
        var = f"WARMPOOL_TEST_{'PG' if run.db.kind == 'postgresql' else 'MYSQL'}_TLS"
        if not tls:
            msg = (
                f"TLS not available: {var} is not exported, so the thaw-after-terminate "
                "scenario did not run over TLS"
            )
            self.say(run, sc, msg)
            self.notes.append(f"{run.db.label}: {msg}")
            return
        before = run.db.ssl_accepts() if run.db.kind == "mysql" else None
        env = self.make_env(run, "tls", database=run.db.bootstrap_connect_string(tls))
        try:
            acct = f"{run.prefix}tls"
            for _ in range(3):
                self.send(run, sc, env, acct, group="TLS")
            if not env.wait_idle(10):
                self.fail(run, sc, f"expected the runtime back in /next; state {env.state()}", env)
                return
            ports = self.held_connections(run, sc, env, require=True)
            if run.db.kind == "postgresql":
                n = run.db.tls_sessions(ports)
                if not ports or n != len(ports):
                    self.fail(
                        run,
                        sc,
                        f"expected the runtime's {len(ports)} session(s) to use TLS "
                        f"(pg_stat_ssl); {n} do",
                    )
            elif run.db.ssl_accepts() - before < 1:
                self.fail(
                    run,
                    sc,
                    "expected the server to count a TLS handshake (Ssl_accepts) for the "
                    "runtime's connection; it counted none",
                )
            self.freeze_for(run, sc, env, "terminate")
            self.expect_kind(run, sc, self.send(run, sc, env, acct, group="TLS"), "thaw")
            for _ in range(3):
                self.send(run, sc, env, acct, group="TLS")
            if self.alive_or_fail(run, sc, env):
                self.sigterm(run, sc, env)
        finally:
            self.finish_env(run, sc, env)

    def rotate_while_frozen(self, run, scenario, env, account, file_text, server_password):
        """Freezes the idle environment; while frozen: the server's password changes (unless
        None), the password file is rewritten, the account's sessions are ended; stays frozen
        past the validation window (a thaw then pings, and reconnects); thaws."""
        env.freeze(timeout=10)
        t0 = time.monotonic()
        ports = env.tcp_connections(run.db.port)
        try:
            if server_password is not None:
                account.set_password(server_password)
            self.write_password_file(file_text)
            account.terminate_sessions()
            left = run.db.wait_sessions_gone(ports, 3)
            if left:
                self.fail(
                    run,
                    scenario,
                    f"expected the frozen environment's {len(ports)} session(s) to be ended; "
                    f"{left} still open",
                )
            rest = FREEZE_S - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
        finally:
            env.thaw()

    def write_password_file(self, text):
        # Written beside and renamed over, as a secrets extension should: never seen half-written.
        tmp = self.password_file + ".new"
        with open(tmp, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, self.password_file)

    def scenario_rotated_credentials(self, run):
        """DATABASE without a password, DATABASE_PASSWORD_FILE naming a file: a cold start; the
        password rotated (server and file) and the sessions ended while frozen, and the thaw's
        reconnect uses the new one; a wrong password in the file fails the invocation with
        warmpool.ConnectError, the password not shown; the file fixed, the next one succeeds.
        No password ever appears in the runtime's log."""
        sc = "rotated credentials"
        tag = uuid.uuid4().hex[:8]
        # No blank, quote or backslash: the bootstrap refuses those (docs/lambda.md).
        first = f"first-{tag}-A1"
        second = f"second.{tag}!x%"
        wrong = f"wrong_{tag}#"
        secrets = (first, second, wrong)
        folder = tempfile.mkdtemp(prefix="warmpool-lambda-secret-")
        self.password_file = os.path.join(folder, "password")
        account = RotatingAccount(run.db)
        env = None
        acct = f"{run.prefix}rotating"
        try:
            account.create(first)
            self.write_password_file(first + "\n")
            env = self.make_env(
                run,
                "rotating",
                database=account.connect_string(),
                variables={"DATABASE_PASSWORD_FILE": self.password_file},
            )
            self.expect_kind(run, sc, self.send(run, sc, env, acct), "cold")
            self.send(run, sc, env, acct)
            if not self.alive_or_fail(run, sc, env):
                return
            sub = f"{sc}: thaw after rotation"
            self.rotate_while_frozen(run, sub, env, account, second + "\r\n", second)
            self.expect_kind(run, sub, self.send(run, sub, env, acct), "thaw")
            self.send(run, sub, env, acct)

            sub = f"{sc}: wrong password in the file"
            self.rotate_while_frozen(run, sub, env, account, wrong + "\n", None)
            inv = env.invoke(
                self.event(run, acct, 1),
                meta={"account": acct, "amount": 1, "work_ms": 0, "scenario": sub, "group": ""},
            )
            run.deliberate.append(inv)  # no ledger row may come of it
            if not inv.wait(RESULT_WAIT_S):
                self.fail(run, sub, f"expected a result within {RESULT_WAIT_S} s: {inv.describe()}")
                run.uncertain.add(acct)
            elif inv.outcome != "error" or inv.error_type != "warmpool.ConnectError":
                self.fail(
                    run,
                    sub,
                    f"expected /error with errorType 'warmpool.ConnectError' (the server refused "
                    f"the password); got {inv.describe()}",
                    env,
                )
                self.settle_deliberate(run, inv)
            else:
                self.say(run, sub, f"errorMessage: {(inv.error_message or '')[:200]}")
            posted = (inv.body or b"").decode(errors="replace")
            # The tag is in every password and nowhere else: any piece of one shows it.
            if tag in posted or any(pw in posted for pw in secrets):
                self.fail(run, sub, "expected no password in the posted error; it holds one")

            sub = f"{sc}: file fixed"
            self.write_password_file(second)
            self.send(run, sub, env, acct)
            if self.alive_or_fail(run, sc, env):
                self.sigterm(run, sc, env)
        finally:
            if env is not None:
                self.finish_env(run, sc, env)
                try:
                    with open(env.log_path, "rb") as f:
                        log = f.read().decode(errors="replace")
                except OSError as e:
                    self.fail(run, sc, f"cannot read the runtime's log {env.log_path}: {e}")
                    log = ""
                if tag in log or any(pw in log for pw in secrets):
                    self.fail(
                        run,
                        sc,
                        f"expected no password in the runtime's log {env.log_path}; one appears",
                    )
            try:
                account.drop()
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def check_ledger(self, run):
        """Exactly one row per successful invocation, keyed by request id, with its account and
        amount; none for the invocations that failed; balances match."""
        sc = "ledger"
        # A runtime that kept a hung transaction going after posting /error would commit it
        # about now: wait for stragglers before looking.
        time.sleep(0.5)
        rows = run.db.ledger_rows(run.prefix)
        expected = {i.request_id: (i.meta["account"], i.meta["amount"]) for i in run.succeeded}
        missing = [rid for rid in expected if rid not in rows]
        wrong = [rid for rid in expected if rid in rows and rows[rid] != expected[rid]]
        deliberate = {inv.request_id for inv in run.deliberate}
        sent = {inv.request_id for env in run.environments for inv in env.invocations}
        extra_deliberate = [rid for rid in rows if rid in deliberate]
        extra_failed = [
            rid for rid in rows if rid not in expected and rid in sent and rid not in deliberate
        ]
        unknown = [rid for rid in rows if rid not in sent]
        if missing:
            self.fail(
                run,
                sc,
                f"expected a ledger row for each of the {len(expected)} successful "
                f"invocations; {len(missing)} have none (lost effects), e.g. {missing[:3]}",
            )
        if wrong:
            self.fail(
                run,
                sc,
                f"expected each row to hold the invocation's account and amount; {len(wrong)} "
                f"differ, e.g. {[(r, rows[r], expected[r]) for r in wrong[:3]]}",
            )
        if extra_deliberate:
            self.fail(
                run,
                sc,
                "expected no ledger row for the deadline scenario's invocations, which were "
                f"reported to /error; found {len(extra_deliberate)}: {extra_deliberate} (the "
                "effect was committed after the failure was reported)",
            )
        if extra_failed:
            self.fail(
                run,
                sc,
                "expected no ledger row for invocations that got no successful response; "
                f"found {len(extra_failed)}, e.g. {extra_failed[:3]}",
            )
        if unknown:
            self.fail(
                run,
                sc,
                f"expected only rows for request ids the emulator sent; found {len(unknown)} "
                f"others, e.g. {unknown[:3]} (doubled or invented effects)",
            )
        sums = collections.defaultdict(int)
        for account, amount in rows.values():
            sums[account] += amount
        for account, balance in run.balance.items():
            if account not in run.uncertain and sums.get(account, 0) != balance:
                self.fail(
                    run,
                    sc,
                    f"expected sum(amount) for account {account} to be {balance}; the table "
                    f"says {sums.get(account, 0)}",
                )
        if not (missing or wrong or extra_deliberate or extra_failed or unknown):
            self.say(
                run,
                sc,
                f"{len(rows)} rows, one per successful invocation; none for the "
                f"{len(deliberate)} deliberate failures",
            )

    # --- one server -----------------------------------------------------------------------------
    def run_server(self, db):
        run = ServerRun(db, f"{self.run_id}-{db.short}-")
        self.runs.append(run)
        print(f"\n=== {db.label}: accounts {run.prefix}* ===", flush=True)
        try:
            db.apply_idle_timeout()
        except DatabaseError as e:
            self.fail(run, "setup", str(e))
            return
        scenarios = [
            ("build-tree bootstrap", lambda: self.scenario_tree_smoke(run)),
            ("cold starts", lambda: self.scenario_cold_starts(run, self.args.cold_starts)),
            ("warm and thaw", lambda: self.scenario_lifecycle(run, self.args.warm)),
            ("SnapStart restore", lambda: self.scenario_snap_start(run)),
            ("MAX_CONCURRENCY=4", lambda: self.scenario_concurrency(run)),
            ("deadline", lambda: self.scenario_deadline(run)),
            ("escaped request ids", lambda: self.scenario_escaped_ids(run)),
            ("TLS", lambda: self.scenario_tls(run)),
            ("rotated credentials", lambda: self.scenario_rotated_credentials(run)),
        ]
        try:
            for name, fn in scenarios:
                if self.args.only and not any(o.lower() in name.lower() for o in self.args.only):
                    continue
                t0 = time.monotonic()
                before = len(self.failures)
                try:
                    fn()
                except (EmulatorError, DatabaseError, OSError) as e:
                    self.fail(run, name, f"{type(e).__name__}: {e}")
                except Exception:
                    self.fail(
                        run, name, "unexpected exception in the test:\n" + traceback.format_exc()
                    )
                status = "ok" if len(self.failures) == before else "FAILED"
                print(f"  {db.label}: {name}: {status} ({time.monotonic() - t0:.1f} s)", flush=True)
                self.ensure_server_up(run)
            self.check_ledger(run)
        except DatabaseError as e:
            self.fail(run, "ledger", str(e))
        finally:
            for env in run.environments:
                env.close()
            try:
                db.restore_idle_timeout()
            except DatabaseError as e:
                self.fail(run, "teardown", str(e))

    def ensure_server_up(self, run):
        """A scenario that failed half-way may leave the server stopped: start it again."""
        try:
            run.db.scalar("select 1")
        except DatabaseError:
            print(f"  {run.db.label} is down after the scenario: starting it again", flush=True)
            run.db.ctl("start")

    # --- report ---------------------------------------------------------------------------------
    def report(self):
        out = {"run_id": self.run_id, "failures": self.failures, "notes": self.notes, "servers": {}}
        lines = [
            "",
            "Lambda example: invocation latency in ms (work_ms=0), from the emulator's side",
            f"  {'server':<15} {'kind':<8} {'count':>5} {'p50':>9} {'p99':>9} {'max':>9}",
        ]
        for run in self.runs:
            groups = collections.defaultdict(list)
            for env in run.environments:
                for inv in env.invocations:
                    m = inv.meta
                    counted = not m.get("work_ms") and m.get("figures", True)
                    if counted and inv.outcome == "response":
                        label = run.db.label + (" " + m["group"] if m.get("group") else "")
                        groups[label].append(inv)
            for label in sorted(groups, key=len):
                lat = summarize(groups[label])
                out["servers"][label] = {"latency": lat, "invocations": len(groups[label])}
                for kind in KINDS:
                    s = lat.get(kind)
                    if s:
                        lines.append(
                            f"  {label:<15} {kind:<8} {s['count']:>5} {s['p50_ms']:>9.2f} "
                            f"{s['p99_ms']:>9.2f} {s['max_ms']:>9.2f}"
                        )
            entry = out["servers"].setdefault(run.db.label, {})
            for key, values, text in (
                ("init", run.init_ms, "init (spawn to first /next or /restore/next)"),
                ("sigterm_exit", run.sigterm_ms, "SIGTERM to exit"),
            ):
                if values:
                    s = {
                        "count": len(values),
                        "p50_ms": round(percentile(values, 50), 3),
                        "p99_ms": round(percentile(values, 99), 3),
                        "max_ms": round(max(values), 3),
                    }
                    entry[key] = s
                    lines.append(
                        f"  {run.db.label:<15} {text}: p50 {s['p50_ms']:.2f}, "
                        f"max {s['max_ms']:.2f} ({s['count']})"
                    )
            entry["deadline_error_margin_ms"] = run.deadline_margins_ms
            if run.deadline_margins_ms:
                margins = ", ".join(str(m) for m in run.deadline_margins_ms)
                lines.append(
                    f"  {run.db.label:<15} deadline errors posted {margins} ms before the deadline"
                )
        print("\n".join(lines))
        if self.args.report:
            with open(self.args.report, "w") as f:
                json.dump(out, f, indent=2)
            print(f"  (written to {self.args.report}; runtime logs in {self.args.logs})")
        for n in self.notes:
            print("NOTE: " + n)
        if self.failures:
            print(f"\ntests/lambda: {len(self.failures)} check(s) failed:")
            for f in self.failures:
                print("  - " + f.splitlines()[0])
        else:
            print("\ntests/lambda: every check passed")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tree-bootstrap", required=True, help="the bootstrap from the build tree")
    p.add_argument(
        "--zip-bootstrap", required=True, help="the bootstrap of the unzipped bootstrap.zip"
    )
    p.add_argument("--servers", default="postgresql,mysql", help="which to test (default both)")
    p.add_argument("--logs", required=True, help="directory for the runtimes' logs")
    p.add_argument("--report", help="JSON file for the latency figures")
    p.add_argument("--warm", type=int, default=100, help="warm invocations in a row (default 100)")
    p.add_argument(
        "--cold-starts",
        type=int,
        default=6,
        help="environments started just for a cold invocation (default 6)",
    )
    p.add_argument("--seed", type=int, default=int(time.time()), help="seed of the random amounts")
    p.add_argument(
        "--only",
        action="append",
        help="run only scenarios whose name contains this (repeatable)",
    )
    a = p.parse_args(argv)
    suite = Suite(a)
    print(f"tests/lambda: run {suite.run_id}, seed {a.seed}; runtime logs in {a.logs}")
    dbs = []
    for kind in a.servers.split(","):
        var = "WARMPOOL_TEST_PG" if kind == "postgresql" else "WARMPOOL_TEST_MYSQL"
        cs, ctl = os.environ.get(var), os.environ.get(var + "_CTL")
        if not cs or not ctl:
            print(
                f"tests/lambda: {var} and {var}_CTL must be set (scripts/servers.sh exports them)"
            )
            return 1
        dbs.append(Database(kind, cs, ctl, os.environ.get(var + "_TLS") or None))
    t0 = time.monotonic()
    for db in dbs:
        suite.run_server(db)
    suite.report()
    print(f"tests/lambda: {time.monotonic() - t0:.1f} s")
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
