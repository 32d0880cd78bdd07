#!/usr/bin/env python3
"""The fleet benchmark: a fleet of Lambda execution environments sharing one database server
with few connection slots, each environment running one subject's handler.

    python3 tests/fleet/fleet.py --bootstrap BUILD/examples/lambda/bootstrap \\
        --naive BUILD/tests/fleet/naive/fleet_naive --node-dir BUILD/fleet-node --out DIR

tests/fleet/run.sh builds the subjects, starts the servers and calls this; docs/fleet.md says
what is measured and why. Standard library only.

What it plays, identically for every subject (the workload is drawn from --seed alone):

* Arrivals: a Poisson stream (--rate per second for --duration seconds) plus --bursts bursts of
  --burst-size events each, every event {"account", "amount", "work_ms"}; work_ms is spent
  sleeping on the server inside the transaction.
* A router like Lambda's: an arriving invocation goes to an idle environment (the one idle for
  the shortest time, thawed from its freeze), else to a new environment (a cold start) while
  fewer than --concurrency exist, else it waits in a queue for one to free up. Its latency runs
  from its arrival at the router, queueing included; its deadline is arrival + --timeout-s,
  after which it counts as timed out (and a queued one that waited that long, too).
* After each invocation the environment is frozen (SIGSTOP, once its runtime waits in /next).
  One frozen longer than --reclaim-s is reclaimed as Lambda reclaims one: its process is killed
  but its database connections stay open on the server, as if the microVM vanished without a
  FIN. Before the SIGKILL each of its TCP sockets to the database is duplicated into this
  process with pidfd_getfd(2), and the duplicate is held until the end of the subject's run:
  the server keeps the session, a zombie, until it times out or something terminates it.
* A timed-out invocation's environment is killed (Lambda resets it), its sockets closing
  normally.
* A monitor connection, as a superuser in a slot the subjects cannot take (PostgreSQL's
  superuser_reserved_connections; MariaDB's extra_port), counts the subjects' sessions every
  --sample-ms milliseconds.

After each run: the subjects' sessions still open on the server that belong to reclaimed
environments (zombies at the end), then everything is torn down and the server's slots are
freed before the next run, and the ledger is checked (exactly once, see check_ledger).
"""

import argparse
import collections
import ctypes
import errno
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lambda"))
from emulator import EmulatorError, Environment, percentile, process_group_pids  # noqa: E402

SUBJECT_USER = "fleet_app"  # the subjects' account: no superuser, no SUPER
MONITOR_USER = "fleet_monitor"  # MariaDB's monitor account (PostgreSQL's is the superuser)
DATABASE_NAME = "fleet"
SUBJECTS = ("warmpool", "warmpool+fleet", "node", "naive")
NODE_MODULE = {"postgresql": "serverless-postgres", "mariadb": "serverless-mysql"}
NODE_HANDLER = {"postgresql": "postgres_handler.js", "mariadb": "mysql_handler.js"}
LATENCY_KINDS = ("cold", "warm", "thaw")
# A subject's log lines that mean the server refused a connection for lack of slots.
TOO_MANY_RE = re.compile(
    r"too_many_connections|too many clients|too many connections|remaining connection slots",
    re.IGNORECASE,
)
KILLED_RE = re.compile(r"\b(?:killed|reaped)[ =:]*(\d+)|\bended (\d+) zombie")
SYS_PIDFD_GETFD = 438  # x86_64, arm64 and every architecture since Linux 5.6 share the number
CLK_TCK = os.sysconf("SC_CLK_TCK")


class FleetError(Exception):
    """The benchmark could not run as asked (a server, a subject, a tool is missing or broken)."""


def log(text):
    print(text, flush=True)


# --- Sockets of a process, and their duplicates ---------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def pidfd_getfd(pid, fd):
    """A duplicate, in this process, of descriptor `fd` of process `pid` (pidfd_getfd(2): needs
    PTRACE_MODE_ATTACH_REALCREDS over the target, which root and the parent of a process of the
    same user have)."""
    pidfd = os.pidfd_open(pid)
    try:
        new = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if new < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd(pid {pid}, fd {fd}): {os.strerror(err)}")
        return new
    finally:
        os.close(pidfd)


def _tcp_table(pid):
    """inode -> (local port, remote port, state) of the TCP sockets in pid's network namespace.
    States: 01 established, 08 close-wait (the peer closed), ..."""
    out = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
                    out[inode] = (
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                        state,
                    )
        except OSError:
            continue
    return out


