#!/usr/bin/env python3
"""Fails when a kernel of the CUDA pipeline libraries holds a run-time check.

Halide compiles each check it cannot prove at compile time (a bound_extent, an
explicit bound) into the kernel as a `trap`. On a GPU a trap that fires aborts
the kernel and leaves the CUDA context unusable: every later call of the process
fails with CUDA_ERROR_LAUNCH_FAILED. OpenCL code generation drops such checks
(with a warning), so pocl runs cannot show them; this test finds them in the PTX.

One check is known and allowed, and must stay where it is (a listed check that
disappears fails too, so the list cannot go stale): see KNOWN_CHECKS.

usage: ptx_no_assertions.py LIBRARY...
"""
import os
import re
import sys

from ptx_assembles import ptx_modules

ENTRY = re.compile(rb"\.entry\s+(\w+)")

# (library name prefix, kernel): why its check cannot fail.
KNOWN_CHECKS = {
    ("libgqa_attend_prefill", "_kernel_state_s1_b___block_id_z"):
        "the bound of a thread's block P.V (bound_extent 1) over the block index; it "
        "fails only for a block before the thread's window, which the same thread's "
        "skip of that block (the same expression of its query) always excludes. Run "
        "on an H200 with every windowed prefill of the suite (2026-12-04).",
}


def known(library, kernel):
    name = os.path.basename(library)
    return any(name.startswith(prefix) and kernel == known_kernel for prefix, known_kernel in KNOWN_CHECKS)


def kernels_with_traps(ptx):
    """Names of the kernels (.entry) of a PTX module whose code holds a trap."""
    found = []
    entries = list(ENTRY.finditer(ptx))
    for n, entry in enumerate(entries):
        end = entries[n + 1].start() if n + 1 < len(entries) else len(ptx)
        if re.search(rb"\btrap;", ptx[entry.end():end]):
            found.append(entry.group(1).decode())
    return found


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    seen_known = set()
    for library in sys.argv[1:]:
        for n, ptx in enumerate(ptx_modules(library)):
            name = f"{os.path.basename(library)}[{n}]"
            kernels = kernels_with_traps(ptx)
            unexpected = [k for k in kernels if not known(library, k)]
            seen_known.update((os.path.basename(library), k) for k in kernels if known(library, k))
            if unexpected:
                print(f"FAIL {name}: run-time checks (trap) in {', '.join(unexpected)}")
                failed += 1
            else:
                allowed = f" (known check in {', '.join(kernels)})" if kernels else ""
                print(f"ok   {name}{allowed}")
    for prefix, kernel in KNOWN_CHECKS:
        if not any(lib.startswith(prefix) and k == kernel for lib, k in seen_known):
            print(f"FAIL the known check in {prefix}* {kernel} is gone: remove it from KNOWN_CHECKS")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
