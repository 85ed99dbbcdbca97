"""Measures a link's round-trip time and rate over one TCP connection (benchmarks/netlab
runs it across the lab).

    python linkcheck.py server PORT             # prints "RTT_MS RATE_BITS_PER_S"
    python linkcheck.py client HOST PORT BYTES  # echoes the pings, then sends BYTES

The server sends one-byte pings that the client echoes and takes the median round trip.
Then the client sends BYTES, and the server takes the rate over the second half of them:
on a link with latency TCP spends the first round trips in slow start, well below the
rate, and a check that counted them would measure the RTT, not the rate.
"""

import array
import fcntl
import socket
import statistics
import sys
import termios
import time

PINGS = 10
CHUNK = 1 << 20


def ping(conn: socket.socket) -> float:
    """The median round trip of PINGS one-byte messages, in seconds."""
    times = []
    for _ in range(PINGS):
        start = time.perf_counter()
        conn.sendall(b"p")
        if conn.recv(1) != b"p":
            raise ConnectionError("linkcheck: the client did not echo the ping")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def receive_rate(conn: socket.socket) -> float:
    """Bits per second over the second half of the bytes the client sends.

    Counts what the kernel has received (what was read plus what waits in the socket,
    FIONREAD), not what this process has read: a reader that falls behind on a busy
    machine and catches up from a 64 MiB buffer would otherwise read faster than the link.
    """
    buffer = bytearray(CHUNK)
    waiting = array.array("i", [0])
    arrivals = []  # (seconds, bytes the kernel had received by then)
    received = 0
    while n := conn.recv_into(buffer):
        received += n
        fcntl.ioctl(conn, termios.FIONREAD, waiting)
        arrivals.append((time.perf_counter(), received + waiting[0]))
    middle = next(a for a in arrivals if a[1] >= received / 2)
    end = next(a for a in arrivals if a[1] == received)
    if end[0] <= middle[0]:
        raise ConnectionError(f"linkcheck: {received} bytes are too few to time")
    return (end[1] - middle[1]) * 8 / (end[0] - middle[0])


def serve(port: int) -> None:
    with socket.create_server(("0.0.0.0", port)) as server:
        server.settimeout(60)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(120)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtt = ping(conn)
            rate = receive_rate(conn)
    print(f"{rtt * 1e3:.3f} {rate:.0f}")


def send(host: str, port: int, nbytes: int) -> None:
    deadline = time.monotonic() + 20
    while True:  # the server in the other namespace may not listen yet
        try:
            conn = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    payload = memoryview(bytes(min(CHUNK, nbytes)))
    with conn:
        conn.settimeout(120)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(PINGS):
            conn.sendall(conn.recv(1))
        while nbytes > 0:
            nbytes -= conn.send(payload[: min(CHUNK, nbytes)])


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve(int(sys.argv[2]))
    elif sys.argv[1:2] == ["client"]:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
