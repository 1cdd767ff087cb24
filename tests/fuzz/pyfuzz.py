"""A small coverage-guided fuzzer for Python code (the sweep-file harness, fuzz_sweep.py).

libFuzzer and AFL++ instrument native code; the Python bridges to them (atheris,
python-afl) are not in Debian 12, so this does the same loop in pure Python, offline:
  - coverage: the (previous line, line) pairs executed in the watched source files,
    recorded with sys.settrace;
  - corpus: the seeds, plus every mutated input that reached a new pair;
  - mutations: 1-4 stacked byte edits (flip, replace, insert, delete, duplicate a chunk,
    insert a token from the harness's dictionary, splice with another corpus input);
  - failures: any exception the harness does not expect, and any input that runs longer
    than the time limit (a hang). The input is saved as crash-<sha1> in the work folder.

    HARNESS replay DIR...            run every input once; fails on any failure
    HARNESS run WORK SECS DIR...     fuzz for SECS seconds from the inputs in DIRs
    HARNESS explore WORK SECS DIR... the same, but go on after a failure
"""
import hashlib
import os
import random
import signal
import sys
import time
import traceback


class Hang(Exception):
    """The time limit for one input ran out."""


class Fuzzer:
    def __init__(self, target, expected, watch_files, dictionary=(), max_len=4096, timeout_s=5.0):
        self.target = target                  # callable(bytes); raises `expected` on bad input
        self.expected = expected              # tuple of exception types that are a clean refusal
        self.watch = {os.path.realpath(f) for f in watch_files}
        self.dictionary = [t.encode() if isinstance(t, str) else t for t in dictionary]
        self.max_len = max_len
        self.timeout_s = timeout_s
        self.seen = set()                     # coverage pairs reached so far
        self.corpus = []
        self.execs = 0
        self._cur = None
        self._watched = {}                    # file name -> watched?
        self.signatures = set()               # failures seen (explore mode)

    # ---- coverage ---------------------------------------------------------------------
    def _tracer(self, frame, event, arg):
        fn = frame.f_code.co_filename
        watched = self._watched.get(fn)
        if watched is None:
            watched = self._watched[fn] = os.path.realpath(fn) in self.watch
        if not watched:
            return None
        prev = [0]
        code_id = id(frame.f_code)

        def local(frame, event, arg):
            if event == "line":
                self._cur.add((code_id, prev[0], frame.f_lineno))
                prev[0] = frame.f_lineno
            return local
        return local

    def execute(self, data):
        """Runs one input; returns (coverage pairs, failure traceback or None)."""
        self._cur = set()
        self.execs += 1
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        sys.settrace(self._tracer)
        failure = None
        try:
            self.target(data)
        except self.expected:
            pass
        except Hang:
            failure = "hang: more than %.0f s on one input" % self.timeout_s
        except BaseException:  # anything else is what the fuzzer looks for
            failure = traceback.format_exc()
        finally:
            sys.settrace(None)
            signal.setitimer(signal.ITIMER_REAL, 0)
        return self._cur, failure

    # ---- mutations --------------------------------------------------------------------
    def mutate(self, data, rng):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            pos = rng.randint(0, len(b))
            if op == 0 and b:
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1 and b:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif op == 2:
                b[pos:pos] = bytes([rng.choice(b" \n:-[]{},'\"#&*!0123456789abc" + bytes([rng.randrange(256)]))])
            elif op == 3 and b:
                n = rng.randint(1, min(16, len(b)))
                i = rng.randrange(len(b))
                del b[i:i + n]
            elif op == 4 and b:
                i = rng.randrange(len(b))
                b[pos:pos] = b[i:i + rng.randint(1, 32)]
            elif op == 5 and self.dictionary:
                b[pos:pos] = rng.choice(self.dictionary)
            elif op == 6 and self.corpus:
                other = rng.choice(self.corpus)
                j = rng.randint(0, len(other))
                b = b[:pos] + bytearray(other[j:])
        return bytes(b[: self.max_len])

    # ---- driving ----------------------------------------------------------------------
    def _load(self, dirs):
        inputs = []
        for d in dirs:
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as f:
                        inputs.append((os.path.join(d, name), f.read()))
        return inputs

    def replay(self, dirs):
        inputs = self._load(dirs)
        bad = 0
        for path, data in inputs:
            _, failure = self.execute(data)
            if failure:
                bad += 1
                print("FAILED on %s:\n%s" % (path, failure))
        print("replayed %d inputs, %d failed" % (len(inputs), bad))
        return 1 if bad else 0

    def run(self, work, seconds, dirs, seed=None, keep_going=False):
        os.makedirs(os.path.join(work, "corpus"), exist_ok=True)
        rng = random.Random(seed)
        start = time.time()
        crashes = 0
        for _, data in self._load([os.path.join(work, "corpus")] + list(dirs)):
            cov, failure = self.execute(data)
            if failure:
                crashes += self._crash(work, data, failure)
                if not keep_going:
                    return 1
            self.seen |= cov
            self.corpus.append(data)
        if not self.corpus:
            self.corpus.append(b"")
        print("INITED corpus %d, coverage %d pairs" % (len(self.corpus), len(self.seen)), flush=True)
        last_report = start
        while time.time() - start < seconds:
            data = self.mutate(rng.choice(self.corpus), rng)
            cov, failure = self.execute(data)
            if failure:
                crashes += self._crash(work, data, failure)
                if not keep_going:
                    break
                continue
            new = cov - self.seen
            if new:
                self.seen |= new
                self.corpus.append(data)
                name = hashlib.sha1(data).hexdigest()
                with open(os.path.join(work, "corpus", name), "wb") as f:
                    f.write(data)
            if time.time() - last_report > 10:
                last_report = time.time()
                print("#%d coverage %d pairs, corpus %d, %.0f exec/s" % (
                    self.execs, len(self.seen), len(self.corpus), self.execs / (last_report - start)), flush=True)
        dt = time.time() - start
        print("DONE %d executions in %.0f s (%.0f exec/s), coverage %d pairs, corpus %d, crashes %d" % (
            self.execs, dt, self.execs / max(dt, 1e-9), len(self.seen), len(self.corpus), crashes), flush=True)
        return 1 if crashes else 0

    def _crash(self, work, data, failure):
        # One report per distinct failure: its innermost source line and exception type.
        lines = failure.strip().splitlines()
        where = [l for l in lines if l.strip().startswith("File ")]
        signature = (where[-1] if where else "", lines[-1].split(":")[0])
        if signature in self.signatures:
            return 0
        self.signatures.add(signature)
        path = os.path.join(work, "crash-" + hashlib.sha1(data).hexdigest())
        with open(path, "wb") as f:
            f.write(data)
        print("CRASH (input saved as %s):\n%s" % (path, failure), flush=True)
        return 1


def _on_alarm(signum, frame):
    raise Hang()


def main(make_fuzzer, argv):
    signal.signal(signal.SIGALRM, _on_alarm)
    fz = make_fuzzer()
    if len(argv) >= 2 and argv[1] == "replay":
        return fz.replay(argv[2:])
    if len(argv) >= 4 and argv[1] in ("run", "explore"):
        return fz.run(argv[2], float(argv[3]), argv[4:], keep_going=argv[1] == "explore")
    print("usage: %s replay DIR... | run WORK SECONDS DIR... | explore WORK SECONDS DIR..." % argv[0],
          file=sys.stderr)
    return 2
