"""Readiness probes for the test services started by ``scripts/services.sh``.

Standard library only, so it runs under any Python 3.10+; when ``confluent_kafka`` is
importable the Kafka probe also asks the broker for its cluster metadata through the real
client.

Usage::

    probe.py kafka HOST:PORT [--timeout S] [--pid PID]
    probe.py pubsub HOST:PORT [--timeout S] [--pid PID]
    probe.py free-port

Exit codes: 0 ready, 1 not ready before the timeout, 2 the watched process exited.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request

READY, TIMED_OUT, DIED = 0, 1, 2


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` into its parts.

    >>> split_host_port("127.0.0.1:19092")
    ('127.0.0.1', 19092)
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT; got {address!r}")
    return host, int(port)


def kafka_api_versions_request(correlation_id: int, client_id: str = "streamsift-probe") -> bytes:
    """Encode a Kafka ApiVersions v0 request (api key 18), size prefix included.

    >>> kafka_api_versions_request(7, "x").hex()
    '0000000b0012000000000007000178'
    """
    client = client_id.encode()
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client)) + client
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return chunks


def kafka_answers_api_versions(host: str, port: int, timeout: float) -> bool:
    """True when a broker at host:port answers ApiVersions with error code 0."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(kafka_api_versions_request(correlation_id=1))
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return correlation_id == 1 and error_code == 0


def kafka_ready(address: str, timeout: float) -> bool:
    """One readiness attempt: ApiVersions, then (if installed) confluent-kafka metadata."""
    host, port = split_host_port(address)
    if not kafka_answers_api_versions(host, port, timeout):
        return False
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return True
    admin = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": int(timeout * 1000)})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - any client error means "not ready yet"
        return False
    return len(metadata.brokers) > 0


def pubsub_ready(address: str, timeout: float) -> bool:
    """One readiness attempt: the emulator answers ``GET /`` with HTTP 200."""
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def free_port() -> int:
    """Ask the kernel for a currently free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, address: str, timeout: float, pid: int | None) -> int:
    deadline = time.monotonic() + timeout
    while True:
        if pid is not None and not process_alive(pid):
            return DIED
        if check(address, 2.0):
            return READY
        if time.monotonic() >= deadline:
            return TIMED_OUT
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=["kafka", "pubsub", "free-port"])
    parser.add_argument("address", nargs="?")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds to keep trying")
    parser.add_argument("--pid", type=int, default=None, help="fail fast if this pid exits")
    args = parser.parse_args(argv)
    if args.service == "free-port":
        print(free_port())
        return READY
    if not args.address:
        parser.error("address is required for kafka and pubsub")
    if args.timeout < 0:
        parser.error(f"timeout must be >= 0; got {args.timeout}")
    check = kafka_ready if args.service == "kafka" else pubsub_ready
    return wait_until(check, args.address, args.timeout, args.pid)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
