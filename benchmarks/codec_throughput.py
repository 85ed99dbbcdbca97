"""CPU codec throughput against a plain memory copy, measured side by side.

    python benchmarks/codec_throughput.py [--elements 16777216] [--threads 1 2]

For each codec: encode (float32 -> wire bytes) and decode-and-add (wire bytes added to
float32, what the owner of a shard does with every contribution) of a
Gaussian float32 buffer, reported as GB/s of float32 data (4 bytes per element, 1 GB =
1e9 bytes), next to torch's copy of the same float32 buffer (memcpy) timed in the same
loop. The ratio codec/memcpy is the number to quote: the machine is noisy, ratios much
less so. Medians of --repeats runs, alternating codec and copy.
"""

import argparse
import statistics
import time

import torch

from qccl._extension import load

CODECS = ["fp16", "bf16", "int8", "int4"]


def timed(fn, repeats):
    fn()  # warm-up: first-touch page faults, thread pool start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 24)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    C = load()
    n = args.elements
    values = torch.randn(n)
    target = torch.empty_like(values)
    gb = 4 * n / 1e9
    print(f"{n} float32 elements ({4 * n / 2**20:.0f} MiB), block {args.block}")
    print(f"{'threads':>7} {'codec':>5} {'encode GB/s':>12} {'decode GB/s':>12} {'memcpy GB/s':>12} "
          f"{'encode/memcpy':>14} {'decode/memcpy':>14}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for codec in CODECS:
            wire = C.codec_encode(codec, args.block, values)
            copy = timed(lambda: target.copy_(values), args.repeats)
            # Into preallocated buffers, as the copy: no page faults in the timing.
            encode = timed(lambda: C.codec_encode(codec, args.block, values, out=wire), args.repeats)
            decode = timed(lambda: C.codec_decode(codec, args.block, wire, n, add_to=target), args.repeats)
            copy = min(copy, timed(lambda: target.copy_(values), args.repeats))
            print(f"{threads:>7} {codec:>5} {gb / encode:12.2f} {gb / decode:12.2f} {gb / copy:12.2f} "
                  f"{copy / encode:14.2f} {copy / decode:14.2f}")


if __name__ == "__main__":
    main()
