"""Sweep files (configs/ablations/*.yaml) and their expansion into runs.

A sweep file:

    name: default_modes                 # optional; default: the file's stem
    base: configs/default.yaml          # one config path, or a list (later ones override)
    set:                                # optional fixed overrides for every run
      train.steps: 600
    axes:                               # the cartesian product of these values
      residual.mode: [baseline, hc, mhc]
      run.seed: [1, 2]

Instead of (or besides) crossing single keys, a sweep can list named `variants`, each a
mapping of several keys that go together (a connection and its options); they act as one
more axis, named "variant", crossed with the others (run names start with variant-NAME):

    variants:
      baseline: {residual.mode: baseline}
      mhc-v4:   {residual.mode: mhc, residual.mhc.numerics: deepseek_v4}
    axes:
      run.seed: [1, 2]

Keys are mhc config keys (`mhc train --help-config`); values are YAML scalars. Paths in
`base` are relative to the working directory, else to the repository root.

Reading YAML uses PyYAML (Debian: python3-yaml) when it is installed; otherwise a small
reader of the subset above (block mappings, flow lists [a, b] and maps {k: v}, scalars,
comments) is used, so /usr/bin/python3 alone suffices.
"""
import io
import itertools
import os
import re

try:  # Debian's python3-yaml
    import yaml as _yaml
except ImportError:  # pragma: no cover - exercised with MHC_ABLATE_NO_PYYAML=1
    _yaml = None

if os.environ.get("MHC_ABLATE_NO_PYYAML"):
    _yaml = None

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEP_KEYS = ("name", "base", "set", "axes", "variants", "description")
VARIANT_AXIS = "variant"  # the pseudo-axis of a sweep's named variants


class SweepError(Exception):
    """A problem with a sweep file, reported as one line."""


# ---- a reader for the YAML subset sweep files use --------------------------------------

def _scalar(text):
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "~", ""):
        return None
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", t):
        return float(t)
    return t


def _split_flow(body, where):
    """Splits 'a, [b, c], {d: e}' at top-level commas."""
    items, depth, cur, quote = [], 0, "", None
    for ch in body:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise SweepError("%s: unbalanced brackets" % where)
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    if quote or depth:
        raise SweepError("%s: unbalanced quotes or brackets" % where)
    if cur.strip():
        items.append(cur)
    return items


def _value(text, where):
    t = text.strip()
    if t.startswith("["):
        if not t.endswith("]"):
            raise SweepError("%s: a flow list must end with ']'" % where)
        return [_value(x, where) for x in _split_flow(t[1:-1], where)]
    if t.startswith("{"):
        if not t.endswith("}"):
            raise SweepError("%s: a flow map must end with '}'" % where)
        out = {}
        for item in _split_flow(t[1:-1], where):
            k, sep, v = item.partition(":")
            if not sep:
                raise SweepError("%s: '%s' is not 'key: value'" % (where, item.strip()))
            out[_scalar(k)] = _value(v, where)
        return out
    return _scalar(t)


