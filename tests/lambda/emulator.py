#!/usr/bin/env python3
"""An emulator of the AWS Lambda Runtime API, for testing a custom runtime (`bootstrap`) locally.

One `Environment` is one Lambda execution environment: it serves the Runtime API (version
2018-06-01, https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) on its own port of
127.0.0.1, runs one `bootstrap` process against it, hands out events from a queue, records every
response and error with timestamps, and plays the execution environment's lifecycle on the real
process: cold start, warm invocations, freeze (SIGSTOP) and thaw (SIGCONT), a SnapStart
snapshot/restore cycle, SIGTERM at shutdown, SIGKILL at reclaim.

Standard library only, thread-safe, so that a driver can run tens of environments at once:

    env = Environment(["./bootstrap"], {"DATABASE": "postgresql://dbname=app"}, name="env-1")
    env.start()                                   # binds the port, spawns the process
    inv = env.invoke({"account": "a", "amount": 5})
    inv.wait(10)                                  # inv.outcome: "response", "error" or
                                                  # "timed_out" (nothing by its deadline)
    env.freeze()                                  # once the runtime waits in /next again
    env.thaw(); env.invoke(...)                   # the next invocation is a "thaw"
    env.sigterm()                                 # seconds the process took to exit
    env.close()

What it cannot emulate: a restored snapshot runs in a new microVM whose clocks jumped forward
and whose TCP peers know nothing of the snapshot's sockets. Here the process keeps its clocks
(stepping CLOCK_REALTIME or CLOCK_MONOTONIC needs privileges and would disturb the whole machine)
and its sockets (the scenario closes them from the server's side instead).

As a command (run by hand against any bootstrap): see `python3 emulator.py --help`.
"""

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_VERSION = "/2018-06-01"
# The Runtime API accepts responses up to 6 MB (the Runtime Interface Emulator allows 100 bytes
# more for the envelope); larger ones get 413 and count as a function error.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024 + 100
DEFAULT_FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:warmpool-ledger"

# Invocation kinds, in the order reports list them.
KINDS = ("cold", "warm", "thaw", "restore")


class EmulatorError(Exception):
    """The emulator could not do what it was asked (the process is gone, a wait ran out)."""


class Invocation:
    """One event and what became of it. Times are time.monotonic() seconds unless *_ms."""

    def __init__(self, env_name, request_id, payload, timeout_ms, deadline_ms, meta):
        self.env_name = env_name
        self.request_id = request_id
        self.payload = payload  # bytes sent as the event
        self.timeout_ms = timeout_ms  # deadline = delivery + timeout_ms, unless deadline_ms given
        self.deadline_ms = deadline_ms  # Unix epoch milliseconds (Lambda-Runtime-Deadline-Ms)
        self.meta = meta or {}  # the caller's bookkeeping (account, amount, scenario, ...)
        self.kind = None  # cold | warm | thaw | restore, set at delivery
        self.t_enqueued = time.monotonic()
        self.t_origin = None  # where its latency starts (see Environment._kind_and_origin)
        self.t_delivered = None
        self.t_result = None
        self.wall_delivered_ms = None
        self.wall_result_ms = None
        # response | error | timed_out (no result by its deadline: Lambda times the invocation
        # out) | lost (delivered, the process died) | undelivered (never picked up)
        self.outcome = None
        self.http_status = None  # what the emulator answered the runtime's post
        self.body = None  # bytes the runtime posted
        self.result = None  # parsed JSON of a response, None if not JSON
        self.error_type = None  # errorType of the posted error document
        self.error_message = None
        self.error_header = None  # Lambda-Runtime-Function-Error-Type header
        # What a timed-out invocation's runtime posted after its deadline, if anything (Lambda
        # would have stopped it by then): "response" or "error", and when (wall-clock ms). The
        # body and error fields above hold what it posted.
        self.late_post = None
        self.wall_late_ms = None
        self.done = threading.Event()

    @property
    def latency_s(self):
        if self.t_result is None or self.t_origin is None:
            return None
        return self.t_result - self.t_origin

    @property
    def before_deadline(self):
        """True when the result arrived before the deadline the runtime was given."""
        if self.wall_result_ms is None or self.deadline_ms is None:
            return None
        return self.wall_result_ms < self.deadline_ms

    def wait(self, timeout=None):
        return self.done.wait(timeout)

    def describe(self):
        """One line for failure messages: what was sent, what came back."""
        event = self.payload.decode(errors="replace")
        what = f"request {self.request_id} ({self.kind or 'not delivered'}) event {event}"
        if self.outcome == "response":
            return f"{what}: response {self.body.decode(errors='replace')[:300]}"
        if self.outcome == "error":
            return (
                f"{what}: /error errorType={self.error_type!r} header={self.error_header!r} "
                f"errorMessage={(self.error_message or '')[:300]!r}"
            )
        if self.outcome == "timed_out":
            what += f": timed out (no result by its deadline {self.deadline_ms})"
            if self.late_post == "response":
                what += (
                    f"; it posted a response {self.wall_late_ms - self.deadline_ms} ms after "
                    f"the deadline: {self.body.decode(errors='replace')[:300]}"
                )
            elif self.late_post == "error":
                what += (
                    f"; it posted /error {self.wall_late_ms - self.deadline_ms} ms after the "
                    f"deadline: errorType={self.error_type!r} "
                    f"errorMessage={(self.error_message or '')[:300]!r}"
                )
            else:
                what += "; nothing posted since"
            return what
        return f"{what}: {self.outcome or 'no result yet'}"

    def to_dict(self):
        lat = self.latency_s
        return {
            "environment": self.env_name,
            "request_id": self.request_id,
            "kind": self.kind,
            "outcome": self.outcome,
            "latency_ms": None if lat is None else round(lat * 1000, 3),
            "deadline_ms": self.deadline_ms,
            "result_wall_ms": self.wall_result_ms,
            "late_post": self.late_post,
            "late_post_wall_ms": self.wall_late_ms,
            "event": _json_or_text(self.payload),
            "result": self.result if self.result is not None else _text(self.body),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "meta": self.meta,
        }