def grab_database_sockets(pgid, db_port):
    """Duplicates every established TCP socket of process group `pgid` to port db_port into this
    process. Returns [(fd, local port)]. The originals die with the process; the duplicates keep
    the connections open, sending nothing."""
    owners = {}  # inode -> (pid, fd)
    for pid in process_group_pids(pgid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(target[8:-1], (pid, int(fd)))
    grabbed = []
    for inode, (local, remote, state) in _tcp_table(pgid).items():
        if remote != db_port or state != "01" or inode not in owners:
            continue
        pid, fd = owners[inode]
        grabbed.append((pidfd_getfd(pid, fd), local))
    return grabbed


def process_cpu_seconds(pid, children=False):
    """utime + stime of a process (all its threads), plus its reaped children's with children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime, stime, cutime, cstime are fields 14-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def thread_cpu_seconds(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(ppid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == ppid:
                out.append(int(entry))
    return out


# --- Servers ---------------------------------------------------------------------------------
class Client:
    """A long-running command-line client fed through a pipe: one process, one connection, for
    the whole benchmark, so that sampling costs a query and not a connect."""

    SENTINEL = "fleet-monitor-end"

    def __init__(self, argv, env, stderr_path):
        self._err = open(stderr_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            text=True,
            bufsize=1,
        )
        self.lock = threading.Lock()

    def rows(self, sql):
        """The rows of one statement, each a list of strings (tab-separated columns)."""
        with self.lock:
            if self.proc.poll() is not None:
                raise FleetError(f"the monitor client exited ({self.proc.returncode})")
            self.proc.stdin.write(sql.rstrip().rstrip(";") + f";\nselect '{self.SENTINEL}';\n")
            self.proc.stdin.flush()
            out = []
            while True:
                line = self.proc.stdout.readline()
                if line == "":
                    raise FleetError("the monitor client closed its output")
                line = line.rstrip("\n")
                if line == self.SENTINEL:
                    return out
                out.append(line.split("\t"))

    def value(self, sql):
        r = self.rows(sql)
        return r[0][0] if r and r[0] else None

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self._err.close()


class Server:
    """One database server of the benchmark (started by tests/fleet/run.sh through
    scripts/servers.sh): its accounts, its monitor, its counters."""

    def __init__(self, kind, port, servers_dir, logs, monitor_port=None):
        self.kind = kind  # postgresql | mariadb
        self.label = "PostgreSQL" if kind == "postgresql" else "MariaDB"
        self.port = port
        self.dir = servers_dir
        self.logs = logs
        self.monitor_port = monitor_port
        self.password = secrets.token_hex(12)  # MariaDB's subject and monitor accounts
        self.monitor = None
        self.monitor_pid = None  # PostgreSQL: the monitor's backend; MariaDB: its thread id
        self.samples = []  # (monotonic time, subject sessions, all client sessions)
        self._sampling = False
        self._sampler = None
        self._sample_s = 0.1
        self.max_connections = None
        self.reserved = 0
        self.version = ""

    # --- one-off statements as the superuser ---------------------------------------------------
    def _admin_argv(self, database=None):
        if self.kind == "postgresql":
            return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                    str(self.port), "-U", "warmpool", "-d", database or "postgres"]
        sock = os.path.join(self.dir, "mariadb", "mysqld.sock")
        return ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot"] + (
            [database] if database else [])

    def admin(self, sql, database=None):
        r = subprocess.run(self._admin_argv(database), input=sql, text=True,
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise FleetError(f"{self.label}: setting up failed: {r.stderr.strip()[:500]}")
        return r.stdout

    def setup(self):
        """The subjects' database and account, and the monitor's, made afresh."""
        if self.kind == "postgresql":
            self.admin(
                f"drop database if exists {DATABASE_NAME} with (force);\n"
                f"drop role if exists {SUBJECT_USER};\n"
                f"create role {SUBJECT_USER} login nosuperuser nocreatedb nocreaterole;\n"
                f"create database {DATABASE_NAME} owner {SUBJECT_USER};\n"
            )
        else:
            pw = self.password
            users = []
            for host in ("127.0.0.1", "localhost"):
                users.append(
                    f"drop user if exists '{SUBJECT_USER}'@'{host}';\n"
                    f"create user '{SUBJECT_USER}'@'{host}' identified by '{pw}';\n"
                    f"grant all privileges on {DATABASE_NAME}.* to '{SUBJECT_USER}'@'{host}';\n"
                    # serverless-mysql's README asks for PROCESS (to see the server's other
                    # connections); it gives no SUPER and no slot beyond max_connections.
                    f"grant process on *.* to '{SUBJECT_USER}'@'{host}';\n"
                )
            self.admin(
                f"drop database if exists {DATABASE_NAME};\n"
                f"create database {DATABASE_NAME} character set utf8mb4;\n"
                + "".join(users)
                + f"drop user if exists '{MONITOR_USER}'@'127.0.0.1';\n"
                f"create user '{MONITOR_USER}'@'127.0.0.1' identified by '{pw}';\n"
                f"grant all privileges on *.* to '{MONITOR_USER}'@'127.0.0.1';\n"
            )

    def subject_database(self):
        """DATABASE for the subjects (a SOCI connect string; it holds MariaDB's password)."""
        if self.kind == "postgresql":
            return (f"postgresql://host=127.0.0.1 port={self.port} dbname={DATABASE_NAME} "
                    f"user={SUBJECT_USER} sslmode=disable")
        return (f"mysql://host=127.0.0.1 port={self.port} db={DATABASE_NAME} "
                f"user={SUBJECT_USER} password={self.password}")

    # --- the monitor ---------------------------------------------------------------------------
    def start_monitor(self, sample_ms):
        env = dict(os.environ)
        err = os.path.join(self.logs, f"monitor-{self.kind}.log")
        if self.kind == "postgresql":
            argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-h", "127.0.0.1", "-p",
                    str(self.port), "-U", "warmpool", "-d", DATABASE_NAME]
        else:
            env["MYSQL_PWD"] = self.password  # not on the command line, where ps shows it
            if not self.monitor_port:
                raise FleetError("MariaDB: the monitor needs the server's extra_port "
                                 "(FLEET_MYSQL_MONITOR_PORT), a slot apart from max_connections")
            argv = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(self.monitor_port),
                    f"-u{MONITOR_USER}", "-N", "-B", "-n", "-f", DATABASE_NAME]
        self.monitor = Client(argv, env, err)
        if self.kind == "postgresql":
            self.monitor_pid = int(self.monitor.value("select pg_backend_pid()"))
            self.max_connections = int(self.monitor.value("show max_connections"))
            self.reserved = int(self.monitor.value("show superuser_reserved_connections"))
            self.version = self.monitor.value("show server_version")
        else:
            self.monitor_pid = int(self.monitor.value(
                "select tid from information_schema.processlist where id = connection_id()"))
            self.max_connections = int(self.monitor.value("select @@max_connections"))
            # A non-SUPER account gets every slot of max_connections; SUPER gets one more.
            self.reserved = 0
            self.version = self.monitor.value("select version()")
        self._sample_s = sample_ms / 1000
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample_loop, name=f"{self.kind}-monitor",
                                         daemon=True)
        self._sampler.start()

    @property
    def capacity(self):
        """Sessions the subjects' account may hold: max_connections less the slots it cannot
        have. PostgreSQL: the superuser_reserved_connections, and the monitor's own session,
        which takes a slot of the common pool (the reservation only keeps the last slots free
        of non-superusers), so run.sh gives PostgreSQL one slot more. MariaDB: none; the monitor
        logs in on the extra_port, counted apart."""
        return self.max_connections - self.reserved - (1 if self.kind == "postgresql" else 0)

    def _count_sql(self):
        if self.kind == "postgresql":
            return (f"select count(*) filter (where usename = '{SUBJECT_USER}'), "
                    "count(*) filter (where backend_type = 'client backend') "
                    "from pg_stat_activity")
        # A session being killed stays listed (command 'Killed') for a moment after its slot
        # is given back to the server's count: not one the subjects hold.
        return (f"select coalesce(sum(user = '{SUBJECT_USER}' and command <> 'Killed'), 0), "
                "count(*) from information_schema.processlist where command <> 'Daemon'")

    def _sample_loop(self):
        sql = self._count_sql()
        next_t = time.monotonic()
        while self._sampling:
            try:
                row = self.monitor.rows(sql)[0]
                self.samples.append((time.monotonic(), int(row[0]), int(row[1])))
            except (FleetError, IndexError, ValueError) as e:
                log(f"fleet: {self.label} monitor: {e}")
                return
            next_t += self._sample_s
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stop_monitor(self):
        self._sampling = False
        if self._sampler:
            self._sampler.join(5)
        if self.monitor:
            self.monitor.close()

    def subject_sessions(self):
        """Client ports of the subjects' sessions open on the server now."""
        if self.kind == "postgresql":
            rows = self.monitor.rows(
                f"select client_port from pg_stat_activity where usename = '{SUBJECT_USER}'")
            return [int(r[0]) for r in rows if r and r[0]]
        rows = self.monitor.rows(
            f"select host from information_schema.processlist where user = '{SUBJECT_USER}'")
        return [int(r[0].rsplit(":", 1)[1]) for r in rows if r and ":" in r[0]]

    def terminate_subject_sessions(self):
        if self.kind == "postgresql":
            return int(self.monitor.value(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                f"where usename = '{SUBJECT_USER}'") or 0)
        ids = self.monitor.rows(
            f"select id from information_schema.processlist where user = '{SUBJECT_USER}'")
        for r in ids:
            self.monitor.rows(f"kill {int(r[0])}")
        return len(ids)

    def wait_no_subject_sessions(self, timeout_s):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not self.subject_sessions():
                return True
            time.sleep(0.1)
        return False

    # --- counters ------------------------------------------------------------------------------
    def counters(self):
        """Server-side counts that only grow: refused connects and terminated sessions, and the
        server's CPU seconds less the monitor's own."""
        c = {"cpu_s": self._cpu_seconds()}
        if self.kind == "postgresql":
            text = ""
            log_path = os.path.join(self.dir, "postgresql", "server.log")
            try:
                with open(log_path, errors="replace") as f:
                    text = f.read()
            except OSError:
                pass
            c["refused"] = len(re.findall(
                r"sorry, too many clients already|remaining connection slots are reserved", text))
            c["terminated"] = text.count("terminating connection due to administrator command")
        else:
            status = dict(
                (r[0], r[1]) for r in self.monitor.rows(
                    "show global status where variable_name in "
                    "('Aborted_connects', 'Com_kill', 'Connection_errors_max_connections')"))
            # A non-SUPER login refused for max_connections ends as an aborted connect (the
            # server checks the count at authentication, after Connection_errors_max_connections
            # is decided): Aborted_connects counts it, and failed logins, which the benchmark
            # does not make.
            c["refused"] = int(status.get("Aborted_connects", 0)) + int(
                status.get("Connection_errors_max_connections", 0))
            c["terminated"] = int(status.get("Com_kill", 0))
        return c

    def _cpu_seconds(self):
        try:
            if self.kind == "postgresql":
                with open(os.path.join(self.dir, "postgresql", "data", "postmaster.pid")) as f:
                    pid = int(f.readline())
                total = process_cpu_seconds(pid, children=True)  # exited backends included
                monitor = 0.0
                for child in child_pids(pid):
                    try:
                        s = process_cpu_seconds(child)
                    except OSError:
                        continue
                    total += s
                    if child == self.monitor_pid:
                        monitor = s
                return total - monitor
            with open(os.path.join(self.dir, "mariadb", "mysqld.pid")) as f:
                pid = int(f.readline())
            return process_cpu_seconds(pid) - thread_cpu_seconds(pid, self.monitor_pid)
        except (OSError, ValueError):
            return None

    # --- the ledger ----------------------------------------------------------------------------
    def drop_ledger(self):
        self.monitor.rows("drop table if exists ledger")

    def ledger_rows(self, prefix):
        """(request_id, account, amount) of the rows whose request id starts with prefix."""
        exists = self.monitor.value(
            "select count(*) from information_schema.tables where table_name = 'ledger' and "
            + ("table_schema = 'public'" if self.kind == "postgresql"
               else f"table_schema = '{DATABASE_NAME}'"))
        if exists in (None, "0"):
            return None
        return [(r[0], r[1], int(r[2])) for r in self.monitor.rows(
            f"select request_id, account, amount from ledger where request_id like '{prefix}%'")]


