"""The rows of the one-host table (issue 28), shared by one_host_bench.py (torch backends)
and one_host_mpi.py (the MPI floor): each a call and how many times a measurement runs it
back to back."""

KIB, MIB = 1 << 10, 1 << 20

ALL_REDUCE_BYTES = {"all_reduce 64 B": 64, "all_reduce 4 KiB": 4 * KIB, "all_reduce 256 KiB": 256 * KIB,
                    "all_reduce 4 MiB": 4 * MIB, "all_reduce 64 MiB": 64 * MIB}
ROWS = [
    ("all_reduce 64 B", 400),
    ("all_reduce 4 KiB", 400),
    ("all_reduce 256 KiB", 50),
    ("all_reduce 4 MiB", 10),
    ("all_reduce 64 MiB", 3),
    ("broadcast 4 KiB", 400),
    ("all_gather_into_tensor 4 KiB per rank", 400),
    ("reduce_scatter_tensor 4 KiB per rank", 400),
    ("barrier", 400),
    ("send/recv ping-pong 1 KiB (round trip)", 400),
]
SMALL_FLOATS = 4 * KIB // 4  # the 4 KiB rows, in float32 elements
PING_FLOATS = KIB // 4
