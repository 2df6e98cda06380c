#!/usr/bin/env python3
"""gqa-conformance on malformed vector directories: each must exit 2 with a message on
stderr, never crash, hang or report a test result. A kind, field or value the tool
does not know is malformed too: a set made for another version must not pass
unchecked. And a directory whose every case is unsupported must not pass: exit 1.

usage: conformance_malformed.py GQA_CONFORMANCE VECTORS_DIR [TL_HOOKS_DIR]

Each case copies VECTORS_DIR (or, for the hook cases, TL_HOOKS_DIR, a
transformerlens_hooks set) to a temporary directory, breaks one thing and runs the
tool there on the reference backend. The messages are printed, one per case.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROPE_CASE = "rope_tt_interleaved"


def rope_case(manifest):
    return next(c for c in manifest["cases"] if c["name"] == ROPE_CASE)


def layer_case(manifest):
    return next(c for c in manifest["cases"] if c.get("kind") != "rope")


def edit_manifest(edit):
    def apply(directory):
        path = os.path.join(directory, "manifest.json")
        with open(path) as f:
            manifest = json.load(f)
        edit(manifest)
        with open(path, "w") as f:
            json.dump(manifest, f)
    return apply


def write_manifest_text(text):
    def apply(directory):
        with open(os.path.join(directory, "manifest.json"), "w") as f:
            f.write(text)
    return apply


def remove(name):
    return lambda directory: os.remove(os.path.join(directory, name))


def truncate(name, size_change):
    def apply(directory):
        path = os.path.join(directory, name)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) + size_change)
    return apply


def set_in(select, key, value):
    def edit(manifest):
        select(manifest)[key] = value
    return edit


def delete_in(select, key):
    def edit(manifest):
        del select(manifest)[key]
    return edit


def first_input(case):
    return next(iter(case["inputs"].values()))


CASES = [
    ("no manifest.json", remove("manifest.json")),
    ("manifest.json cut short", write_manifest_text('{"cases": [{"name": "x", ')),
    ("manifest.json empty", write_manifest_text("")),
    ("manifest is an array", write_manifest_text("[]")),
    ("cases is a string", edit_manifest(set_in(lambda m: m, "cases", "none"))),
    ("case without a name", edit_manifest(delete_in(rope_case, "name"))),
    ("num_heads missing", edit_manifest(lambda m: layer_case(m)["config"].pop("num_heads"))),
    ("head_dim a string", edit_manifest(set_in(rope_case, "head_dim", "sixteen"))),
    ("head_dim 2.5", edit_manifest(set_in(rope_case, "head_dim", 2.5))),
    ("head_dim 2^40", edit_manifest(set_in(rope_case, "head_dim", 2**40))),
    ("data file missing", remove(ROPE_CASE + ".x.f32")),
    ("data file 4 bytes short", truncate(ROPE_CASE + ".x.f32", -4)),
    ("data file 1 byte long", truncate(ROPE_CASE + ".x.f32", 1)),
    ("negative extent", edit_manifest(lambda m: first_input(rope_case(m)).update(shape=[2, -5, 3, 16]))),
    ("extents overflowing int64", edit_manifest(lambda m: first_input(rope_case(m)).update(shape=[2**31] * 4))),
    ("unknown dtype", edit_manifest(lambda m: first_input(rope_case(m)).update(dtype="float64"))),
    ("int32 where float32 is needed", edit_manifest(lambda m: first_input(rope_case(m)).update(dtype="int32"))),
    ("file is a directory", edit_manifest(lambda m: first_input(rope_case(m)).update(file="."))),
    ("wq missing", edit_manifest(lambda m: layer_case(m)["weights"].pop("wq"))),
    ("wq of the wrong shape", edit_manifest(lambda m: layer_case(m)["weights"]["wq"].update(shape=[32, 128]))),
    ("expected out of the wrong shape",
     edit_manifest(lambda m: layer_case(m)["expected"]["out"].update(shape=[2, 64, 8]))),
    ("unknown kind", edit_manifest(set_in(rope_case, "kind", "transformerlens_attn_probs"))),
    ("unknown expected array",
     edit_manifest(lambda m: layer_case(m)["expected"].update(hook_q=layer_case(m)["expected"]["out"]))),
    ("unknown rope_style", edit_manifest(lambda m: layer_case(m)["config"].update(rope_style="yarn_pairs"))),
]


def hooks_case(manifest):
    return manifest["cases"][0]


HOOKS_CASES = [
    ("unknown hook expected",
     edit_manifest(lambda m: hooks_case(m)["expected"].update(mlp_out=hooks_case(m)["expected"]["z"]))),
    ("patch of an unknown hook", edit_manifest(lambda m: hooks_case(m)["patches"][0].update(replace="embed"))),
    ("unknown patch field", edit_manifest(lambda m: hooks_case(m)["patches"][0].update(scale=2))),
    ("patch of the wrong shape",
     edit_manifest(lambda m: hooks_case(m)["patches"][1].update(**{"with": hooks_case(m)["expected"]["v"]}))),
    ("x and split inputs",
     edit_manifest(lambda m: hooks_case(m)["inputs"].update(query_input=hooks_case(m)["inputs"]["x"]))),
]


def only_unsupported(directory):
    """Keeps one torchtune case, with a scale the tool cannot express."""
    def edit(manifest):
        case = layer_case(manifest)
        case["config"]["scale"] = "0.5"
        manifest["cases"] = [case]
    edit_manifest(edit)(directory)


def main():
    tool, vectors = sys.argv[1], sys.argv[2]
    hooks = sys.argv[3] if len(sys.argv) > 3 else None
    failures = 0
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        missing_dir = os.path.join(scratch, "does-not-exist")
        runs = [("directory does not exist", missing_dir, None)]
        for source, cases in [(vectors, CASES)] + ([(hooks, HOOKS_CASES)] if hooks else []):
            for name, breakage in cases:
                directory = os.path.join(scratch, name.replace(" ", "_").replace("^", ""))
                shutil.copytree(source, directory)
                runs.append((name, directory, breakage))
        for name, directory, breakage in runs:
            if breakage:
                breakage(directory)
            result = subprocess.run([tool, "--backend", "reference", directory], capture_output=True, text=True,
                                    timeout=120)
            message = result.stderr.strip().splitlines()
            first_line = message[0] if message else ""
            ok = result.returncode == 2 and first_line and not result.stdout.strip()
            failures += not ok
            results.append((name, result.returncode, first_line))
            print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {result.returncode}: {first_line}")
            if not ok and result.stdout.strip():
                print("     stdout: " + result.stdout.strip().splitlines()[0])
        print(f"{len(results) - failures} of {len(results)} malformed directories rejected with exit 2 and a message")

        directory = os.path.join(scratch, "only_unsupported")
        shutil.copytree(vectors, directory)
        only_unsupported(directory)
        result = subprocess.run([tool, "--backend", "reference", directory], capture_output=True, text=True,
                                timeout=120)
        ok = result.returncode == 1 and "nothing was compared" in result.stderr and "UNSUPPORTED" in result.stdout
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} every case unsupported: exit {result.returncode}: "
              f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