def _text(b):
    return None if b is None else b.decode(errors="replace")


def _json_or_text(b):
    try:
        return json.loads(b)
    except (ValueError, TypeError):
        return _text(b)


class _RuntimeApiServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler blocked in /next must not keep the interpreter alive
    allow_reuse_address = True
    environment = None


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the runtime's connection open across calls, as libcurl expects.
    protocol_version = "HTTP/1.1"
    server_version = "warmpool-runtime-api-emulator"
    # A reply leaves in one write at the end of the request (handle_one_request flushes), with
    # Nagle off: headers and body in two small writes would wait for the client's delayed ACK
    # (40 ms on Linux) and show up as latency that is the emulator's, not the runtime's.
    wbufsize = 1 << 16

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self):
        ok = super().handle_expect_100()
        self.wfile.flush()  # the client waits for the 100 before it sends the body
        return ok

    def log_message(self, fmt, *args):
        env = self.server.environment
        env._log_api(fmt % args)

    # --- plumbing ---------------------------------------------------------------------------
    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _reply(self, status, body=b"", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(self, status, error_type, message):
        self._reply(status, {"errorMessage": message, "errorType": error_type})

    # --- routes -----------------------------------------------------------------------------
    def do_GET(self):
        env = self.server.environment
        path = self.path.split("?")[0]
        if path == API_VERSION + "/runtime/invocation/next":
            env._serve_next(self)
        elif path == API_VERSION + "/runtime/restore/next":
            env._serve_restore_next(self)
        else:
            env._violation(f"GET {self.path}: no such Runtime API path")
            self._error(404, "NotFound", f"no such path: {path}")

    def do_POST(self):
        env = self.server.environment
        path = self.path.split("?")[0]
        body = self._read_body()
        prefix = API_VERSION + "/runtime/invocation/"
        result = None
        for outcome in ("response", "error"):
            if path.startswith(prefix) and path.endswith("/" + outcome):
                result = outcome
        if result is not None:
            segment = path[len(prefix) : -len("/" + result)]
            request_id = _decode_request_id(segment)
            if request_id is None:
                env._record_call(f"POST /runtime/invocation/{segment}/{result}")
                env._violation(
                    f"POST .../{segment}/{result}: the request id is not one percent-encoded "
                    "path segment (a raw '/', or an escape that does not decode to UTF-8)"
                )
                self._error(400, "InvalidRequestID", "Invalid request ID")
            else:
                env._serve_result(self, request_id, result, body)
        elif path == API_VERSION + "/runtime/init/error":
            env._serve_init_error(self, body)
        elif path == API_VERSION + "/runtime/restore/error":
            env._serve_restore_error(self, body)
        else:
            env._violation(f"POST {self.path}: no such Runtime API path")
            self._error(404, "NotFound", f"no such path: {path}")


def _decode_request_id(segment):
    """The request id in a result's path, percent-decoded (a runtime escapes it as a path segment,
    since ids are opaque strings). None when the segment is not one: it holds a raw '/' (the id
    would span segments, which no router takes as one), or its escapes are not UTF-8."""
    if "/" in segment:
        return None
    try:
        return urllib.parse.unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


def _header_value(text):
    """http.server writes header values as latin-1: pass a str whose latin-1 bytes are the
    value's UTF-8, so that a non-ASCII request id reaches the runtime as UTF-8."""
    return text.encode("utf-8").decode("latin-1")


def _parse_error_document(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    et, em = doc.get("errorType"), doc.get("errorMessage")
    return (et if isinstance(et, str) else None), (em if isinstance(em, str) else None)


def _trace_id():
    return "Root=1-{:08x}-{}; Parent={}; Sampled=0".format(
        int(time.time()), uuid.uuid4().hex[:24], uuid.uuid4().hex[:16]
    )


class Environment:
    """One execution environment: a Runtime API endpoint and the bootstrap process behind it.

    command       argv of the runtime (the bootstrap)
    env           the process's variables; with clear_env (the default) it gets only these, plus
                  the ones Lambda sets for the runtime (AWS_LAMBDA_RUNTIME_API,
                  AWS_LAMBDA_INITIALIZATION_TYPE, AWS_LAMBDA_MAX_CONCURRENCY when given), as
                  `env -i` would; without it they are added to this process's environment
    max_concurrency  sets AWS_LAMBDA_MAX_CONCURRENCY (None: unset, one invocation at a time)
    snap_start    sets AWS_LAMBDA_INITIALIZATION_TYPE=snap-start; the runtime must then call
                  GET /runtime/restore/next before its first /next
    log_path      the process's stdout and stderr, and the emulator's request log, go there
    spawn         False: only serve the API (a runtime started by hand connects to `api`)
    on_result     called with each Invocation once it has its outcome (from a server thread or
                  the exit watcher; keep it short)
    """

    def __init__(
        self,
        command,
        env=None,
        name="env",
        cwd=None,
        log_path=None,
        max_concurrency=None,
        snap_start=False,
        clear_env=True,
        function_arn=DEFAULT_FUNCTION_ARN,
        port=0,
        spawn=True,
        log_requests=True,
        on_result=None,
    ):
        self.command = list(command)
        self.extra_env = dict(env or {})
        self.name = name
        self.cwd = cwd
        self.log_path = log_path
        self.max_concurrency = max_concurrency
        self.snap_start = snap_start
        self.clear_env = clear_env
        self.function_arn = function_arn
        self.port = port
        self.spawn = spawn
        self.log_requests = log_requests
        self.on_result = on_result

        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._inflight = {}  # request id -> Invocation, delivered and not answered
        self._finished = {}  # request id -> Invocation, answered
        self.invocations = []  # every Invocation enqueued, in order
        self.violations = []  # the runtime broke the protocol (text, one per event)
        self.timed_out = []  # invocations with no result by their deadline (also violations)
        self.init_errors = []  # (monotonic time, errorType, body) of POST /runtime/init/error
        self.restore_errors = []  # same for POST /runtime/restore/error
        self.api_calls = []  # (monotonic time, "GET /runtime/invocation/next", ...) in order

        self.proc = None
        self.t_spawn = None
        self.t_first_next = None
        self.t_restore_next = None  # the runtime called GET /runtime/restore/next
        self.t_restored = None  # the emulator answered it
        self.t_exit = None
        self.returncode = None
        self.pending_next = 0  # /next calls waiting for an event
        self.max_inflight = 0
        self.delivered = 0
        self.frozen = False
        self.freezes = 0
        self._thaw_pending = False
        self._t_thawed = None
        self._restore_pending = False  # the runtime waits in /restore/next
        self._restore_released = False
        self._restore_kind_pending = False
        self._closed = False
        self._server = None
        self._server_thread = None
        self._log = None
        self._log_lock = threading.Lock()
        self._exited = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def api(self):
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def init_duration_s(self):
        """Spawn to the runtime's first call for work (/next, or /restore/next with SnapStart)."""
        first = self.t_restore_next if self.snap_start else self.t_first_next
        if first is None or self.t_spawn is None:
            return None
        return first - self.t_spawn

    def start(self):
        if self.log_path:
            self._log = open(self.log_path, "ab", buffering=0)
        self._server = _RuntimeApiServer(("127.0.0.1", self.port), _RuntimeApiHandler)
        self._server.environment = self
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-api", daemon=True
        )
        self._server_thread.start()
        threading.Thread(
            target=self._watch_deadlines, name=f"{self.name}-deadlines", daemon=True
        ).start()
        if self.spawn:
            self._spawn()
        return self

    def runtime_environment(self):
        """The variables the runtime process gets."""
        env = {} if self.clear_env else dict(os.environ)
        env.update(self.extra_env)
        env["AWS_LAMBDA_RUNTIME_API"] = self.api
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start" if self.snap_start else "on-demand"
        if self.max_concurrency is not None:
            env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        return env

    def _spawn(self):
        out = self._log if self._log else subprocess.DEVNULL
        self._log_line(f"spawn {' '.join(self.command)} (Runtime API {self.api})")
        self.t_spawn = time.monotonic()
        # A session of its own: freeze and reclaim signal the whole process group, as Lambda
        # freezes the whole sandbox, even if the bootstrap script forks instead of exec'ing.
        self.proc = subprocess.Popen(
            self.command,
            env=self.runtime_environment(),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._watch_exit, name=f"{self.name}-wait", daemon=True).start()

    def _finish(self, inv):
        inv.done.set()
        if self.on_result is not None:
            self.on_result(inv)

    def _watch_exit(self):
        rc = self.proc.wait()
        with self._cond:
            self.t_exit = time.monotonic()
            self.returncode = rc
            self._log_line(f"process {self.proc.pid} exited: {_describe_returncode(rc)}")
            lost = list(self._inflight.values())
            for inv in lost:
                inv.outcome = "lost"
            self._inflight.clear()
            self._cond.notify_all()
        self._exited.set()
        for inv in lost:
            self._finish(inv)

    def close(self):
        """Ends everything: the process (SIGKILL if still alive) and the API server."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.alive:
            self._signal_group(signal.SIGKILL)
            self._signal_group(signal.SIGCONT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._cond:
            ended = list(self._queue) + list(self._inflight.values())
            for inv in self._queue:
                inv.outcome = "undelivered"
            for inv in self._inflight.values():
                inv.outcome = "lost"
            self._queue.clear()
            self._inflight.clear()
        for inv in ended:
            self._finish(inv)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- invocations ----------------------------------------------------------------------------
    def invoke(self, event, timeout_ms=10000, deadline_ms=None, request_id=None, meta=None):
        """Queues an event (a JSON-able object or bytes); returns its Invocation at once."""
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        inv = Invocation(
            self.name, request_id or str(uuid.uuid4()), payload, timeout_ms, deadline_ms, meta
        )
        with self._cond:
            if self._closed:
                raise EmulatorError(f"{self.name}: invoke after close()")
            self.invocations.append(inv)
            self._queue.append(inv)
            self._cond.notify_all()
        return inv

    def take_queued(self):
        """Removes and returns the events not delivered yet (to hand them to another
        environment, as Lambda does when it reclaims one)."""
        with self._cond:
            taken = list(self._queue)
            self._queue.clear()
            for inv in taken:
                self.invocations.remove(inv)
            return taken

    def requeue(self, inv):
        """Queues an Invocation taken from another environment (take_queued), keeping its
        arrival time, so its latency includes the wait."""
        with self._cond:
            if self._closed:
                raise EmulatorError(f"{self.name}: requeue after close()")
            inv.env_name = self.name
            self.invocations.append(inv)
            self._queue.append(inv)
            self._cond.notify_all()

    def wait_idle(self, timeout=10.0, waiting=None):
        """Waits until nothing is queued or in flight and `waiting` /next calls (default: the
        concurrency, 1 without it) are pending: the runtime is blocked asking for work."""
        want = waiting if waiting is not None else (self.max_concurrency or 1)
        end = time.monotonic() + timeout
        with self._cond:
            while not (not self._queue and not self._inflight and self.pending_next >= want):
                left = end - time.monotonic()
                if left <= 0 or self.t_exit is not None:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def state(self):
        with self._cond:
            return {
                "queued": len(self._queue),
                "in_flight": len(self._inflight),
                "pending_next": self.pending_next,
                "frozen": self.frozen,
                "alive": self.alive,
            }

    # --- freeze and thaw ------------------------------------------------------------------------
    def freeze(self, timeout=10.0):
        """Lambda freezes an environment once its runtime asks for the next event: waits for
        that, then SIGSTOPs the process group. The next invocation delivered counts as a thaw."""
        if not self.wait_idle(timeout):
            raise EmulatorError(
                f"{self.name}: the runtime did not go back to /next within {timeout:.1f} s "
                f"(state {self.state()}), so it cannot be frozen there"
            )
        self.freeze_now()

    def freeze_now(self):
        """SIGSTOP the process group wherever the runtime is."""
        with self._cond:
            if not self.alive:
                raise EmulatorError(f"{self.name}: cannot freeze, the process is not running")
            self._signal_group(signal.SIGSTOP)
            self.frozen = True
            self.freezes += 1
            self._thaw_pending = True
            self._log_line("frozen (SIGSTOP)")
        wait_stopped(process_group_pids(self.proc.pid))

    def thaw(self):
        """SIGCONT; queued events are delivered from now on, the first one as a thaw."""
        with self._cond:
            self._t_thawed = time.monotonic()
            self._signal_group(signal.SIGCONT)
            self.frozen = False
            self._log_line("thawed (SIGCONT)")
            self._cond.notify_all()

    # --- SnapStart ------------------------------------------------------------------------------
    def wait_restore_next(self, timeout=10.0):
        """Waits until the runtime calls GET /runtime/restore/next (init done, snapshot time)."""
        end = time.monotonic() + timeout
        with self._cond:
            while not self._restore_pending:
                left = end - time.monotonic()
                if left <= 0 or self.t_exit is not None:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def release_restore(self):
        """Answers the pending /restore/next: the restored copy runs from here (SIGCONT it
        first if frozen). The first invocation after it counts as a restore."""
        with self._cond:
            if self.frozen:
                self._t_thawed = time.monotonic()
                self._signal_group(signal.SIGCONT)
                self.frozen = False
            self._thaw_pending = False
            self._restore_released = True
            self._restore_kind_pending = True
            self.t_restored = time.monotonic()
            self._log_line("restore: answering /restore/next")
            self._cond.notify_all()

    # --- shutdown -------------------------------------------------------------------------------
    def sigterm(self, timeout=5.0):
        """SIGTERM to the runtime process (as Lambda's shutdown phase does); returns the seconds
        until it exited, or None if it did not within timeout (it is then SIGKILLed)."""
        if not self.alive:
            raise EmulatorError(f"{self.name}: SIGTERM: the process is not running")
        if self.frozen:
            self.thaw()
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        # The exit watcher takes the time right after waitpid() returns: Popen.wait(timeout)
        # would poll with up to 50 ms of sleep between looks.
        if not self._exited.wait(timeout):
            self._log_line(f"did not exit within {timeout:.1f} s of SIGTERM: SIGKILL")
            self.kill()
            return None
        took = self.t_exit - t0
        self._log_line(f"exited {took * 1000:.1f} ms after SIGTERM")
        return took

    def kill(self):
        """SIGKILL the process group (Lambda reclaiming the environment)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self._signal_group(signal.SIGCONT)
            self.proc.wait()

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    # --- inspection -----------------------------------------------------------------------------
    def tcp_connections(self, remote_port):
        """Local ports of the process group's TCP connections to 127.0.0.1/::1:remote_port."""
        if self.proc is None:
            return []
        return process_tcp_connections(self.proc.pid, remote_port)

    def log_tail(self, lines=25):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            data = f.read()[-20000:]
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    # --- request handling (called from the server's threads) -------------------------------
    def _violation(self, text):
        with self._cond:
            self.violations.append(text)
        self._log_line("PROTOCOL VIOLATION: " + text)

    def _record_call(self, what):
        self.api_calls.append((time.monotonic(), what))

    def _kind_and_origin(self, inv):
        """Cold: the first invocation; its latency runs from spawn (init included). Restore:
        the first after a restore, from the restore. Thaw: the first after a freeze, from the
        SIGCONT (Lambda thaws on invoke) or its arrival if later. Warm: from its arrival."""
        if self.delivered == 0 and not self._restore_kind_pending:
            return "cold", self.t_spawn if self.t_spawn is not None else inv.t_enqueued
        if self._restore_kind_pending:
            self._restore_kind_pending = False
            self._thaw_pending = False
            return "restore", max(self.t_restored, inv.t_enqueued)
        if self._thaw_pending:
            self._thaw_pending = False
            return "thaw", max(self._t_thawed, inv.t_enqueued)
        return "warm", inv.t_enqueued

    def _serve_next(self, h):
        with self._cond:
            self._record_call("GET /runtime/invocation/next")
            if self.t_first_next is None:
                self.t_first_next = time.monotonic()
            if self.snap_start and not self._restore_released:
                self._violation(
                    "GET /runtime/invocation/next before /runtime/restore/next was answered "
                    "(AWS_LAMBDA_INITIALIZATION_TYPE=snap-start)"
                )
            limit = self.max_concurrency or 1
            if self.pending_next + len(self._inflight) + 1 > limit:
                self._violation(
                    f"GET /runtime/invocation/next with {self.pending_next} /next pending and "
                    f"{len(self._inflight)} invocations in flight: more than the concurrency "
                    f"{limit}"
                )
            self.pending_next += 1
            self._cond.notify_all()
            while not self._closed and (not self._queue or self.frozen):
                self._cond.wait(0.5)
            self.pending_next -= 1
            if self._closed:
                h.close_connection = True
                return
            inv = self._queue.popleft()
            inv.kind, inv.t_origin = self._kind_and_origin(inv)
            inv.t_delivered = time.monotonic()
            inv.wall_delivered_ms = int(time.time() * 1000)
            if inv.deadline_ms is None:
                inv.deadline_ms = inv.wall_delivered_ms + int(inv.timeout_ms)
            self.delivered += 1
            self._inflight[inv.request_id] = inv
            self.max_inflight = max(self.max_inflight, len(self._inflight))
        h._reply(
            200,
            inv.payload,
            {
                "Lambda-Runtime-Aws-Request-Id": _header_value(inv.request_id),
                "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
                "Lambda-Runtime-Trace-Id": _trace_id(),
            },
        )

    def _serve_result(self, h, request_id, outcome, body):
        t = time.monotonic()
        wall = int(time.time() * 1000)
        header = h.headers.get("Lambda-Runtime-Function-Error-Type")
        late = None  # the Invocation this post came too late for
        expired = None  # one this post found past its deadline before the watcher did
        with self._cond:
            self._record_call(f"POST /runtime/invocation/{request_id}/{outcome}")
            inv = self._inflight.get(request_id)
            if inv is not None and wall >= inv.deadline_ms:
                # The watcher has not got to it yet: past its deadline is past, whatever the
                # order the two threads run in.
                self._time_out(inv)
                expired, inv = inv, None
            else:
                self._inflight.pop(request_id, None)
            prev = self._finished.get(request_id) if inv is None else None
            if prev is not None and prev.outcome == "timed_out" and prev.late_post is None:
                late = prev
                late.late_post, late.wall_late_ms, late.body = outcome, wall, body
                if outcome == "error":
                    late.error_type, late.error_message = _parse_error_document(body)
                    late.error_header = header
                status = 202
            elif inv is None:
                if prev is not None:
                    self._violation(
                        f"POST .../{request_id}/{outcome} after its "
                        f"{prev.late_post or prev.outcome} was already posted"
                    )
                else:
                    self._violation(
                        f"POST .../{request_id}/{outcome}: no such invocation in flight"
                    )
                status = 400
            else:
                inv.t_result, inv.wall_result_ms, inv.body = t, wall, body
                if outcome == "response" and len(body) > MAX_PAYLOAD_BYTES:
                    # As Lambda does: the invocation fails, the runtime gets 413.
                    inv.outcome = "error"
                    inv.error_type = "Function.ResponseSizeTooLarge"
                    inv.error_message = f"response of {len(body)} bytes"
                    status = 413
                elif outcome == "response":
                    inv.outcome = "response"
                    try:
                        inv.result = json.loads(body)
                    except ValueError:
                        inv.result = None
                    status = 202
                else:
                    inv.outcome = "error"
                    inv.error_type, inv.error_message = _parse_error_document(body)
                    inv.error_header = header
                    status = 202
                inv.http_status = status
                self._finished[request_id] = inv
                self._cond.notify_all()
        if late is not None:
            self._log_line(
                f"{outcome} for {request_id} posted {wall - late.deadline_ms} ms after its "
                "deadline: the invocation had timed out"
            )
        if status == 202:
            # Also for a post after the deadline: on Lambda the runtime would have been stopped
            # before it could post; the timeout is already recorded, and a 202 keeps one late
            # answer from turning into a cascade of failures in the rest of the scenario.
            h._reply(202, {"status": "OK"})
        elif status == 413:
            h._error(
                413,
                "RequestEntityTooLarge",
                f"Exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes).",
            )
        else:
            h._error(400, "InvalidRequestID", "Invalid request ID")
        if inv is not None or expired is not None:
            self._finish(inv or expired)

    def _time_out(self, inv):
        """Lambda's timeout: the invocation ends at its deadline without a result (called with
        _cond held). Recorded as the outcome timed_out and as a violation; the process is left
        running (see README.md: what the emulator emulates)."""
        self._inflight.pop(inv.request_id, None)
        inv.outcome = "timed_out"
        inv.http_status = None
        self._finished[inv.request_id] = inv
        self.timed_out.append(inv)
        self._cond.notify_all()
        text = (
            f"request {inv.request_id}: no result by its deadline "
            f"(Lambda-Runtime-Deadline-Ms {inv.deadline_ms}, "
            f"{inv.deadline_ms - inv.wall_delivered_ms} ms after delivery): Lambda would have "
            "timed the invocation out"
        )
        self.violations.append(text)
        self._log_line("TIMEOUT: " + text)

    def _watch_deadlines(self):
        """Times out each invocation in flight at its deadline, as Lambda does, whether or not
        its runtime ever posts."""
        while True:
            due = []
            with self._cond:
                if self._closed:
                    return
                now = int(time.time() * 1000)
                wait_s = 0.5
                for inv in list(self._inflight.values()):
                    if now >= inv.deadline_ms:
                        self._time_out(inv)
                        due.append(inv)
                    else:
                        wait_s = min(wait_s, (inv.deadline_ms - now) / 1000)
                if not due:
                    self._cond.wait(max(wait_s, 0.001))
            for inv in due:
                self._finish(inv)

    def _serve_init_error(self, h, body):
        with self._cond:
            self._record_call("POST /runtime/init/error")
            et, em = _parse_error_document(body)
            et = et or h.headers.get("Lambda-Runtime-Function-Error-Type")
            self.init_errors.append((time.monotonic(), et, em, body))
            late = self.delivered > 0
            self._cond.notify_all()
        self._log_line(f"init error: {et}: {em}")
        if late:
            self._violation("POST /runtime/init/error after the first invocation")
            h._error(403, "InvalidStateTransition", "init error after init")
        else:
            h._reply(202, {"status": "OK"})

    def _serve_restore_next(self, h):
        with self._cond:
            self._record_call("GET /runtime/restore/next")
            if not self.snap_start or self._restore_pending or self._restore_released:
                why = "a second time"
                if not self.snap_start:
                    why = "without AWS_LAMBDA_INITIALIZATION_TYPE=snap-start"
                self._violation("GET /runtime/restore/next " + why)
                bad = True
            else:
                bad = False
                self.t_restore_next = time.monotonic()
                self._restore_pending = True
                self._cond.notify_all()
                while not self._closed and not self._restore_released:
                    self._cond.wait(0.5)
                self._restore_pending = False
                if self._closed:
                    h.close_connection = True
                    return
        if bad:
            h._error(403, "InvalidStateTransition", "restore/next is not allowed now")
        else:
            h._reply(200)

    def _serve_restore_error(self, h, body):
        with self._cond:
            self._record_call("POST /runtime/restore/error")
            et, em = _parse_error_document(body)
            et = et or h.headers.get("Lambda-Runtime-Function-Error-Type")
            self.restore_errors.append((time.monotonic(), et, em, body))
            self._cond.notify_all()
        self._log_line(f"restore error: {et}: {em}")
        h._reply(202, {"status": "OK"})

    # --- logging --------------------------------------------------------------------------------
    def _log_line(self, text):
        if self._log is None:
            return
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        line = f"[emulator {stamp} {self.name}] {text}\n"
        with self._log_lock:
            try:
                self._log.write(line.encode())
            except (ValueError, OSError):
                pass

    def _log_api(self, text):
        if self.log_requests:
            self._log_line(text)


# --- helpers for drivers ----------------------------------------------------------------------
def _describe_returncode(rc):
    if rc is None:
        return "running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def describe_returncode(rc):
    return _describe_returncode(rc)


def wait_stopped(pids, timeout=2.0):
    """SIGSTOP is asynchronous, and a process-directed one first wakes a single thread, which
    then stops the others: until every thread of every process shows state T in /proc, some may
    still be running (a server answering one more query). Returns False on timeout."""
    end = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                break  # gone
            running = False
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
                if state not in ("T", "t", "Z", "X"):
                    running = True
                    break
            if not running:
                break
            if time.monotonic() >= end:
                return False
            time.sleep(0.001)
    return True


def process_group_pids(pgid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields: state ppid pgrp ...
            pids.append(int(entry))
    return pids


def process_tcp_connections(pgid, remote_port):
    """Local ports of the TCP sockets of process group `pgid` whose peer port is remote_port."""
    inodes = set()
    for pid in process_group_pids(pgid):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pgid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
                    if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                        ports.append(int(local.rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return sorted(ports)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def summarize(invocations):
    """{kind: {count, p50_ms, p99_ms, max_ms}} over the invocations that have a latency."""
    by_kind = collections.defaultdict(list)
    for inv in invocations:
        if inv.latency_s is not None and inv.kind:
            by_kind[inv.kind].append(inv.latency_s * 1000)
    out = {}
    for kind in KINDS:
        v = by_kind.get(kind)
        if v:
            out[kind] = {
                "count": len(v),
                "p50_ms": round(percentile(v, 50), 3),
                "p99_ms": round(percentile(v, 99), 3),
                "max_ms": round(max(v), 3),
            }
    return out


# --- command line -----------------------------------------------------------------------------
def _cli(argv):
    p = argparse.ArgumentParser(
        description="Serve the Lambda Runtime API to one bootstrap and feed it events: one JSON "
        "document per line from --events (default: stdin). Prints one JSON line per result, "
        "then SIGTERMs the runtime and prints the latency summary.",
        epilog="example: echo '{\"account\":\"a\",\"amount\":5}' | python3 emulator.py "
        "--env DATABASE='postgresql://dbname=app' -- ./bootstrap",
    )
    add = p.add_argument
    add("command", nargs="*", help="the runtime to run (omit with --no-spawn)")
    add("--env", action="append", default=[], metavar="NAME=VALUE",
        help="a variable for the runtime (repeatable)")
    add("--inherit-env", action="store_true",
        help="give the runtime this shell's environment too (default: only --env and the "
        "variables Lambda sets)")
    add("--events", default="-", help="file of JSON events, one a line ('-': stdin)")
    add("--timeout-ms", type=int, default=10000,
        help="each invocation's deadline, from its delivery (default 10000)")
    add("--max-concurrency", type=int,
        help="set AWS_LAMBDA_MAX_CONCURRENCY and keep that many events in flight")
    add("--snap-start", action="store_true",
        help="set AWS_LAMBDA_INITIALIZATION_TYPE=snap-start; freeze at /restore/next and "
        "restore after --freeze seconds")
    add("--freeze", type=float, default=0.0, metavar="SECONDS",
        help="freeze the runtime this long between invocations (0: never)")
    add("--port", type=int, default=0, help="port of the Runtime API (default: any free one)")
    add("--no-spawn", action="store_true",
        help="only serve the API; start the runtime yourself with the printed "
        "AWS_LAMBDA_RUNTIME_API")
    add("--log", help="file for the runtime's output and the request log (default: stderr)")
    a = p.parse_args(argv)
    if not a.command and not a.no_spawn:
        p.error("give the runtime's command, or --no-spawn")
    env = {}
    for item in a.env:
        k, sep, v = item.partition("=")
        if not sep:
            p.error(f"--env {item}: expected NAME=VALUE")
        env[k] = v
    log_path = a.log or "/dev/stderr"
    e = Environment(
        a.command,
        env,
        name="cli",
        log_path=log_path,
        max_concurrency=a.max_concurrency,
        snap_start=a.snap_start,
        clear_env=not a.inherit_env,
        port=a.port,
        spawn=not a.no_spawn,
    )
    e.start()
    print(f"AWS_LAMBDA_RUNTIME_API={e.api}", file=sys.stderr, flush=True)
    failures = 0
    try:
        if a.snap_start:
            if not e.wait_restore_next(60):
                raise EmulatorError("the runtime never called /runtime/restore/next")
            e.freeze_now()
            time.sleep(a.freeze)
            e.release_restore()
        src = sys.stdin if a.events == "-" else open(a.events)
        width = a.max_concurrency or 1
        pending = collections.deque()

        def drain(n):
            nonlocal failures
            while len(pending) > n:
                inv = pending.popleft()
                # A delivered invocation ends by its deadline at the latest; one the runtime
                # never took ends when the runtime is gone (an init error, a crash).
                while not inv.wait(0.2):
                    if inv.kind is None and e.spawn and not e.alive:
                        raise EmulatorError(
                            "the runtime exited before taking the next event ("
                            + _describe_returncode(e.returncode)
                            + "); its log is above")
                failures += inv.outcome != "response"
                print(json.dumps(inv.to_dict()), flush=True)

        for line in src:
            line = line.strip()
            if not line:
                continue
            if a.freeze > 0 and e.delivered > 0:
                drain(0)
                e.freeze(60)
                time.sleep(a.freeze)
                e.thaw()
            pending.append(e.invoke(line.encode(), timeout_ms=a.timeout_ms))
            drain(width - 1)
        drain(0)
        if e.spawn and e.alive and e.wait_idle(10):
            took = e.sigterm()
            exit_ms = None if took is None else round(took * 1000, 1)
            print(json.dumps({"sigterm_exit_ms": exit_ms}), file=sys.stderr)
        init_ms = None if e.init_duration_s is None else round(e.init_duration_s * 1000, 1)
        summary = {
            "latency": summarize(e.invocations),
            "init_ms": init_ms,
            "violations": e.violations,
        }
        print(json.dumps(summary), file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except EmulatorError as err:
        print(f"emulator: {err}", file=sys.stderr, flush=True)
        failures += 1
    finally:
        e.close()
    return 1 if failures or e.violations else 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