# --- Workload --------------------------------------------------------------------------------
def make_workload(seed, rate, duration_s, bursts, burst_size, burst_times, work_ms, accounts=16):
    """[(seconds after the start, event)], sorted, the same for every subject with one seed."""
    rng = random.Random(seed)
    times = []
    t = 0.0
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= duration_s:
            break
        times.append(t)
    if burst_times is None:
        burst_times = [duration_s * (k + 1) / (bursts + 1) for k in range(bursts)]
    for bt in burst_times[:bursts]:
        # A burst: burst_size invocations within 50 ms, as a fan-out or a retry storm sends them.
        times.extend(bt + rng.uniform(0, 0.05) for _ in range(burst_size))
    times.sort()
    return [
        (t, {"account": f"acct-{rng.randrange(accounts):02d}", "amount": rng.randint(1, 1000),
             "work_ms": work_ms})
        for t in times
    ]


# --- Subjects --------------------------------------------------------------------------------
def subject_label(subject, server):
    return NODE_MODULE[server.kind] if subject == "node" else subject


def subject_command(subject, server, a):
    """(argv, environment, cwd) of one subject's runtime on one server."""
    env = {"DATABASE": server.subject_database(), "AWS_LAMBDA_FUNCTION_NAME": "fleet-ledger"}
    if subject in ("warmpool", "warmpool+fleet"):
        if subject == "warmpool":
            env["FLEET_POLICY"] = "off"
        else:
            env["FLEET_POLICY"] = "on"
            env["FLEET_REAP_IDLE_MS"] = str(a.reap_idle_ms)
            for name, value in (("FLEET_SAMPLE_FRACTION", a.sample_fraction),
                                ("FLEET_CLOSE_ABOVE", a.close_above),
                                ("FLEET_REAP_MAX", a.reap_max)):
                if value is not None:
                    env[name] = str(value)
        return [a.bootstrap], env, None
    if subject == "naive":
        return [a.naive], env, None
    node = shutil.which("node")
    if node is None:
        raise FleetError("node is not on PATH; the Node subjects need it (Debian: nodejs)")
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    if server.kind == "postgresql" and not a.node_ask_server:
        # serverless-postgres's README: "it should be set equal to max_connections in your
        # cluster. I highly suggest to set this yourself" (tests/fleet/node/README.md).
        env["SERVERLESS_PG_MAX_CONNECTIONS"] = str(server.max_connections)
    return ([node, os.path.join(a.node_dir, "runtime.js"),
             os.path.join(a.node_dir, NODE_HANDLER[server.kind])], env, a.node_dir)


# --- One run: one subject, one server, one seed --------------------------------------------------
class Request:
    def __init__(self, index, t_sched, event, request_id):
        self.index = index
        self.t_sched = t_sched
        self.event = event
        self.request_id = request_id
        self.t0 = None  # monotonic arrival time
        self.wall0_ms = None
        self.inv = None
        self.env_name = None
        self.outcome = None  # response | error | timed_out | lost
        self.kind = None  # cold | warm | thaw | queued (never delivered)
        self.latency_ms = None
        self.error_type = None
        self.error_message = None
        self.done = threading.Event()


class EnvSlot:
    def __init__(self, name, env):
        self.name = name
        self.env = env
        self.state = "starting"  # busy | freezing | idle | reclaiming | gone
        self.current = None
        self.idle_since = None
        self.invocations = 0


