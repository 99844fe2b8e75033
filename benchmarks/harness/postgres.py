"""Scratch PostgreSQL databases for a benchmark run, made and dropped through ``psql`` on a loopback server.

Only a loopback server is used (:func:`check_loopback`): a benchmark creates and force-drops databases there.
URLs may carry a SQLAlchemy driver (``postgresql+asyncpg://``); :func:`libpq_url` strips it for ``psql`` and asyncpg.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from . import SetupError

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PSQL_TIMEOUT_S = 60.0


def check_loopback(url: str) -> None:
    """:class:`SetupError` unless ``url``'s host is a loopback address."""
    from sqlalchemy.engine import make_url

    host = make_url(url).host or ""
    if host not in LOOPBACK_HOSTS:
        raise SetupError(f"only a loopback PostgreSQL is used, got host {host!r}")


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead (password kept)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """``url`` as ``psql`` and asyncpg understand it (``postgresql://``, no ``+driver``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def psql(url: str, sql: str, timeout: float = PSQL_TIMEOUT_S) -> str:
    """Run one statement through ``psql`` (unaligned, tuples only); its stdout, stripped.

    :class:`SetupError` when ``psql`` is missing, fails or takes longer than ``timeout`` seconds.
    """
    psql_bin = shutil.which("psql")
    if psql_bin is None:
        raise SetupError("psql is not on PATH")
    try:
        done = subprocess.run(
            [psql_bin, libpq_url(url), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SetupError(f"psql timed out after {timeout:.0f} s: {sql}") from None
    if done.returncode != 0:
        raise SetupError(f"psql failed ({done.returncode}) on {sql!r}: {done.stderr.strip()}")
    return done.stdout.strip()


def server_version(admin_url: str) -> str:
    """The server's ``SHOW server_version``, e.g. ``15.20 (Debian 15.20-0+deb12u1)``."""
    return psql(admin_url, "SHOW server_version")


def create_database(admin_url: str, database: str) -> str:
    """``CREATE DATABASE`` on the (loopback) server of ``admin_url``; the URL of the new database."""
    check_loopback(admin_url)
    psql(admin_url, f'CREATE DATABASE "{database}"')
    return with_database(admin_url, database)


def drop_database(admin_url: str, database: str, attempts: int = 5, pause: float = 2.0) -> bool:
    """``DROP DATABASE IF EXISTS … WITH (FORCE)``, tried ``attempts`` times ``pause`` s apart (the server may be
    restarting); on the last failure a warning on stderr. Whether it was dropped."""
    for attempt in range(attempts):
        try:
            psql(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            return True
        except SetupError as exc:
            if attempt == attempts - 1:
                print(f"warning: could not drop database {database}: {exc}", file=sys.stderr)
                return False
            time.sleep(pause)
    return False
