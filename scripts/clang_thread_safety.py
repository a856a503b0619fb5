#!/usr/bin/env python3
"""Checks the project's ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED
annotations with clang's thread-safety analysis.

The analysis runs in clang's semantic pass, so `-fsyntax-only` over every
translation unit of the (GCC) build's compile_commands.json checks all of
them — including the LibTorch-linked edge server, which holds most of the
annotations — at the cost of parsing, not of a second full build.

Usage: scripts/clang_thread_safety.py [--skip-built-in CLANG_BUILD_DIR]
                                      [BUILD_DIR [FILE...]]
  BUILD_DIR defaults to build; FILEs (paths from the repository root)
  restrict the check to those translation units. With --skip-built-in,
  translation units whose object file exists in CLANG_BUILD_DIR (a clang
  build of the same tree, which CMake compiles with -Wthread-safety
  -Werror) were checked by that build and are skipped here.
Exit status 1 when any file has a warning (warnings are errors here).
"""
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

CLANG = os.environ.get("CLANGXX", "clang++")
# GCC-only or output-related arguments that do not apply to a syntax check.
DROP_WITH_VALUE = {"-o", "-include", "-MF", "-MT", "-MQ"}
DROP = {"-c", "-MD", "-MMD", "-Winvalid-pch", "-Wno-error=invalid-pch"}


def clang_command(entry):
    args = shlex.split(entry["command"])[1:]
    out = [CLANG]
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in DROP_WITH_VALUE:
            skip = True
            continue
        if arg in DROP or arg == entry["file"]:
            continue
        out.append(arg)
    out += ["-fsyntax-only", "-Wthread-safety",
            "-Werror", "-Wno-unknown-warning-option", entry["file"]]
    return out


def object_path(entry):
    """The object file an entry compiles to, relative to its build dir."""
    args = shlex.split(entry["command"])
    for i, arg in enumerate(args[:-1]):
        if arg == "-o":
            return args[i + 1]
    return None


def defines(entry):
    """The -D macros of an entry's command, as a set."""
    args = shlex.split(entry["command"])
    out = set()
    for i, arg in enumerate(args):
        if arg == "-D" and i + 1 < len(args):
            out.add(args[i + 1])
        elif arg.startswith("-D"):
            out.add(arg[2:])
    return frozenset(out)


def macros_matter(path, root, differing):
    """Whether a macro of `differing` ("NAME=VALUE") is named in the file
    or in a project header it includes (one level deep)."""
    names = {d.split("=", 1)[0] for d in differing}
    if not names:
        return False
    files = [path]
    with open(path, errors="replace") as f:
        text = f.read()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('#include "'):
            header = os.path.join(root, line.split('"')[1])
            if os.path.exists(header):
                files.append(header)
    for name in files:
        with open(name, errors="replace") as f:
            body = f.read()
        if any(n in body for n in names):
            return True
    return False


def main():
    argv = sys.argv[1:]
    clang_build = None
    if argv[:1] == ["--skip-built-in"]:
        clang_build, argv = argv[1], argv[2:]
    build = argv[0] if argv else "build"
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The project's own C++ sources; generated Protobuf code and CUDA files
    # (compiled by nvcc) are not ours to check.
    own = [e for e in entries
           if e["file"].startswith(root + "/")
           and not e["file"].startswith(os.path.abspath(build) + "/")
           and e["file"].endswith(".cc")]
    only = {os.path.join(root, f) for f in argv[1:]}
    if only:
        own = [e for e in own if e["file"] in only]
    skipped = 0
    if clang_build:
        # Same CMake tree, so the same target directories and object names;
        # a unit counts as checked only where it was compiled with the same
        # macros (a CUDA-less clang build leaves #if EDGESPLIT_WITH_CUDA
        # regions unchecked).
        with open(os.path.join(clang_build, "compile_commands.json")) as f:
            clang_defines = {object_path(e): defines(e) for e in json.load(f)}
        checked = [e for e in own if object_path(e)
                   and object_path(e) in clang_defines
                   and not macros_matter(
                       e["file"], root,
                       clang_defines[object_path(e)] ^ defines(e))
                   and os.path.exists(os.path.join(clang_build,
                                                   object_path(e)))]
        skipped = len(checked)
        own = [e for e in own if e not in checked]
    start = time.time()

    def run(entry):
        p = subprocess.run(clang_command(entry), cwd=entry["directory"],
                           capture_output=True, text=True)
        return entry["file"], p.returncode, p.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for path, code, err in pool.map(run, own):
            if code != 0:
                failed += 1
                sys.stderr.write(f"--- {os.path.relpath(path, root)}\n{err}")
    print(f"clang thread-safety analysis: {len(own)} files, {failed} failed, "
          f"{skipped} checked by the clang build, {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