class FleetRun:
    def __init__(self, server, subject, seed, workload, a, logs, tag):
        self.server = server
        self.subject = subject
        self.label = subject_label(subject, server)
        self.seed = seed
        self.a = a
        self.logs = logs
        self.argv, self.env_vars, self.cwd = subject_command(subject, server, a)
        short = {"warmpool": "wp", "warmpool+fleet": "wf", "node": "nd", "naive": "nv"}[subject]
        self.prefix = f"{tag}-{server.kind[:2]}-{short}-s{seed}-"
        self.requests = [Request(i, t, e, f"{self.prefix}{i:05d}")
                         for i, (t, e) in enumerate(workload)]
        self.by_id = {r.request_id: r for r in self.requests}
        self.lock = threading.Lock()
        self.slots = {}
        self.idle = []  # frozen, idle EnvSlots; the last one idled is taken first
        self.queue = collections.deque()
        self.live = 0  # environments that exist (started, not reclaimed or killed)
        self.started = 0
        self.reclaimed = 0
        self.killed = 0  # after a timeout, a lost invocation, or a process that exited
        self.zombies = []  # (fd, local port, environment)
        self.peak_live = 0
        self._reclaimers = []  # threads reclaiming an environment, joined before the end state
        self._arrivals_over = False
        self._stop = False

    # --- routing ------------------------------------------------------------------------------
    def _new_slot(self):
        """Called with the lock held: a new environment's slot (spawned by the caller)."""
        self.started += 1
        name = f"env-{self.started:03d}"
        env = Environment(
            self.argv, self.env_vars, name=name, cwd=self.cwd,
            log_path=os.path.join(self.logs, f"{name}.log"), log_requests=False,
            on_result=self._on_result,
        )
        slot = EnvSlot(name, env)
        self.slots[name] = slot
        self.live += 1
        self.peak_live = max(self.peak_live, self.live)
        return slot

    def _dispatch(self, slot, req, thaw):
        """Called with the lock held."""
        slot.state = "busy"
        slot.current = req
        slot.invocations += 1
        req.env_name = slot.name
        if thaw:
            slot.env.thaw()
        req.inv = slot.env.invoke(req.event, deadline_ms=req.wall0_ms + int(self.a.timeout_s * 1000),
                                  request_id=req.request_id, meta={"index": req.index})

    def _cold_start(self, slot, req):
        """Outside the lock: spawn the environment, then hand it its first invocation."""
        try:
            slot.env.start()
        except (OSError, EmulatorError) as e:
            with self.lock:
                slot.state = "gone"
                self.live -= 1
            self._finish(req, "error", error_type="SpawnFailed", error_message=str(e))
            return
        with self.lock:
            self._dispatch(slot, req, thaw=False)

    def _pop_queue(self):
        """Called with the lock held: the oldest queued request still within its timeout."""
        now = time.monotonic()
        while self.queue:
            req = self.queue.popleft()
            if now - req.t0 < self.a.timeout_s:
                return req
            self._finish(req, "timed_out", kind="queued")
        return None

    def _slot_freed(self):
        """Called with the lock held, after live went down: a queued request may start a new
        environment now. Returns a (slot, request) to cold-start outside the lock, or None."""
        if self.queue and self.live < self.a.concurrency:
            req = self._pop_queue()
            if req is not None:
                return self._new_slot(), req
        return None

    def arrive(self, req):
        cold = None
        with self.lock:
            if self.idle:
                self._dispatch(self.idle.pop(), req, thaw=True)
            elif self.live < self.a.concurrency:
                cold = self._new_slot()
            else:
                self.queue.append(req)
        if cold is not None:
            threading.Thread(target=self._cold_start, args=(cold, req), daemon=True).start()

    def _finish(self, req, outcome, kind=None, error_type=None, error_message=None):
        if req.done.is_set():
            return
        req.outcome = outcome
        req.kind = kind
        req.error_type = error_type
        req.error_message = error_message
        req.done.set()

    def _on_result(self, inv):
        req = self.by_id.get(inv.request_id)
        if req is None or req.done.is_set():
            return
        if inv.t_result is not None and inv.outcome in ("response", "error"):
            req.latency_ms = (inv.t_result - req.t0) * 1000
        outcome = inv.outcome if inv.outcome in ("response", "error", "timed_out") else "lost"
        error_type = inv.error_type
        if inv.outcome in ("lost", "undelivered"):
            error_type = "Runtime.ExitError"  # the process died before it answered
        self._finish(req, outcome, kind=inv.kind or "queued", error_type=error_type,
                     error_message=inv.error_message)
        cold = None
        kill = None
        with self.lock:
            slot = self.slots.get(inv.env_name)
            if slot is None or slot.current is not req or slot.state != "busy":
                return
            slot.current = None
            if outcome in ("timed_out", "lost"):
                # Lambda resets an environment after a timeout: the process is gone, its sockets
                # closed normally (no zombie).
                slot.state = "gone"
                self.live -= 1
                self.killed += 1
                kill = slot
                cold = self._slot_freed()
            else:
                nxt = self._pop_queue()
                if nxt is not None:
                    self._dispatch(slot, nxt, thaw=False)
                else:
                    slot.state = "freezing"
                    threading.Thread(target=self._freeze, args=(slot,), daemon=True).start()
        if kill is not None:
            threading.Thread(target=kill.env.close, daemon=True).start()
        if cold is not None:
            self._cold_start(*cold)

    def _freeze(self, slot):
        try:
            slot.env.freeze(timeout=5)
        except EmulatorError:
            with self.lock:
                slot.state = "gone"
                self.live -= 1
                self.killed += 1
                cold = self._slot_freed()
            slot.env.close()
            if cold is not None:
                self._cold_start(*cold)
            return
        with self.lock:
            if slot.state != "freezing":
                return
            nxt = self._pop_queue()
            if nxt is not None:
                self._dispatch(slot, nxt, thaw=True)
            else:
                slot.state = "idle"
                slot.idle_since = time.monotonic()
                self.idle.append(slot)

    def _reclaim(self, slot):
        """Lambda reclaims an idle environment: the process dies, its connections stay open on
        the server (no FIN from a vanished microVM), here through duplicates of its sockets."""
        grabbed = []
        try:
            grabbed = grab_database_sockets(slot.env.pid, self.server.port)
        except OSError as e:
            log(f"fleet: {self.label}: keeping {slot.name}'s sockets failed: {e}")
        slot.env.close()
        with self.lock:
            self.zombies.extend((fd, port, slot.name) for fd, port in grabbed)
            slot.state = "gone"
            self.live -= 1
            self.reclaimed += 1
            cold = self._slot_freed()
        if cold is not None:
            self._cold_start(*cold)

    def _tick(self):
        while not self._stop:
            time.sleep(0.05)
            now = time.monotonic()
            reclaim, gone, colds = [], [], []
            with self.lock:
                while self.queue and now - self.queue[0].t0 >= self.a.timeout_s:
                    self._finish(self.queue.popleft(), "timed_out", kind="queued")
                for slot in list(self.idle):
                    if not slot.env.alive:
                        self.idle.remove(slot)
                        slot.state = "gone"
                        self.live -= 1
                        self.killed += 1
                        gone.append(slot)
                    elif now - slot.idle_since >= self.a.reclaim_s and not self._arrivals_over:
                        # No reclaim after the last arrival: no invocation would come after it
                        # to end the zombies it makes, so it would measure the run's end rather
                        # than the subject.
                        self.idle.remove(slot)
                        slot.state = "reclaiming"
                        reclaim.append(slot)
                # A process that exited with its invocation not yet taken (an init error): the
                # invocation fails, as Lambda fails it with the init error.
                for slot in self.slots.values():
                    if slot.state == "busy" and slot.env.proc is not None and not slot.env.alive:
                        if slot.env.returncode is not None or slot.env.proc.poll() is not None:
                            slot.state = "gone"
                            self.live -= 1
                            self.killed += 1
                            gone.append(slot)
                for _ in gone:
                    c = self._slot_freed()
                    if c is not None:
                        colds.append(c)
            for slot in gone:
                req = slot.current
                init = slot.env.init_errors
                if req is not None:
                    # Failed as Lambda fails an invocation whose init failed: with the init
                    # error, if the runtime reported one.
                    self._finish(req, "error", kind="cold",
                                 error_type=(init[-1][1] if init else "Runtime.ExitError"),
                                 error_message=(init[-1][2] if init else "the process exited"))
                slot.env.close()
            for slot in reclaim:
                t = threading.Thread(target=self._reclaim, args=(slot,), daemon=True)
                self._reclaimers.append(t)
                t.start()
            for c in colds:
                threading.Thread(target=self._cold_start, args=c, daemon=True).start()

    # --- the run ------------------------------------------------------------------------------
    def run(self):
        srv = self.server
        srv.drop_ledger()
        before = srv.counters()
        n_samples = len(srv.samples)
        ticker = threading.Thread(target=self._tick, name="fleet-tick", daemon=True)
        ticker.start()
        t_start = time.monotonic() + 0.2
        wall_start = time.time() + 0.2
        for req in self.requests:
            req.t0 = t_start + req.t_sched
            req.wall0_ms = int((wall_start + req.t_sched) * 1000)
            wait = req.t0 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.arrive(req)
        self._arrivals_over = True
        # Every request ends by its timeout; a little more for the last answers to arrive.
        end_by = time.monotonic() + self.a.timeout_s + 5
        for req in self.requests:
            req.done.wait(max(0.0, end_by - time.monotonic()))
        t_end = time.monotonic()
        self._stop = True
        ticker.join(2)
        for t in self._reclaimers:
            t.join(10)
        # The state at the end, before anything is torn down.
        open_ports = set(srv.subject_sessions())
        with self.lock:
            zombies = list(self.zombies)
        zombies_at_end = sum(1 for _, port, _ in zombies if port in open_ports)
        after = srv.counters()
        samples = [s for s in srv.samples[n_samples:] if s[0] <= t_end]
        # Teardown: every process, every zombie; the server's slots free before the next run.
        with self.lock:
            slots = list(self.slots.values())
        for slot in slots:
            slot.env.close()
        for fd, _, _ in zombies:
            try:
                os.close(fd)
            except OSError:
                pass
        forced = 0
        if not srv.wait_no_subject_sessions(15):
            forced = srv.terminate_subject_sessions()
            if not srv.wait_no_subject_sessions(15):
                raise FleetError(f"{srv.label}: the subjects' sessions did not end after the run")
        for req in self.requests:
            if not req.done.is_set():
                self._finish(req, "lost", kind=req.inv.kind if req.inv else "queued")
        ledger = check_ledger(self.requests, srv.ledger_rows(self.prefix))
        logs = scan_logs(self.logs, self.subject)
        return self._result(t_start, t_end, samples, before, after, zombies, zombies_at_end,
                            forced, ledger, logs)

    def _result(self, t_start, t_end, samples, before, after, zombies, zombies_at_end, forced,
                ledger, logs):
        reqs = self.requests
        count = collections.Counter(r.outcome for r in reqs)
        errors = collections.Counter(r.error_type or "?" for r in reqs if r.outcome == "error")
        latency = {}
        ok = [r for r in reqs if r.outcome == "response" and r.latency_ms is not None]
        for kind in LATENCY_KINDS + ("all",):
            v = [r.latency_ms for r in ok if kind == "all" or r.kind == kind]
            if v:
                latency[kind] = {"count": len(v), "p50_ms": round(percentile(v, 50), 1),
                                 "p99_ms": round(percentile(v, 99), 1),
                                 "max_ms": round(max(v), 1)}
        # Every invocation, a failed or timed-out one counted as taking the whole timeout: what
        # a caller waits for an answer it can use. Percentiles of the successful ones alone
        # flatter a subject that gives up early, since the invocations it drops are the ones
        # that would have waited longest.
        deadline_ms = self.a.timeout_s * 1000.0
        every = [r.latency_ms if r.outcome == "response" and r.latency_ms is not None
                 else deadline_ms for r in reqs]
        if every:
            latency["every"] = {"count": len(every), "p50_ms": round(percentile(every, 50), 1),
                                "p99_ms": round(percentile(every, 99), 1),
                                "max_ms": round(max(every), 1)}
        kinds = collections.Counter(r.kind for r in reqs)
        series = [(round(t - t_start, 2), n) for t, n, _ in samples if t >= t_start]
        counts = [n for _, n in series]
        delta = {k: (None if before.get(k) is None or after.get(k) is None
                     else round(after[k] - before[k], 2)) for k in after}
        return {
            "server": self.server.kind,
            "server_label": self.server.label,
            "subject": self.subject,
            "label": self.label,
            "seed": self.seed,
            "invocations": len(reqs),
            "succeeded": count["response"],
            "failed": count["error"] + count["lost"],
            "timed_out": count["timed_out"],
            "errors": dict(errors),
            "kinds": dict(kinds),
            "latency": latency,
            "too_many_logged": logs["too_many"],
            "refused_connects_server": delta.get("refused"),
            "terminated_server": delta.get("terminated"),
            "server_cpu_s": delta.get("cpu_s"),
            "connections": {
                "peak": max(counts) if counts else 0,
                "mean": round(sum(counts) / len(counts), 2) if counts else 0,
                "capacity": self.server.capacity,
                "max_connections": self.server.max_connections,
                "series": series,
            },
            "environments": {"started": self.started, "peak": self.peak_live,
                             "reclaimed": self.reclaimed, "killed": self.killed},
            "zombies": {"made": len(zombies), "at_end": zombies_at_end,
                        "ended_during_run": len(zombies) - zombies_at_end,
                        "terminated_at_cleanup": forced},
            "fleet_pressure_closes": logs["fleet_pressure"],
            "kills_logged": logs["kills"],
            "fleet_lines": logs["fleet_lines"],
            "ledger": ledger,
            "duration_s": round(t_end - t_start, 1),
            "failures_sample": [
                {"request_id": r.request_id, "outcome": r.outcome, "kind": r.kind,
                 "error_type": r.error_type, "error_message": (r.error_message or "")[:300]}
                for r in reqs if r.outcome != "response"][:10],
        }


