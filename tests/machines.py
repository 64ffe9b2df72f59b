"""A simulated cluster: machines on one host that share nothing but a network.

Each machine is a Linux network namespace (``ip netns``) with its own hostname (a UTS
namespace), working directory, HOME and caches, joined to the host by a veth pair on a bridge;
the host is the database and store machine. PostgreSQL listens on the cluster network only with
``scram-sha-256`` passwords and TLS (a CA this module makes; clients use ``sslmode=verify-full``),
PgBouncer in transaction mode in front of it (TLS and passwords too), and moto's S3 server is
the artifact store. A machine is lost by SIGKILLing its process groups, cut off by taking its
link down.

Needs root and iproute2; where either is missing :class:`Cluster` raises one line saying so
(the tests fail, they do not skip).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pg import PrivateServer, _run_as, free_port
from procs import worker_env
from s3 import MotoS3

__all__ = [
    "HBA",
    "PGBOUNCER_CONF",
    "POSTGRES_CONF",
    "URL_TLS",
    "Cluster",
    "Machine",
    "running_on",
]

USER, PASSWORD, DATABASE = "ganhpo", "cluster-S3cret-pw", "cluster"

# The database machine's configuration, as README "Run on several machines" gives it (the test
# of that section checks the README against these): settings with fixed values, and the keys
# whose values are this host's addresses and files.
POSTGRES_CONF = {"ssl": "on", "password_encryption": "scram-sha-256"}
POSTGRES_KEYS = ("listen_addresses", "ssl_cert_file", "ssl_key_file")
HBA = ("hostssl", "all", "all", "scram-sha-256")  # and the cluster's network, before the method
PGBOUNCER_CONF = {
    "auth_type": "scram-sha-256",
    "pool_mode": "transaction",
    "client_tls_sslmode": "require",
}
PGBOUNCER_KEYS = (
    "listen_addr", "listen_port", "auth_file", "client_tls_key_file", "client_tls_cert_file"
)  # fmt: skip
URL_TLS = "sslmode=verify-full&sslrootcert="  # the storage URL's query, then the CA's path


def running_on(study: Any, host: str, step: int) -> Any:
    """A trial of ``study`` running on ``host`` with a checkpoint at ``step`` or later
    recorded, else None: a machine's trial worth losing."""
    from optuna.trial import TrialState

    from ganhpo.chains import checkpoint_of

    for t in study.get_trials(deepcopy=False):
        checkpoint = checkpoint_of(t) or {}
        if (
            t.state == TrialState.RUNNING
            and t.user_attrs.get("host") == host
            and checkpoint.get("step", 0) >= step
        ):
            return t
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])}: {proc.stderr.strip()[-500:]}")


def make_certificates(directory: Path, host_ip: str) -> None:
    """A CA (``ca.crt``) and the server's key and certificate for ``host_ip`` (its
    subjectAltName, which ``sslmode=verify-full`` checks)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=ganhpo-test-ca",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={host_ip}",
        cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text(f"subjectAltName=IP:{host_ip}\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
        cwd=directory,
    )  # fmt: skip


class Machine:
    """One machine of the cluster: a namespace, a hostname, a directory of its own."""

    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.name = f"m{index}"
        self.namespace = f"ganhpo-{cluster.tag}-{self.name}"
        self.host_link = f"ghh{cluster.tag}{index}"  # the host's end of its cable
        self.ip = f"{cluster.prefix}.{10 + index}"
        self.root = cluster.root / self.name
        self.processes: list[subprocess.Popen[str]] = []
        self.extra_env: dict[str, str] = {}  # more of what its user set (a data directory)

    def env(self) -> dict[str, str]:
        """What a user on this machine would set: its own HOME and caches, the database's URL
        (password and TLS), the store's endpoint and credentials."""
        env = worker_env(self.root / "cache")
        env |= self.cluster.store.env()
        env |= {"HOME": str(self.root / "home"), "GANHPO_STORAGE": self.cluster.storage_url}
        return env | self.extra_env

    def _argv(self, *args: str) -> list[str]:
        hostname = f"ganhpo-{self.name}"
        inner = f'hostname {hostname} && exec "$@"'
        return [
            "ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c", inner, "sh",
            sys.executable, "-m", "ganhpo", *args,
        ]  # fmt: skip

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``ganhpo ARGS`` on this machine, to completion."""
        return subprocess.run(
            self._argv(*args),
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, log: str) -> subprocess.Popen[str]:
        """``ganhpo ARGS`` on this machine in the background, in a process group of its own,
        logging to ``log`` in the machine's directory."""
        out = open(self.root / log, "w")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(
            self._argv(*args),
            cwd=self.root,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.root / name).read_text()

    def lose(self) -> None:
        """The machine is lost: every process of it SIGKILLed at once."""
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.processes:
            proc.wait(timeout=30)

    def cut(self) -> None:
        """The machine's network cable is pulled: its processes go on, reaching no one."""
        _ip("link", "set", self.host_link, "down")

    def reconnect(self) -> None:
        _ip("link", "set", self.host_link, "up")


