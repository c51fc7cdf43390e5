"""Real STAC API servers on 127.0.0.1 for the API harvester's tests and benchmark: stac-fastapi-pgstac on
PostgreSQL + PostGIS, `rustac serve`, and a proxy in front of either that injects faults (429 + Retry-After,
500/503, stalls past the client's timeout, bodies cut off, an older page served again) or adds latency.

Run as a script it is that proxy (`python tests/stac_servers.py proxy --upstream URL --port N [--delay S]`): the
benchmark runs it as its own process so its work does not share an interpreter with the clients it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import http.client
import http.server
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

PGSTAC_HINT = (
    "the pgstac tests need PostgreSQL 15 with PostGIS: `apt-get install -y postgresql-15-postgis-3` as root "
    "(.ci/run does it); and `pip install -e '.[test]'` for stac-fastapi-pgstac, pypgstac and uvicorn"
)
PAGING = ("token", "next", "skip", "offset", "page", "cursor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers 200 (or the process died, or time ran out: RuntimeError)."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            conn.request("GET", parts.path or "/")
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


try:  # loaded here: a child that switched to another user may not read this interpreter's files any more
    _prctl: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def die_with_parent() -> None:
    """preexec_fn: the server gets SIGTERM when the process that started it dies, even by SIGKILL or a test
    timeout, so no server outlives its test run (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM, 0, 0, 0)


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -------------------------------------------------------------------------------------------------- pgstac


def postgres_bin() -> Path | None:
    """The bin folder of a PostgreSQL that has PostGIS installed, or None."""
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        version = Path(initdb).parts[-3]
        if Path(f"/usr/share/postgresql/{version}/extension/postgis.control").exists():
            return Path(initdb).parent
    return None


def pgstac_missing() -> str | None:
    """Why a pgstac server cannot run here, or None."""
    if postgres_bin() is None:
        return "no PostgreSQL with PostGIS found; " + PGSTAC_HINT
    for module in ("stac_fastapi.pgstac", "pypgstac", "uvicorn", "psycopg"):
        if importlib.util.find_spec(module) is None:
            return f"python module {module} is missing; " + PGSTAC_HINT
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs the postgres user (the postgresql package creates it) to run PostgreSQL"
    return None