def _strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_yaml_subset(text, origin):
    """Block mappings (any depth), block lists ('- x'), flow lists/maps and scalars."""
    lines = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if line.strip() in ("", "---"):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise SweepError("%s:%d: tabs are not allowed for indentation" % (origin, no))
        lines.append((no, len(line) - len(line.lstrip()), line.strip()))

    def block(i, indent):
        """Parses lines[i:] at exactly `indent`; returns (value, next index)."""
        if i >= len(lines):
            return None, i
        if lines[i][2].startswith("- ") or lines[i][2] == "-":
            out = []
            while i < len(lines) and lines[i][1] == indent and (lines[i][2].startswith("- ") or lines[i][2] == "-"):
                no, _, content = lines[i]
                out.append(_value(content[1:], "%s:%d" % (origin, no)))
                i += 1
            return out, i
        out = {}
        while i < len(lines) and lines[i][1] == indent:
            no, _, content = lines[i]
            where = "%s:%d" % (origin, no)
            key, sep, rest = content.partition(":")
            if not sep or (rest and not rest.startswith((" ", "\t"))):
                raise SweepError("%s: expected 'key: value', got '%s'" % (where, content))
            key = _scalar(key)
            if key in out:
                raise SweepError("%s: key '%s' appears twice" % (where, key))
            if rest.strip():
                out[key] = _value(rest, where)
                i += 1
            else:
                i += 1
                if i < len(lines) and lines[i][1] > indent:
                    out[key], i = block(i, lines[i][1])
                else:
                    out[key] = None
        if i < len(lines) and lines[i][1] > indent:
            raise SweepError("%s:%d: unexpected indentation" % (origin, lines[i][0]))
        return out, i

    if not lines:
        return None
    value, i = block(0, lines[0][1])
    if i < len(lines):
        raise SweepError("%s:%d: unexpected indentation" % (origin, lines[i][0]))
    return value


def load_yaml_text(text, origin):
    if _yaml is not None:
        try:
            return _yaml.safe_load(text)
        except _yaml.YAMLError as e:
            raise SweepError("%s: not valid YAML: %s" % (origin, " ".join(str(e).split())))
    return parse_yaml_subset(text, origin)