def check_ledger(requests, rows):
    """Exactly once, defined on the rows whose request id carries this run's prefix:

    lost        a request answered with success has no row
    doubled     a request id has more than one row (the table's primary key should forbid it)
    stray       a row whose request id was never sent to an environment
    mismatched  a row whose account or amount differs from its event
    failed_with_row  a request answered with an error (or lost, or timed out) has a row: it
                committed although the caller was told it failed, or was told nothing.
                Informational: a caller retrying with the same request id is safe (the key
                refuses a second row), so it is no violation of exactly once.
    Passed when lost, doubled, stray and mismatched are all 0."""
    if rows is None:
        return {"table": False, "rows": 0, "lost": 0, "doubled": 0, "stray": 0,
                "mismatched": 0, "failed_with_row": 0, "passed": not any(
                    r.outcome == "response" for r in requests),
                "note": "no ledger table: no subject created it"}
    by_id = collections.defaultdict(list)
    for rid, account, amount in rows:
        by_id[rid].append((account, amount))
    sent = {r.request_id: r for r in requests if r.inv is not None}
    lost = [r.request_id for r in requests if r.outcome == "response" and not by_id.get(r.request_id)]
    doubled = [rid for rid, v in by_id.items() if len(v) > 1]
    stray = [rid for rid in by_id if rid not in sent]
    mismatched = [rid for rid, v in by_id.items() if rid in sent and any(
        (a, m) != (sent[rid].event["account"], sent[rid].event["amount"]) for a, m in v)]
    failed_with_row = [r.request_id for r in requests
                       if r.outcome != "response" and by_id.get(r.request_id)]
    return {
        "table": True,
        "rows": len(rows),
        "lost": len(lost),
        "doubled": len(doubled),
        "stray": len(stray),
        "mismatched": len(mismatched),
        "failed_with_row": len(failed_with_row),
        "passed": not (lost or doubled or stray or mismatched),
        "examples": {"lost": lost[:5], "doubled": doubled[:5], "stray": stray[:5],
                     "mismatched": mismatched[:5], "failed_with_row": failed_with_row[:5]},
    }