class PgStacServer:
    """PostgreSQL (fsync off, a throwaway cluster) + pgstac schema + stac-fastapi-pgstac under uvicorn."""

    def __init__(self, *, workers: int = 1) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError(PGSTAC_HINT)
        self.workers = workers
        self.dir = Path(tempfile.mkdtemp(prefix="cscale-pgstac-"))
        self.pg_port = free_port()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.pg_port}/pgstac"
        self.api: subprocess.Popen[bytes] | None = None
        self.postgres: subprocess.Popen[bytes] | None = None
        self._logs: list[Any] = []
        # initdb and postgres refuse to run as root: as root, they run as the postgres user
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self.as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _log(self, name: str) -> Any:
        handle = open(self.dir / name, "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(handle)
        return handle

    def start(self) -> PgStacServer:
        assert self.bin is not None
        data = self.dir / "data"
        if self.as_user:
            os.chown(self.dir, self.as_user["user"], self.as_user["group"])
        initdb = [str(self.bin / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data), "--no-sync"]
        subprocess.run(initdb, check=True, capture_output=True, cwd=self.dir, **self.as_user)
        postgres = [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.pg_port), "-k", str(self.dir)]
        postgres += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"]
        self.postgres = subprocess.Popen(
            postgres,
            cwd=self.dir,
            stdout=self._log("postgres.log"),
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            **self.as_user,
        )
        base = f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(base, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE DATABASE pgstac")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.postgres.poll() is not None:
                    log = (self.dir / "postgres.log").read_text()[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start: {log}") from None
                time.sleep(0.05)
        env = {
            **os.environ,
            "PGUSER": "postgres",
            "PGPASSWORD": "",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.pg_port),
            "PGDATABASE": "pgstac",
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "stac_fastapi.pgstac.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        # The app connects at startup but queries the schema only per request: migrate while it imports.
        self.api = subprocess.Popen(
            command,
            cwd=self.dir,
            env=env,
            stdout=self._log("uvicorn.log"),
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        from pypgstac.db import PgstacDB
        from pypgstac.migrate import Migrate

        with PgstacDB(dsn=self.dsn) as db:
            Migrate(db).run_migration()
        try:
            wait_http(self.url + "/", timeout=60, process=self.api)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {(self.dir / 'uvicorn.log').read_text()[-2000:]}") from None
        return self

    def load(self, collections: Iterable[dict[str, Any]], items: Iterable[dict[str, Any]]) -> None:
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods

        with PgstacDB(dsn=self.dsn) as db:
            loader = Loader(db)
            loader.load_collections(iter(list(collections)), Methods.upsert)
            loader.load_items(iter(list(items)), Methods.upsert)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return list(cursor.fetchall()) if cursor.description else []

    def set_context(self, on: bool) -> None:
        """pgstac counts matches (numberMatched) only with its `context` setting on."""
        self.sql("UPDATE pgstac.pgstac_settings SET value = %s WHERE name = 'context'", "on" if on else "off")

    def item_ids(self) -> set[tuple[str, str]]:
        return {(str(c), str(i)) for c, i in self.sql("SELECT collection, id FROM pgstac.items")}

    def stop(self) -> None:
        stop_process(self.api)
        stop_process(self.postgres, signal.SIGQUIT)  # immediate shutdown: the cluster is thrown away
        for handle in self._logs:
            handle.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def collections_for(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A STAC collection per collection id of `items`, with the items' temporal and spatial extent."""
    spans: dict[str, list[Any]] = {}
    for item in items:
        props = item["properties"]
        when = props.get("datetime") or props.get("start_datetime")
        box = item.get("bbox") or [-180, -90, 180, 90]
        span = spans.setdefault(item["collection"], [when, when, list(box[:2]), list(box[2:4])])
        span[0], span[1] = min(span[0], when), max(span[1], when)
    return [
        {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": cid,
            "description": f"{cid} (sample federation)",
            "license": "proprietary",
            "links": [],
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [[lo, hi]]},
            },
        }
        for cid, (lo, hi, _, _) in sorted(spans.items())
    ]


# --------------------------------------------------------------------------------------------- rustac serve


class RustacServer:
    """`rustac serve` on an NDJSON file (an in-memory backend that pages with `skip`)."""

    def __init__(self, ndjson: Path) -> None:
        self.ndjson = ndjson
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RustacServer:
        binary = Path(sys.executable).with_name("rustac")
        command = [str(binary), "serve", str(self.ndjson), "--create-collections", "-a", f"127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        wait_http(self.url + "/", timeout=30, process=self.process)
        return self

    def stop(self) -> None:
        stop_process(self.process)


# ---------------------------------------------------------------------------------------------------- proxy

FAULTS = ("429", "500", "503", "stall", "truncate", "repeat")


class _ProxyState:
    def __init__(self, upstream: str, rate: float, kinds: Sequence[str], delay: float, stall: float, seed: int) -> None:
        self.max_limit = 0  # quirks of real servers: a page-size cap answered with 400 ...
        self.refuse_post = False  # ... POST /search answered 405 ...
        self.require: tuple[str, str] | None = None  # ... an API key (401 without it) ...
        self.refuse_filter = False  # ... and no CQL2 filters (400)
        self.seen_headers: list[dict[str, str]] = []
        self.queries: Counter[str] = Counter()  # requests per query (paging parameters left out)
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.delay = delay
        self.stall = stall
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.turn = 0
        self.owed = 0
        self.last: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        self.local = threading.local()
        self.origin = b""

    def decide(self, key: str) -> str | None:
        """A fault for this response, or None. Faulted responses are drawn at `rate`; their kinds take turns so
        that every kind occurs. An older page can only be served again where one exists: when it cannot, another
        kind goes now and the repeat is owed to the next faulted response that can take it."""
        with self.lock:
            self.requests += 1
            if not self.kinds or self.rng.random() >= self.rate:
                return None
            if self.owed and key in self.last:
                self.owed -= 1
                self.faults["repeat"] += 1
                return "repeat"
            kind = self.kinds[self.turn % len(self.kinds)]
            self.turn += 1
            if kind == "repeat" and key not in self.last:
                self.owed += 1
                kind = self.kinds[self.turn % len(self.kinds)]
                self.turn += 1
                if kind == "repeat":
                    return None
            self.faults[kind] += 1
            return kind


def _query_key(method: str, path: str, body: bytes) -> str:
    """A request's query without its paging parameters: the pages of one query share it."""
    parts = urlsplit(path)
    params = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in PAGING)
    doc: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(body) if body else None
    if isinstance(doc, dict):
        doc = {k: v for k, v in doc.items() if k not in PAGING}
    return (
        method
        + " "
        + parts.path
        + "?"
        + urlencode(params)
        + " "
        + orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
    )


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and leave are part of the test


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _ProxyState

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        state = self.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_stats":
            payload = orjson.dumps({"requests": state.requests, "faults": dict(state.faults)})
            self._send(200, [("Content-Type", "application/json")], payload)
            return
        with state.lock:
            state.seen_headers.append(dict(self.headers.items()))
        refusal = self._quirks(body)
        if refusal is not None:
            self._send(refusal[0], [("Content-Type", "application/json")], refusal[1])
            return
        key = _query_key(self.command, self.path, body)
        with state.lock:
            state.queries[key] += 1
        fault = state.decide(key)
        if state.delay:
            time.sleep(state.delay)
        if fault in ("429", "500", "503"):
            status = int(fault or 0)
            headers = [("Content-Type", "application/json")]
            if status == 429:
                headers.append(("Retry-After", "1"))
            self._send(status, headers, b'{"code": "injected", "description": "fault injected by the test proxy"}')
            return
        if fault == "repeat":
            status, headers, payload = state.last[key]
            self._send(status, headers, payload)
            return
        if fault == "stall":
            time.sleep(state.stall)  # the client gave up waiting; answering now may fail
        status, headers, payload = self._forward(body)
        if status == 200:
            with state.lock:
                state.last[key] = (status, headers, payload)
        if fault == "truncate":
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send(status, headers, payload)

    def _quirks(self, body: bytes) -> tuple[int, bytes] | None:
        state = self.state
        if state.require and self.headers.get(state.require[0]) != state.require[1]:
            return 401, b'{"code": "Unauthorized", "description": "missing or wrong API key"}'
        if state.refuse_post and self.command == "POST":
            return 405, b'{"detail": "Method Not Allowed"}'
        if state.refuse_filter and (b'"filter"' in body or "filter=" in self.path):
            return 400, b'{"code": "BadRequest", "description": "Unknown queryable: updated"}'
        if state.max_limit:
            limit: Any = dict(parse_qsl(urlsplit(self.path).query)).get("limit")
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                limit = orjson.loads(body).get("limit", limit) if body else limit
            if limit is not None and int(limit) > state.max_limit:
                return 400, orjson.dumps(
                    {"code": "BadRequest", "description": f"limit must be less than or equal to {state.max_limit}"}
                )
        return None

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        state = self.state
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "accept-encoding")}
        for attempt in range(2):
            conn = getattr(state.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(state.upstream.hostname, state.upstream.port, timeout=120)
                state.local.conn = conn
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                state.local.conn = None
                if attempt:
                    raise
        # A server that writes its own address into links (rustac) is rewritten to the proxy's, as a reverse
        # proxy does; one that honours Host (pgstac) already wrote the proxy's.
        own = f"http://{self.headers.get('Host', '')}".encode()
        payload = payload.replace(state.origin, own) if state.origin else payload
        kept = [(k, v) for k, v in response.getheaders() if k.lower() in ("content-type", "retry-after")]
        return response.status, kept, payload

    def _send(self, status: int, headers: Sequence[tuple[str, str]], payload: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client timed out and left


class FaultProxy:
    """A threaded HTTP proxy to `upstream` on 127.0.0.1: `rate` of the responses faulted (kinds in turn),
    `delay` seconds added to every response. In this process (start) or as its own (spawn)."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: Sequence[str] = FAULTS,
        delay: float = 0.0,
        stall: float = 2.0,
        seed: int = 7,
        port: int | None = None,
        max_limit: int = 0,
        refuse_post: bool = False,
        require: tuple[str, str] | None = None,
        refuse_filter: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.options = (rate, tuple(kinds), delay, stall, seed)
        self.quirks = (max_limit, refuse_post, require, refuse_filter)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: http.server.ThreadingHTTPServer | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.state: _ProxyState | None = None

    def start(self) -> FaultProxy:
        rate, kinds, delay, stall, seed = self.options
        state = _ProxyState(self.upstream, rate, kinds, delay, stall, seed)
        state.origin = self.upstream.encode()
        state.max_limit, state.refuse_post, state.require, state.refuse_filter = self.quirks
        handler = type("Handler", (_ProxyHandler,), {"state": state})
        self.server = _QuietServer(("127.0.0.1", self.port), handler)
        self.state = state
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fault-proxy").start()
        return self

    def spawn(self) -> FaultProxy:
        rate, kinds, delay, stall, seed = self.options
        command = [
            sys.executable,
            __file__,
            "proxy",
            "--upstream",
            self.upstream,
            "--port",
            str(self.port),
            "--rate",
            str(rate),
            "--kinds",
            ",".join(kinds),
            "--delay",
            str(delay),
            "--stall",
            str(stall),
            "--seed",
            str(seed),
        ]
        self.process = subprocess.Popen(command, preexec_fn=die_with_parent)
        wait_http(self.url + "/_stats", timeout=30, process=self.process)
        return self

    def stats(self) -> dict[str, Any]:
        if self.state is not None:
            with self.state.lock:
                return {"requests": self.state.requests, "faults": dict(self.state.faults)}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/_stats")
        return dict(orjson.loads(conn.getresponse().read()))

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        stop_process(self.process)


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    try:
        yield server.start()
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fault-injecting / latency-adding HTTP proxy on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--rate", type=float, default=0.0)
    proxy.add_argument("--kinds", default=",".join(FAULTS))
    proxy.add_argument("--delay", type=float, default=0.0)
    proxy.add_argument("--stall", type=float, default=2.0)
    proxy.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    server = FaultProxy(
        args.upstream, rate=args.rate, kinds=kinds, delay=args.delay, stall=args.stall, seed=args.seed, port=args.port
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
