"""A throwaway PostgreSQL cluster: initdb in a temporary directory, a free port, stop and remove.

Used by the test session (``tests/service/conftest.py``: the API suite on the PostgreSQL
backend, ``tests/service/test_pg_*.py``), by the failover drill (``bench/failover_drill.py``:
a primary and a synchronous standby made with ``pg_basebackup``) and by hand, to give
``ordonum serve --store`` and the load test a database::

    python bench/pgcluster.py start /tmp/ordonum-pg      # prints the postgresql:// URL
    python bench/pgcluster.py stop /tmp/ordonum-pg

The server binaries come from ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``
(Debian's packages: ``apt-get install postgresql``, which ``make test`` does when missing).
``initdb`` refuses to run as root, so when we are root the cluster belongs to the
``postgres`` user the Debian package creates, and every server command runs through
``runuser``. Durability settings are PostgreSQL's defaults (``fsync``, ``synchronous_commit``
and ``full_page_writes`` on): the tests exercise the real thing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["PgCluster", "bindir", "free_port"]


def bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version first)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(out) / "initdb").exists() and (Path(out) / "postgres").exists():
            return Path(out)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    raise FileNotFoundError(
        "PostgreSQL server binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin):"
        " apt-get install postgresql"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _owner() -> str | None:
    """The user the server runs as when we are root (initdb refuses root), else None."""
    return "postgres" if os.geteuid() == 0 else None


class PgCluster:
    """One PostgreSQL server in ``base/data``, listening on 127.0.0.1:``port`` only."""

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base = Path(base)
        self.data = self.base / "data"
        self.port = port or free_port()
        self.bin = bindir()
        self.user = _owner()
        self.log = self.base / "server.log"

    # -- commands --------------------------------------------------------------------------

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._cmd(*args), capture_output=True, text=True, check=check)

    def _prepare_base(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        # The server's user must reach the directory through its parents.
        for parent in self.base.parents:
            mode = parent.stat().st_mode
            if self.user and not mode & 0o001:
                raise PermissionError(
                    f"{parent} is not searchable by {self.user}: put the cluster elsewhere"
                )

    def _configure(self) -> None:
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# ordonum throwaway cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "max_connections = 300\n"
                "shared_buffers = 128MB\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "logging_collector = off\n"
            )

    @classmethod
    def create(cls, base: Path | None = None, port: int | None = None) -> PgCluster:
        """initdb (trust authentication on 127.0.0.1 only) and configure; not started."""
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="ordonum-pg-"))
        cluster = cls(base, port)
        cluster._prepare_base()
        cluster._run(
            str(cluster.bin / "initdb"),
            "-D",
            str(cluster.data),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )
        cluster._configure()
        return cluster

    @classmethod
    def standby_of(cls, primary: PgCluster, base: Path, name: str = "standby1") -> PgCluster:
        """A streaming standby of ``primary`` (``pg_basebackup -R``), not started; its
        ``application_name`` is ``name`` (what ``synchronous_standby_names`` lists)."""
        cluster = cls(base)
        cluster._prepare_base()
        cluster._run(
            str(cluster.bin / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(cluster.data),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
        )
        with (cluster.data / "postgresql.auto.conf").open("a") as f:
            f.write(
                f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres"
                f" application_name={name}'\n"
            )
        with (cluster.data / "postgresql.conf").open("a") as f:
            f.write(f"\nport = {cluster.port}\nunix_socket_directories = '{cluster.base}'\n")
        return cluster

    def set(self, **settings: str) -> None:
        """Append settings to postgresql.conf (take effect at the next start or reload)."""
        with (self.data / "postgresql.conf").open("a") as f:
            for key, value in settings.items():
                f.write(f"{key} = '{value}'\n")

    def start(self, timeout: float = 60) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def reload(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "reload")

    def promote(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "promote")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def kill(self) -> None:
        """SIGKILL the postmaster (a machine loss, as far as this server is concerned) and
        its backends: a killed postmaster leaves them running until they notice."""
        pid = self.postmaster_pid()
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run(
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
            "-Atq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new database; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        """Stop (immediate) if running, and delete the directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"start", "stop"}:
        print("usage: pgcluster.py start|stop DIR", file=sys.stderr)
        return 2
    command, base = argv[0], Path(argv[1]).resolve()
    if command == "start":
        if (base / "data").exists():
            conf = (base / "data" / "postgresql.conf").read_text()
            port = int(conf.rsplit("\nport = ", 1)[1].split("\n", 1)[0])
            cluster = PgCluster(base, port)
        else:
            cluster = PgCluster.create(base)
        cluster.start()
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.psql("CREATE DATABASE ordonum")
        print(cluster.url("ordonum"))
    else:
        PgCluster(base, 1).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