class Cluster:
    """``machines`` machines, and on the host the database (PostgreSQL behind PgBouncer, TLS
    and passwords) and the object store, reachable on the cluster network only."""

    def __init__(self, machines: int = 3) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the cluster tests need root (network namespaces): run as root")
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            raise RuntimeError("the cluster tests need iproute2 and util-linux (ip, unshare)")
        self.tag = f"{os.getpid() % 10000:04d}"
        self.prefix = f"10.231.{os.getpid() % 200 + 20}"
        self.host_ip = f"{self.prefix}.1"
        self.bridge = f"ghb{self.tag}"
        self.root = Path(tempfile.mkdtemp(prefix="ganhpo-cluster-"))
        self.root.chmod(0o755)
        self.machines = [Machine(self, i) for i in range(1, machines + 1)]
        self.tls = self.root / "tls"
        self.server: PrivateServer | None = None
        self.bouncer: subprocess.Popen[bytes] | None = None
        self.bouncer_port = free_port()
        self.store = MotoS3(host=self.host_ip)

    @property
    def storage_url(self) -> str:
        """The study database as the machines reach it: through PgBouncer, with a password,
        TLS verified against the cluster's CA."""
        return (
            f"postgresql://{USER}:{PASSWORD}@{self.host_ip}:{self.bouncer_port}/{DATABASE}"
            f"?{URL_TLS}{self.tls / 'ca.crt'}"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self._network()
            self._database()
            self._bouncer()
            self.store.__enter__()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for machine in self.machines:
            machine.lose()
        self.store.stop()
        if self.bouncer is not None and self.bouncer.poll() is None:
            self.bouncer.terminate()
            self.bouncer.wait(timeout=30)
        if self.server is not None:
            self.server.cleanup()
        for machine in self.machines:
            subprocess.run(["ip", "netns", "delete", machine.namespace], capture_output=True)
            subprocess.run(["ip", "link", "delete", machine.host_link], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _network(self) -> None:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except RuntimeError as e:
            raise RuntimeError(
                f"cannot make the cluster's network (needs root, iproute2): {e}"
            ) from None
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for m in self.machines:
            inside = f"ghm{self.tag}{m.name[1:]}"
            _ip("netns", "add", m.namespace)
            _ip("link", "add", m.host_link, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", m.namespace)
            _ip("link", "set", m.host_link, "master", self.bridge)
            _ip("link", "set", m.host_link, "up")
            _ip("-n", m.namespace, "addr", "add", f"{m.ip}/24", "dev", inside)
            _ip("-n", m.namespace, "link", "set", inside, "up")
            _ip("-n", m.namespace, "link", "set", "lo", "up")
            for sub in ("home", "cache", "work"):
                (m.root / sub).mkdir(parents=True)
        self.tls.mkdir()
        make_certificates(self.tls, self.host_ip)

    def _database(self) -> None:
        owner = _run_as()
        key, cert = self.tls / "server.key", self.tls / "server.crt"
        for path in (self.tls, key, cert):
            path.chmod(0o700 if path.is_dir() else 0o600)
            if owner is not None:
                entry = pwd.getpwnam(owner)
                os.chown(path, entry.pw_uid, entry.pw_gid)
        (self.tls / "ca.crt").chmod(0o644)
        self.tls.chmod(0o755)
        server = PrivateServer(
            settings={
                "listen_addresses": f"127.0.0.1,{self.host_ip}",
                "ssl_cert_file": str(cert),
                "ssl_key_file": str(key),
                **POSTGRES_CONF,
            }
        )
        self.server = server
        server._initdb()
        with open(server.data_dir / "pg_hba.conf", "a") as hba:
            # The cluster network: TLS and a password, nothing else.
            hba.write(" ".join((*HBA[:3], f"{self.prefix}.0/24", HBA[3])) + "\n")
        server.start()
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            sqlalchemy.engine.make_url(server.url()).set(drivername="postgresql+psycopg2"),
            isolation_level="AUTOCOMMIT",
            poolclass=sqlalchemy.pool.NullPool,
        )
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"))
                conn.execute(sqlalchemy.text(f"CREATE DATABASE {DATABASE} OWNER {USER}"))
        finally:
            engine.dispose()

    def _bouncer(self) -> None:
        assert self.server is not None
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed: apt-get install pgbouncer (.ci/run)")
        root = self.root / "pgbouncer"
        root.mkdir()
        ini = [
            "[databases]",
            f"{DATABASE} = host=127.0.0.1 port={self.server.port} dbname={DATABASE}",
            "[pgbouncer]",
            f"listen_addr = {self.host_ip}",
            f"listen_port = {self.bouncer_port}",
            f"unix_socket_dir = {root}",
            f"auth_file = {root / 'users.txt'}",
            *(f"{k} = {v}" for k, v in PGBOUNCER_CONF.items()),
            "default_pool_size = 10",
            "max_client_conn = 500",
            "query_wait_timeout = 0",
            f"client_tls_key_file = {self.tls / 'server.key'}",
            f"client_tls_cert_file = {self.tls / 'server.crt'}",
            f"logfile = {root / 'pgbouncer.log'}",
        ]
        (root / "pgbouncer.ini").write_text("\n".join(ini) + "\n")
        (root / "users.txt").write_text(f'"{USER}" "{PASSWORD}"\n')
        owner = _run_as()
        if owner is not None:
            entry = pwd.getpwnam(owner)
            for path in (root, *root.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.bouncer = subprocess.Popen(
            [binary, str(root / "pgbouncer.ini")],
            user=owner,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex((self.host_ip, self.bouncer_port)) == 0:
                    return
            log = root / "pgbouncer.log"
            if self.bouncer.poll() is not None or time.monotonic() > deadline:
                text = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"pgbouncer did not start:\n{text}")
            time.sleep(0.1)
