"""Bulk-load synthetic users (10,000,000 by default) with LOAD DATA, resumably.

    python -m bench.load_users [--users 10000000] [--chunk 500000] [--sessions 200000]

Users are ``bench_00000000`` ... with nickname ``Bench N``. Hashing ten million
passwords with argon2id would take days, so synthetic users share a few real
argon2id hashes of one known password (``bench.scenarios.BENCH_PASSWORD``), each with
its own salt; logins still do the full argon2id verify. Usernames are loaded in
ascending order so both the primary key and the unique username index grow at their
right edge. Each chunk is one statement: a re-run continues after the last complete
chunk. A sample of users gets sessions whose tokens are written to
``var/bench/tokens.txt`` for the read scenarios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import threading
import time
from queue import Queue

import pymysql

from actors.db.passwords import make_hasher
from actors.runtime.stores import MysqlDsn
from bench.scenarios import BENCH_PASSWORD, TOKENS_FILE, bench_token, username_of
from tools import dbsetup

_HASHES = 4
_ID_BATCH = 5000  # usernames looked up per query


def connect(dsn: MysqlDsn) -> pymysql.Connection:
    return pymysql.connect(
        host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password,
        database=dsn.database, local_infile=True, autocommit=True, connect_timeout=5,
    )  # fmt: skip


def loaded_so_far(cur: pymysql.cursors.Cursor) -> int:
    cur.execute("SELECT MAX(username) FROM users WHERE username LIKE 'bench\\_%%'")
    (last,) = cur.fetchone() or (None,)
    return int(last.split("_")[1]) + 1 if last else 0


def chunk_file(first: int, count: int, hashes: list[str], directory: str) -> str:
    now = time.time()
    rows = [
        f"{username_of(i)}\tBench {i}\t{hashes[i % len(hashes)]}\t{now}\t{now}\n"
        for i in range(first, first + count)
    ]
    fd, path = tempfile.mkstemp(prefix="users-", suffix=".tsv", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.writelines(rows)
    return path


def progress(done: int, total: int, started: float, first: int) -> None:
    rate = (done - first) / max(time.monotonic() - started, 1e-6)
    eta = (total - done) / rate if rate else 0
    bar = "#" * int(30 * done / total)
    sys.stderr.write(f"\r[{bar:<30}] {done:>11,}/{total:,} users  {rate:>9,.0f}/s  eta {eta:5.0f}s")
    sys.stderr.flush()


def load_users(dsn: MysqlDsn, total: int, chunk: int) -> dict[str, float]:
    hasher = make_hasher()
    hashes = [hasher.hash(BENCH_PASSWORD) for _ in range(_HASHES)]
    conn = connect(dsn)
    cur = conn.cursor()
    first = loaded_so_far(cur)
    started = time.monotonic()
    if first >= total:
        return {"loaded": 0, "seconds": 0.0, "already": first}
    cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    work: Queue[tuple[int, int, str] | None] = Queue(maxsize=2)
    tmp = tempfile.mkdtemp(prefix="userhub-load-")

    def produce() -> None:  # writes the next chunk while MySQL loads this one
        for start in range(first, total, chunk):
            count = min(chunk, total - start)
            work.put((start, count, chunk_file(start, count, hashes, tmp)))
        work.put(None)

    threading.Thread(target=produce, daemon=True).start()
    progress(first, total, started, first)
    while (item := work.get()) is not None:
        start, count, path = item
        cur.execute(
            "LOAD DATA LOCAL INFILE %s INTO TABLE users"
            " (username, nickname, password_hash, created_at, updated_at)",
            (path,),
        )
        os.unlink(path)
        progress(start + count, total, started, first)
    sys.stderr.write("\n")
    os.rmdir(tmp)
    return {"loaded": total - first, "seconds": time.monotonic() - started, "already": first}


def load_sessions(dsn: MysqlDsn, total_users: int, count: int, seed: int = 1) -> int:
    """Give ``count`` users spread over all of them a session; tokens go to a file.

    Only SELECT and INSERT: the benchmark connects as the service account, which
    may not create even a temporary table.
    """
    rng = random.Random(seed)
    picks = sorted(rng.sample(range(total_users), min(count, total_users)))
    now = time.time()
    expires = now + 365 * 86400
    names = [username_of(i) for i in picks]
    tokens = [bench_token(seed, n) for n in range(len(picks))]
    conn = connect(dsn)
    cur = conn.cursor()
    ids: dict[str, int] = {}
    for start in range(0, len(names), _ID_BATCH):
        batch = names[start : start + _ID_BATCH]
        marks = ", ".join(["%s"] * len(batch))
        cur.execute(f"SELECT username, id FROM users WHERE username IN ({marks})", batch)
        ids.update((str(name), int(user_id)) for name, user_id in cur.fetchall())
    with tempfile.NamedTemporaryFile("w", suffix=".tsv") as f:
        for name, token in zip(names, tokens, strict=True):
            if name in ids:
                digest = hashlib.sha256(_raw(token)).hexdigest()
                f.write(f"{digest}\t{ids[name]}\t{now!r}\t{expires!r}\t{expires!r}\n")
        f.flush()
        cur.execute(
            "LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE sessions"
            " (@token_hash, user_id, created_at, last_seen, expires_at)"
            " SET token_hash = UNHEX(@token_hash)",
            (f.name,),
        )
    TOKENS_FILE.parent.mkdir(parents=True, exist_ok=True)
    TOKENS_FILE.write_text("\n".join(tokens) + "\n")
    return len(tokens)


def _raw(token: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(token + "=")


def size_report(dsn: MysqlDsn) -> dict[str, dict[str, int]]:
    conn = connect(dsn)
    cur = conn.cursor()
    cur.execute("ANALYZE TABLE users, sessions")
    cur.fetchall()
    cur.execute(
        "SELECT table_name, table_rows, data_length, index_length FROM information_schema.tables"
        " WHERE table_schema = %s AND table_name IN ('users', 'sessions')",
        (dsn.database,),
    )
    return {
        str(name): {"rows": int(rows), "data_bytes": int(data), "index_bytes": int(index)}
        for name, rows, data, index in cur.fetchall()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_users")
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=500_000)
    parser.add_argument("--sessions", type=int, default=200_000)
    args = parser.parse_args(argv)
    dsn = MysqlDsn.from_env()
    dbsetup.ensure_schema(dsn)
    loaded = load_users(dsn, args.users, args.chunk)
    print(
        f"loaded {loaded['loaded']:,} users in {loaded['seconds']:.1f}s"
        f" ({loaded['already']:,} were already there)"
    )
    started = time.monotonic()
    sessions = load_sessions(dsn, args.users, args.sessions)
    print(f"{sessions:,} sessions in {time.monotonic() - started:.1f}s -> {TOKENS_FILE}")
    for table, size in size_report(dsn).items():
        total = size["data_bytes"] + size["index_bytes"]
        print(
            f"{table:<9} ~{size['rows']:>11,} rows  data {size['data_bytes'] / 2**20:8.1f} MiB"
            f"  index {size['index_bytes'] / 2**20:8.1f} MiB  total {total / 2**30:5.2f} GiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