def load_yaml(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SweepError("cannot read %s: %s" % (path, e.strerror))
    return load_yaml_bytes(raw, path)


def load_yaml_bytes(raw, origin):
    """YAML from a file's bytes, decoded as open(path, encoding="utf-8") reads it."""
    try:
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read()
    except UnicodeDecodeError as e:
        raise SweepError("%s is not a text file (byte %d is not UTF-8): expected YAML" % (origin, e.start))
    if "\0" in text:
        raise SweepError("%s is not a text file (it holds NUL bytes): expected YAML" % origin)
    return load_yaml_text(text, origin)


# ---- sweeps -----------------------------------------------------------------------------

def yaml_scalar_text(value):
    """A Python value as the YAML scalar text `mhc train --set key=value` parses back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_scalar_text(v) for v in value) + "]"
    return str(value)


class RawValue(str):
    """A value given as text on the command line, passed to mhc unchanged."""


def _name_part(text):
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


class Run:
    def __init__(self, name, axis_values, overrides, run_dir):
        self.name = name                  # directory name inside the sweep folder
        self.axis_values = axis_values    # [(key, value)] of this run's axes
        self.overrides = overrides        # [(key, value)] fixed `set` + axes, in order
        self.run_dir = run_dir

    def set_args(self):
        args = []
        for key, value in self.overrides:
            args += ["--set", "%s=%s" % (key, yaml_scalar_text(value))]
        return args


class Sweep:
    def __init__(self, path, runs_root="runs", extra_set=(), raw=None):
        """`raw`: the sweep file's bytes, read from `path` when None (tests/fuzz passes them)."""
        self.path = path
        data = load_yaml(path) if raw is None else load_yaml_bytes(raw, path)
        if not isinstance(data, dict):
            raise SweepError("%s: a sweep file is a mapping with base, axes and optional set/name" % path)
        unknown = [k for k in data if k not in SWEEP_KEYS]
        if unknown:
            raise SweepError("%s: unknown top-level key '%s' (known: %s)" % (path, unknown[0], ", ".join(SWEEP_KEYS)))
        self.name = str(data.get("name") or os.path.splitext(os.path.basename(path))[0])
        if _name_part(self.name) != self.name:
            raise SweepError("%s: name '%s' must be letters, digits, '.', '+', '-' or '_'" % (path, self.name))
        base = data.get("base")
        if base is None:
            raise SweepError("%s: 'base' (the config file(s) every run starts from) is missing" % path)
        self.bases = [self._resolve(b) for b in (base if isinstance(base, list) else [base])]
        fixed = data.get("set") or {}
        if not isinstance(fixed, dict):
            raise SweepError("%s: 'set' must map config keys to values" % path)
        axes = data.get("axes") or {}
        variants = data.get("variants") or {}
        if not isinstance(axes, dict) or not (axes or variants):
            raise SweepError("%s: 'axes' must map config keys to lists of values" % path)
        if not isinstance(variants, dict):
            raise SweepError("%s: 'variants' must map variant names to mappings of config keys" % path)
        self.fixed = [(str(k), v) for k, v in fixed.items()]
        for key, value in extra_set:  # command-line --set: text parsed by mhc as YAML
            self.fixed = [(k, v) for k, v in self.fixed if k != key] + [(key, RawValue(value))]
        self.axes = []
        self.variants = {}  # name -> [(key, value)]
        for name, keys in variants.items():
            name = str(name)
            if _name_part(name) != name:
                raise SweepError("%s: variant name '%s' must be letters, digits, '.', '+', '-' or '_'"
                                 % (path, name))
            if not isinstance(keys, dict) or not keys:
                raise SweepError("%s: variant '%s' must map config keys to values, got %r" % (path, name, keys))
            for key, v in keys.items():
                if isinstance(v, (dict, list)):
                    raise SweepError("%s: variant '%s' key '%s' has a non-scalar value %r" % (path, name, key, v))
                if str(key) in axes or any(k == str(key) for k, _ in self.fixed):
                    raise SweepError("%s: variant '%s' sets '%s', which is also an axis or a fixed 'set' key"
                                     % (path, name, key))
            self.variants[name] = [(str(k), v) for k, v in keys.items()]
        if self.variants:
            self.axes.append((VARIANT_AXIS, list(self.variants)))
        for key, values in axes.items():
            if not isinstance(values, list) or not values:
                raise SweepError("%s: axis '%s' must be a non-empty list of values, got %r" % (path, key, values))
            for v in values:
                if isinstance(v, (dict, list)):
                    raise SweepError("%s: axis '%s' has a non-scalar value %r" % (path, key, v))
            if len(set(map(yaml_scalar_text, values))) != len(values):
                raise SweepError("%s: axis '%s' repeats a value" % (path, key))
            if any(k == str(key) for k, _ in self.fixed):
                raise SweepError("%s: '%s' is both an axis and a fixed 'set' key" % (path, key))
            self.axes.append((str(key), values))
        self.dir = os.path.join(runs_root, self.name)
        self.runs = self._expand()

    def _resolve(self, p):
        p = str(p)
        if os.path.isabs(p) or os.path.exists(p):
            return p
        candidate = os.path.join(REPO_ROOT, p)
        if os.path.exists(candidate):
            return candidate
        raise SweepError("%s: base config '%s' not found (relative paths are tried from the working "
                         "directory and from %s)" % (self.path, p, REPO_ROOT))

    def _expand(self):
        leaves = [k.split(".")[-1] for k, _ in self.axes]
        labels = [k.replace(".", "-") if leaves.count(leaf) > 1 else leaf
                  for (k, _), leaf in zip(self.axes, leaves)]
        runs, seen = [], {}
        for combo in itertools.product(*[values for _, values in self.axes]):
            name = "_".join("%s-%s" % (label, _name_part(yaml_scalar_text(v)))
                            for label, v in zip(labels, combo))
            if name in seen:
                raise SweepError("%s: runs %s and %s get the same directory name '%s'" % (self.path, seen[name], combo, name))
            seen[name] = combo
            axis_values = list(zip([k for k, _ in self.axes], combo))
            settings = []
            for k, v in axis_values:  # a variant expands into its keys
                settings += self.variants[v] if k == VARIANT_AXIS else [(k, v)]
            overrides = self.fixed + settings + [("run.name", name)]
            runs.append(Run(name, axis_values, overrides, os.path.join(self.dir, name)))
        return runs
