#!/usr/bin/python3
"""Fuzz harness: an ablation sweep file (scripts/ablation/sweep.py, as scripts/ablate reads
it), with PyYAML and with the built-in YAML subset reader. Bad input must be one
SweepError (ablate prints it as one line); anything else - another exception, a
recursion error, a hang - is a failure. Engine: pyfuzz.py (coverage-guided, pure Python).

    tests/fuzz/fuzz_sweep.py replay tests/fuzz/corpus/sweep tests/fuzz/regressions/sweep
    tests/fuzz/fuzz_sweep.py run WORK 600 tests/fuzz/corpus/sweep
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "ablation"))
import pyfuzz  # noqa: E402
import sweep  # noqa: E402

try:
    import yaml
except ImportError:  # the subset reader alone is still fuzzed
    yaml = None

DICTIONARY = [
    "name: ", "base: ", "set:\n", "axes:\n", "description: ", "configs/default.yaml",
    "residual.mode", "run.seed", "train.steps", "run.name", "[", "]", "{", "}", ", ", ": ",
    "\n  ", "\n- ", "- ", "#", "'", '"', "~", "null", "true", "no", "1e999", ".nan", "-0",
    "&a ", "*a", "!!binary ", "!!str ", "!!python/tuple ", "? ", "---\n", "...\n", "\t",
    "\x00", "\r", "\xef\xbb\xbf", "\\u0000", "<<: ",
]


def target(data):
    for backend in ([yaml] if yaml else []) + [None]:
        sweep._yaml = backend
        sweep.Sweep("fuzz.yaml", "runs", (), raw=data)


def make_fuzzer():
    watch = [sweep.__file__]
    if yaml is not None:
        ydir = os.path.dirname(yaml.__file__)
        watch += [os.path.join(ydir, f) for f in os.listdir(ydir) if f.endswith(".py")]
    return pyfuzz.Fuzzer(target, (sweep.SweepError,), watch, DICTIONARY)


if __name__ == "__main__":
    sys.exit(pyfuzz.main(make_fuzzer, sys.argv))
