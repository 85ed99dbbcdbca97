"""Fails when a source file under csrc/qccl includes a layer above its own.

    python tools/check_layers.py [csrc/qccl]

The layers (docs/design.md, "Layers"), each allowed to include itself and those listed:

    common     -                                   pure C++ and ATen
    codec      common                              pure C++ and ATen
    bucket     common                              pure C++ and ATen
    transport  common                              + c10d (Gloo and NCCL are c10d backends)
    work       common                              + c10d (the Work types torch receives)
    algo       common codec bucket transport work  + c10d (ReduceOp, Works of the transport)
    p2p        common codec transport work         + c10d
    backend    every layer above, and the public headers
    public     (qccl.h, options.h, codec_names.h: what a C++ user includes) each other only

A layer marked pure must not include torch/csrc/distributed (c10d): it is tested and
reasoned about without a process group. Prints each offending include; exit status 1 if
there is one.
"""

import pathlib
import re
import sys

PURE = {"common", "codec", "bucket"}
ALLOWED = {
    "common": set(),
    "codec": {"common"},
    "bucket": {"common"},
    "transport": {"common"},
    "work": {"common"},
    "algo": {"common", "codec", "bucket", "transport", "work"},
    "p2p": {"common", "codec", "transport", "work"},
    "backend": {"common", "codec", "bucket", "transport", "work", "algo", "p2p", "public"},
    "public": set(),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)
SOURCES = {".h", ".hpp", ".cpp", ".cu", ".cuh"}


def layer_of(path, root):
    """The layer of a file (its first folder under root), or of an include path."""
    parts = path.relative_to(root).parts if isinstance(path, pathlib.Path) else tuple(path.split("/"))
    return parts[0] if len(parts) > 1 else "public"


def violations(root):
    root = pathlib.Path(root)
    found = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in SOURCES):
        layer = layer_of(path, root)
        if layer not in ALLOWED:
            found.append(f"{path}: folder {layer!r} is not a known layer (add it to tools/check_layers.py)")
            continue
        for included in INCLUDE.findall(path.read_text(errors="replace")):
            if included.startswith("torch/csrc/distributed/") and layer in PURE:
                found.append(f"{path}: includes {included}, but layer {layer!r} stays free of c10d")
            if not included.startswith("qccl/"):
                continue
            target = layer_of(included[len("qccl/"):], root)
            if target != layer and target not in ALLOWED[layer]:
                found.append(f"{path}: includes {included}, but layer {layer!r} may not depend on {target!r}")
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent / "csrc" / "qccl"
    found = violations(root)
    for line in found:
        print(f"qccl layer check: {line}", file=sys.stderr)
    if not found:
        print(f"qccl layer check: {root} keeps its layers")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