def scan_logs(directory, subject):
    """What the subjects' processes logged: connects refused for lack of slots, own connections
    closed by the fleet policy, and every `fleet: ...` line by its first word.

    Refused connects: the Node modules and the naive handler log `fleet: too_many_connections`
    for each connect the server refused; the bootstrap does not log its connect attempts (its
    pool retries them until the deadline), so for it the count is of the invocations and inits
    that failed saying so. The server's own count of refused connects (refused_connects_server)
    is the same measure for every subject."""
    per_attempt = subject not in ("warmpool", "warmpool+fleet")
    too_many = 0
    pressure = 0
    kills = 0
    fleet = collections.Counter()
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(directory, name), errors="replace") as f:
            for line in f:
                if line.startswith("[emulator"):
                    continue
                if per_attempt:
                    too_many += line.rstrip("\n") == "fleet: too_many_connections"
                elif line.startswith(("invocation ", "init: ")) and TOO_MANY_RE.search(line):
                    too_many += 1
                # Own connection closed to give the slot back: warmpool's fleet policy, or
                # serverless-mysql's end() over its utilization limit.
                if "closed (fleet_pressure)" in line or line.startswith("fleet: closed_own"):
                    pressure += 1
                if line.startswith("fleet: "):
                    words = line[7:].split()
                    fleet[words[0] if words else "?"] += 1
                    # Other instances' connections ended: "fleet: killed N" (the Node modules),
                    # "ended N zombie connections" in the bootstrap's sample lines.
                    kills += sum(int(a or b) for a, b in KILLED_RE.findall(line))
    return {"too_many": too_many, "fleet_pressure": pressure, "kills": kills,
            "fleet_lines": dict(fleet)}


# --- Report ------------------------------------------------------------------------------------
def _ms(v):
    return "–" if v is None else f"{v:.0f}"


def _lat(r, kind, key):
    return _ms(r["latency"].get(kind, {}).get(key))


def markdown(results, meta):
    out = []
    out.append("| server | subject | seed | ok | failed | timed out | too many (log) | "
               "refused (server) | cold p50/p99 ms | warm p50/p99 ms | thaw p50/p99 ms | "
               "p99 ms | max ms | p99 ms, failures at timeout | peak conn | mean conn | "
               "zombies made/at end | own closes | kills (log) | terminated (server) | "
               "server CPU s | lost | doubled |")
    out.append("|" + "---|" * 23)
    for r in results:
        c = r["connections"]
        z = r["zombies"]
        led = r["ledger"]
        out.append(
            f"| {r['server_label']} | {r['label']} | {r['seed']} | {r['succeeded']} | "
            f"{r['failed']} | {r['timed_out']} | {r['too_many_logged']} | "
            f"{_n(r['refused_connects_server'])} | "
            f"{_lat(r, 'cold', 'p50_ms')}/{_lat(r, 'cold', 'p99_ms')} | "
            f"{_lat(r, 'warm', 'p50_ms')}/{_lat(r, 'warm', 'p99_ms')} | "
            f"{_lat(r, 'thaw', 'p50_ms')}/{_lat(r, 'thaw', 'p99_ms')} | "
            f"{_lat(r, 'all', 'p99_ms')} | {_lat(r, 'all', 'max_ms')} | "
            f"{_lat(r, 'every', 'p99_ms')} | "
            f"{c['peak']}/{c['capacity']} | {c['mean']:.1f} | {z['made']}/{z['at_end']} | "
            f"{r['fleet_pressure_closes']} | {r['kills_logged']} | "
            f"{_n(r['terminated_server'])} | "
            f"{_n(r['server_cpu_s'])} | {led['lost']} | {led['doubled']} |")
    out.append("")
    out.append(summary_markdown(results))
    return "\n".join(out)


