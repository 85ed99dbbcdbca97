"""Measures a link's rate with one TCP transfer (benchmarks/netlab runs it across the lab).

    python linkcheck.py server PORT             # prints the received rate in bits/s
    python linkcheck.py client HOST PORT BYTES  # sends BYTES zero bytes

The receiver times from the first byte to the last, so connection setup is not counted.
"""

import socket
import sys
import time

CHUNK = 1 << 16


def serve(port: int) -> None:
    with socket.create_server(("0.0.0.0", port)) as server:
        server.settimeout(60)
        conn, _ = server.accept()
        with conn:
            received = len(conn.recv(CHUNK))
            start = time.perf_counter()
            while chunk := conn.recv(CHUNK):
                received += len(chunk)
            seconds = time.perf_counter() - start
    print(f"{received * 8 / seconds:.0f}")


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
    payload = bytes(CHUNK)
    with conn:
        conn.settimeout(120)
        while nbytes > 0:
            nbytes -= conn.send(payload[: min(CHUNK, nbytes)])


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve(int(sys.argv[2]))
    elif sys.argv[1:2] == ["client"]:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