def _n(v):
    return "–" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def summarize_across_seeds(results):
    groups = collections.OrderedDict()
    for r in results:
        groups.setdefault((r["server_label"], r["label"]), []).append(r)
    rows = []
    for (server, label), rs in groups.items():
        p99s = [r["latency"].get("all", {}).get("p99_ms") for r in rs]
        p99s = [p for p in p99s if p is not None]
        rows.append({
            "server": server, "subject": label, "seeds": len(rs),
            "invocations": sum(r["invocations"] for r in rs),
            "succeeded": sum(r["succeeded"] for r in rs),
            "failed": sum(r["failed"] for r in rs),
            "timed_out": sum(r["timed_out"] for r in rs),
            "too_many_logged": sum(r["too_many_logged"] for r in rs),
            "refused_connects_server": sum(r["refused_connects_server"] or 0 for r in rs),
            "worst_p99_ms": max(p99s) if p99s else None,
            "median_p99_ms": sorted(p99s)[len(p99s) // 2] if p99s else None,
            "max_peak": max(r["connections"]["peak"] for r in rs),
            "capacity": rs[0]["connections"]["capacity"],
            "zombies_made": sum(r["zombies"]["made"] for r in rs),
            "zombies_at_end": sum(r["zombies"]["at_end"] for r in rs),
            "lost": sum(r["ledger"]["lost"] for r in rs),
            "doubled": sum(r["ledger"]["doubled"] for r in rs),
            "server_cpu_s": round(sum(r["server_cpu_s"] or 0 for r in rs), 2),
        })
    return rows


def summary_markdown(results):
    rows = summarize_across_seeds(results)
    out = ["| server | subject | seeds | invocations | ok | failed | timed out | "
           "too many (log) | refused (server) | worst p99 ms | median p99 ms | max peak conn | "
           "zombies made/at end | lost | doubled | server CPU s |",
           "|" + "---|" * 16]
    for s in rows:
        out.append(
            f"| {s['server']} | {s['subject']} | {s['seeds']} | {s['invocations']} | "
            f"{s['succeeded']} | {s['failed']} | {s['timed_out']} | {s['too_many_logged']} | "
            f"{s['refused_connects_server']} | {_ms(s['worst_p99_ms'])} | "
            f"{_ms(s['median_p99_ms'])} | {s['max_peak']}/{s['capacity']} | "
            f"{s['zombies_made']}/{s['zombies_at_end']} | {s['lost']} | {s['doubled']} | "
            f"{s['server_cpu_s']:g} |")
    return "\n".join(out)


COLORS = {"warmpool": "#1f77b4", "warmpool+fleet": "#2ca02c", "serverless-postgres": "#d62728",
          "serverless-mysql": "#d62728", "naive": "#7f7f7f"}


def svg_plot(results, title, bursts):
    """Server sessions of the subjects' account over time, one line per subject; dashed: the
    capacity (max_connections less reserved slots); dotted: burst arrivals."""
    w, h, left, right, top, bottom = 760, 300, 48, 150, 28, 34
    t_max = max((r["connections"]["series"][-1][0] for r in results
                 if r["connections"]["series"]), default=1) or 1
    cap = max(r["connections"]["capacity"] for r in results)
    y_max = max([cap + 2] + [r["connections"]["peak"] + 1 for r in results])
    pw, ph = w - left - right, h - top - bottom

    def x(t):
        return left + pw * t / t_max

    def y(n):
        return top + ph * (1 - n / y_max)

    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">')
    e.append(f'<rect width="{w}" height="{h}" fill="white"/>')
    e.append(f'<text x="{left}" y="16" font-size="13">{_esc(title)}</text>')
    step = max(1, int(math.ceil(y_max / 6)))
    for n in range(0, y_max + 1, step):
        e.append(f'<line x1="{left}" y1="{y(n):.1f}" x2="{left + pw}" y2="{y(n):.1f}" '
                 'stroke="#eee"/>')
        e.append(f'<text x="{left - 6}" y="{y(n) + 4:.1f}" text-anchor="end">{n}</text>')
    tstep = max(1, int(math.ceil(t_max / 10)))
    for t in range(0, int(t_max) + 1, tstep):
        e.append(f'<text x="{x(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{t}</text>')
    e.append(f'<text x="{left + pw / 2}" y="{h - 4}" text-anchor="middle">seconds</text>')
    e.append(f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
             'text-anchor="middle">sessions</text>')
    e.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
             'stroke="#999"/>')
    for bt in bursts:
        if bt <= t_max:
            e.append(f'<line x1="{x(bt):.1f}" y1="{top}" x2="{x(bt):.1f}" y2="{top + ph}" '
                     'stroke="#bbb" stroke-dasharray="2,3"/>')
    e.append(f'<line x1="{left}" y1="{y(cap):.1f}" x2="{left + pw}" y2="{y(cap):.1f}" '
             'stroke="black" stroke-dasharray="6,4"/>')
    e.append(f'<text x="{left + 4}" y="{y(cap) - 4:.1f}">capacity {cap}</text>')
    dashes = {"warmpool": "", "warmpool+fleet": "", "naive": "4,2"}
    ly = top + 30
    for r in results:
        pts = " ".join(f"{x(t):.1f},{y(n):.1f}" for t, n in r["connections"]["series"])
        color = COLORS.get(r["label"], "#9467bd")
        dash = dashes.get(r["subject"], "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if pts:
            e.append(f'<polyline points="{pts}" fill="none" stroke="{color}" '
                     f'stroke-width="1.6"{dash_attr}/>')
        e.append(f'<line x1="{left + pw + 6}" y1="{ly}" x2="{left + pw + 26}" y2="{ly}" '
                 f'stroke="{color}" stroke-width="2"{dash_attr}/>')
        e.append(f'<text x="{left + pw + 30}" y="{ly + 4}">{_esc(r["label"])}</text>')
        ly += 16
    e.append("</svg>")
    return "\n".join(e) + "\n"


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- Goal checks -------------------------------------------------------------------------------
def goal_checks(results, level):
    """[(passed, text)]. correctness: exactly once for every subject, and warmpool+fleet with no
    failed or timed-out invocation. all: also its peak within the capacity and its p99 at most
    half the Node module's on the same run."""
    verdicts = []
    for r in results:
        led = r["ledger"]
        name = f"{r['server_label']} {r['label']} seed {r['seed']}"
        verdicts.append((led["passed"],
                         f"{name}: exactly once: {led['rows']} rows, lost {led['lost']}, "
                         f"doubled {led['doubled']}, stray {led['stray']}, mismatched "
                         f"{led['mismatched']} (failed with a row: {led['failed_with_row']})"))
        if r["subject"] != "warmpool+fleet":
            continue
        verdicts.append((r["failed"] == 0 and r["timed_out"] == 0,
                         f"{name}: no failed or timed-out invocation: {r['failed']} failed"
                         f"{' ' + json.dumps(r['errors']) if r['errors'] else ''}, "
                         f"{r['timed_out']} timed out, of {r['invocations']}"))
        if level != "all":
            continue
        c = r["connections"]
        verdicts.append((c["peak"] <= c["capacity"],
                         f"{name}: peak sessions {c['peak']} <= capacity {c['capacity']} "
                         f"(max_connections {c['max_connections']} less reserved)"))
        node = [n for n in results if n["subject"] == "node" and n["server"] == r["server"]
                and n["seed"] == r["seed"]]
        mine = r["latency"].get("all", {}).get("p99_ms")
        if not node:
            verdicts.append((False, f"{name}: p99 against the Node module: no Node run to "
                                    "compare with (run --subjects with node)"))
        else:
            theirs = node[0]["latency"].get("all", {}).get("p99_ms")
            ok = mine is not None and theirs is not None and mine <= theirs / 2
            verdicts.append((ok, f"{name}: p99 {_ms(mine)} ms <= half of "
                                 f"{node[0]['label']}'s p99 {_ms(theirs)} ms"))
            # For the record, not a verdict: the same with failures counted at the timeout.
            mine_all = r["latency"].get("every", {}).get("p99_ms")
            theirs_all = node[0]["latency"].get("every", {}).get("p99_ms")
            log(f"fleet: (for the record) {name}: p99 with failures at the timeout "
                f"{_ms(mine_all)} ms, {node[0]['label']}'s {_ms(theirs_all)} ms")
    return verdicts


# --- Command line --------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--bootstrap", help="examples/lambda's bootstrap (subjects warmpool, warmpool+fleet)")
    add("--naive", help="tests/fleet/naive's fleet_naive (subject naive)")
    add("--node-dir", help="where tests/fleet/node/install.sh installed the Node subjects")
    add("--servers", default="postgresql,mariadb", help="postgresql,mariadb (default both)")
    add("--subjects", default=",".join(SUBJECTS), help=f"default {','.join(SUBJECTS)}")
    add("--seed", type=int, default=1, help="the first seed (default 1)")
    add("--seeds", type=int, default=1, help="how many seeds, from --seed on (default 1)")
    add("--rate", type=float, default=15.0, help="Poisson arrivals per second (default 15)")
    add("--duration", type=float, default=30.0, help="seconds of arrivals (default 30)")
    add("--bursts", type=int, default=2, help="bursts (default 2)")
    add("--burst-size", type=int, default=36, help="invocations per burst (default 36)")
    add("--burst-times", help="seconds of the bursts, comma-separated (default: spread evenly)")
    add("--work-ms", type=int, default=300, help="work_ms of every event (default 300)")
    add("--concurrency", type=int, default=40, help="environments at most (default 40)")
    add("--reclaim-s", type=float, default=5.0,
        help="an environment idle this long is reclaimed (default 5)")
    add("--timeout-s", type=float, default=10.0,
        help="invocation timeout from arrival, queueing included (default 10)")
    add("--sample-ms", type=int, default=100, help="monitor sampling period (default 100)")
    add("--reap-idle-ms", type=int, default=4000,
        help="FLEET_REAP_IDLE_MS for warmpool+fleet (default 4000; 0 = no reaping)")
    add("--sample-fraction", type=float, help="FLEET_SAMPLE_FRACTION (default: the bootstrap's)")
    add("--close-above", type=float, help="FLEET_CLOSE_ABOVE (default: the bootstrap's)")
    add("--reap-max", type=int, help="FLEET_REAP_MAX (default: the bootstrap's)")
    add("--node-ask-server", action="store_true",
        help="leave SERVERLESS_PG_MAX_CONNECTIONS unset: serverless-postgres asks the server "
             "(default: set to the server's max_connections, as its README recommends)")
    add("--out", required=True, help="directory for results.json, results.md and the plots")
    add("--logs", help="directory for the processes' logs, one folder per run (default: "
                       "OUT/logs); emptied first")
    add("--check", choices=("none", "correctness", "all"), default="none",
        help="goal checks; exit 1 when one fails (correctness: exactly once for every subject, "
             "warmpool+fleet without failures; all: also peak and p99, see docs/fleet.md)")
    add("--title", default="", help="a line for the top of results.md")
    a = p.parse_args(argv)
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    a.subjects = [s.strip() for s in a.subjects.split(",") if s.strip()]
    for s in a.servers:
        if s not in ("postgresql", "mariadb"):
            p.error(f"--servers: unknown server {s!r} (postgresql, mariadb)")
    for s in a.subjects:
        if s not in SUBJECTS:
            p.error(f"--subjects: unknown subject {s!r} ({', '.join(SUBJECTS)})")
    a.burst_times = ([float(t) for t in a.burst_times.split(",")] if a.burst_times else None)
    needs = {"warmpool": "bootstrap", "warmpool+fleet": "bootstrap", "naive": "naive",
             "node": "node_dir"}
    for s in a.subjects:
        path = getattr(a, needs[s])
        if not path:
            p.error(f"subject {s} needs --{needs[s].replace('_', '-')}")
        if not os.path.exists(path):
            p.error(f"subject {s}: {path} does not exist (build or install it first)")
    return a


def servers_from_environment(a, logs):
    """The servers tests/fleet/run.sh started: ports and directory from scripts/servers.sh's
    exports, MariaDB's monitor port from FLEET_MYSQL_MONITOR_PORT."""
    d = os.environ.get("WARMPOOL_TEST_SERVERS_DIR")
    if not d:
        raise FleetError("WARMPOOL_TEST_SERVERS_DIR is not set: start the servers with "
                         "tests/fleet/run.sh (or scripts/servers.sh with the options it uses)")
    out = []
    for kind in a.servers:
        var = "WARMPOOL_TEST_PG_PORT" if kind == "postgresql" else "WARMPOOL_TEST_MYSQL_PORT"
        port = os.environ.get(var)
        if not port:
            raise FleetError(f"{var} is not set: the {kind} server is not running")
        monitor = os.environ.get("FLEET_MYSQL_MONITOR_PORT") if kind == "mariadb" else None
        out.append(Server(kind, int(port), d, logs, int(monitor) if monitor else None))
    return out


def main(argv):
    a = parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    logs_root = a.logs or os.path.join(a.out, "logs")
    shutil.rmtree(logs_root, ignore_errors=True)
    os.makedirs(logs_root)
    tag = secrets.token_hex(3)  # request ids unique across runs into the same table
    servers = servers_from_environment(a, logs_root)
    results = []
    seeds = list(range(a.seed, a.seed + a.seeds))
    bursts = a.burst_times or [a.duration * (k + 1) / (a.bursts + 1) for k in range(a.bursts)]
    started = time.monotonic()
    try:
        for srv in servers:
            srv.setup()
            srv.start_monitor(a.sample_ms)
            log(f"fleet: {srv.label} {srv.version}: max_connections {srv.max_connections}, "
                f"{srv.reserved} reserved for superusers"
                + (", 1 for the monitor" if srv.kind == "postgresql" else "")
                + f": capacity {srv.capacity} for {SUBJECT_USER}")
        if "warmpool+fleet" in a.subjects:
            log(f"fleet: warmpool+fleet: FLEET_REAP_IDLE_MS={a.reap_idle_ms}"
                + "".join(f", {n}={v}" for n, v in (("FLEET_SAMPLE_FRACTION", a.sample_fraction),
                                                    ("FLEET_CLOSE_ABOVE", a.close_above),
                                                    ("FLEET_REAP_MAX", a.reap_max))
                          if v is not None))
        for seed in seeds:
            workload = make_workload(seed, a.rate, a.duration, a.bursts, a.burst_size,
                                     a.burst_times, a.work_ms)
            for srv in servers:
                for subject in a.subjects:
                    label = subject_label(subject, srv)
                    logs = os.path.join(logs_root, f"{srv.kind}-{label}-seed{seed}")
                    os.makedirs(logs)
                    t0 = time.monotonic()
                    run = FleetRun(srv, subject, seed, workload, a, logs, tag)
                    r = run.run()
                    r["wall_s"] = round(time.monotonic() - t0, 1)
                    results.append(r)
                    lat = r["latency"].get("all", {})
                    log(f"fleet: seed {seed} {srv.label} {label}: {r['succeeded']}/"
                        f"{r['invocations']} ok, {r['failed']} failed, {r['timed_out']} timed "
                        f"out; p50 {_ms(lat.get('p50_ms'))} p99 {_ms(lat.get('p99_ms'))} ms; "
                        f"peak {r['connections']['peak']}/{r['connections']['capacity']}; "
                        f"zombies {r['zombies']['made']} made, {r['zombies']['at_end']} at end; "
                        f"too many (log) {r['too_many_logged']}, refused (server) "
                        f"{_n(r['refused_connects_server'])}; ledger "
                        f"{'ok' if r['ledger']['passed'] else 'FAILED'}; {r['wall_s']} s")
    finally:
        for srv in servers:
            srv.stop_monitor()
    elapsed = time.monotonic() - started
    meta = {
        "seeds": seeds, "rate": a.rate, "duration_s": a.duration, "bursts": bursts,
        "burst_size": a.burst_size, "work_ms": a.work_ms, "concurrency": a.concurrency,
        "reclaim_s": a.reclaim_s, "timeout_s": a.timeout_s, "sample_ms": a.sample_ms,
        "reap_idle_ms": a.reap_idle_ms, "sample_fraction": a.sample_fraction,
        "close_above": a.close_above, "reap_max": a.reap_max,
        "servers": {s.kind: {"version": s.version, "max_connections": s.max_connections,
                             "reserved": s.reserved, "capacity": s.capacity} for s in servers},
        "machine": machine(), "elapsed_s": round(elapsed, 1),
    }
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results,
                   "summary": summarize_across_seeds(results)}, f, indent=1)
    plots = []
    for seed in seeds:
        for srv in servers:
            rs = [r for r in results if r["seed"] == seed and r["server"] == srv.kind]
            if rs:
                name = f"connections-{srv.kind}-seed{seed}.svg"
                with open(os.path.join(a.out, name), "w") as f:
                    f.write(svg_plot(rs, f"{srv.label}: sessions of {SUBJECT_USER}, seed {seed}",
                                     bursts))
                plots.append(name)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        if a.title:
            f.write(a.title + "\n\n")
        f.write(f"Seeds {seeds[0]}–{seeds[-1]}; {a.rate:g}/s for {a.duration:g} s plus "
                f"{a.bursts} bursts of {a.burst_size} (at {', '.join(f'{b:g}' for b in bursts)} s); "
                f"work_ms {a.work_ms}; at most {a.concurrency} environments; reclaim after "
                f"{a.reclaim_s:g} s idle; timeout {a.timeout_s:g} s; FLEET_REAP_IDLE_MS "
                f"{a.reap_idle_ms}. {meta['machine']}. {elapsed / max(1, len(seeds)):.0f} s per "
                "seed.\n\n")
        f.write(markdown(results, meta) + "\n\n")
        for name in plots:
            f.write(f"![{name}]({name})\n\n")
    log(f"fleet: results in {a.out} (results.md, results.json, {len(plots)} plots); "
        f"{elapsed:.0f} s, {elapsed / max(1, len(seeds)):.0f} s per seed")
    if a.check == "none":
        return 0
    failed = 0
    for ok, text in goal_checks(results, a.check):
        log(f"check {'passed' if ok else 'FAILED'}: {text}")
        failed += not ok
    log(f"fleet: {len(goal_checks(results, a.check)) - failed} passed, {failed} failed")
    return 1 if failed else 0


def machine():
    try:
        with open("/etc/os-release") as f:
            osr = dict(line.rstrip().split("=", 1) for line in f if "=" in line)
        name = osr.get("PRETTY_NAME", "").strip('"')
    except OSError:
        name = "Linux"
    return f"{name}, {os.cpu_count()} cores"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except FleetError as e:
        print(f"fleet: {e}", file=sys.stderr)
        sys.exit(1)
