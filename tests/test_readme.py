"""The README runs as written: every file, module, command, option, make target and route it names exists.

``check_readme(text)`` reads the README's fenced ``bash`` blocks command by command (continuation lines
joined, comments dropped) and returns one problem per name that does not resolve:

- ``make TARGET [VAR=...]``: the Makefile has the target and the variable;
- ``cascade CMD ... --opt`` (also ``-m cascade.cli.main``): the command exists (``--help`` through typer's
  CliRunner exits 0) and takes every option given;
- ``python -m MODULE`` / ``torchrun ... -m MODULE``: the module can be found;
- ``curl ... http://HOST/PATH``: the service has a route for PATH (``<id>`` matches a path parameter);
- every relative path an input names (an argument, ``-F file=@PATH``, ``-f FILE``): it is in the repository,
  or ``make demo`` writes it (``cascade synth --out DIR`` in the Makefile; a file named inside such a folder
  must be one the Makefile's own synth command writes), or an earlier README command wrote it (``--out``,
  ``-o``, ``--masks``), or it is under ``../shared`` (checked when that folder is present).

Outside the code blocks, ``python -m X`` and backticked dotted names (``training.train_segmenter``,
``cascade.rle.encode``) must import and resolve, and backticked or linked repository paths must exist.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"

_BLOCK = re.compile(r"^```(bash|sh|shell)\n(.*?)^```", re.S | re.M)
_OUTPUT_OPTIONS = {"--out", "-o", "--masks", "--state-dir", "--gallery"}
_SEPARATORS = {"&&", "||", "|", ";"}
_PATH_SUFFIXES = (".csv", ".jpg", ".png", ".yaml", ".yml", ".json", ".zip", ".safetensors", ".md", ".py", ".toml")
_REPO_DIRS = ("cascade/", "models/", "training/", "service/", "bench/", "configs/", "docker/", "docs/", "tests/")
_DOTTED = re.compile(r"`((?:cascade|training|bench|models|service)(?:\.[A-Za-z_]\w*)+)")
_PYTHON_M = re.compile(r"python3? -m ((?:\w+\.)*\w+)\b(?![.<])")


# ---------------------------------------------------------------------------------------------- parsing


def shell_blocks(text: str) -> list[str]:
    """The fenced bash blocks of a Markdown text."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def commands(block: str) -> Iterator[list[str]]:
    """Each simple command of a shell block as argv: continuations joined, comments and ``VAR=x`` prefixes dropped."""
    for line in block.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:  # unbalanced quotes: a broken example
            raise AssertionError(f"cannot parse README line {line!r}: {exc}") from exc
        current: list[str] = []
        for token in [*tokens, ";"]:
            if token in _SEPARATORS:
                while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current:
                    yield current
                current = []
            else:
                current.append(token)


def _looks_like_path(value: str) -> bool:
    if not value or value.startswith(("-", "http://", "https://", "/", "$", "~")) or "://" in value:
        return False
    if any(ch in value for ch in "<>*{}$'\"=:,"):
        return False
    return "/" in value or value.endswith(_PATH_SUFFIXES)


# ---------------------------------------------------------------------------------------------- the world


@functools.cache
def makefile() -> tuple[frozenset[str], frozenset[str], dict[str, tuple[int, int]]]:
    """``(targets, variables, synth outputs)`` of the Makefile; synth outputs map a folder to its ``(n, seed)``."""
    text = (ROOT / "Makefile").read_text()
    targets = frozenset(re.findall(r"^([A-Za-z][\w.-]*):", text, re.M))
    variables = dict(re.findall(r"^([A-Z_]+) *\??= *(.*?) *$", text, re.M))

    def expand(value: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: expand(variables.get(m.group(1), m.group(0))), value)

    synth = {}
    for out, n, seed in re.findall(r"cascade synth --out (\S+) --n (\S+) --seed (\S+)", text):
        synth[expand(out)] = (int(expand(n)), int(expand(seed)))
    return targets, frozenset(variables), synth


@functools.cache
def synth_listing(n: int, seed: int) -> frozenset[str]:
    """Relative paths (``train.csv``, ``train_images/<id>.jpg``) that ``cascade synth --n N --seed S`` writes."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="readme-synth-")) / "set"
    result = CliRunner().invoke(_cascade_app(), ["synth", "--out", str(out), "--n", str(n), "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    return frozenset(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def _cascade_app():
    from cascade.cli.main import app

    return app


@functools.cache
def _click_root():
    import typer.main

    return typer.main.get_command(_cascade_app())


@functools.cache
def service_routes() -> tuple[re.Pattern[str], ...]:
    """Patterns of the service's paths: the OpenAPI schema's, the docs', and the GUI page."""
    from fastapi.testclient import TestClient

    from service import ServiceSettings, create_app

    app = create_app(ServiceSettings())
    client = TestClient(app)
    paths = set(app.openapi()["paths"])
    pages = ("/", "/docs", "/redoc", "/openapi.json")  # left out of the schema
    paths |= {p for p in pages if client.get(p).status_code == 200}
    return tuple(re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(p)) + "$") for p in paths)


# ---------------------------------------------------------------------------------------------- checks


class ReadmeChecker:
    """Walks the README's commands in order, collecting problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.produced: set[str] = set()
        self.helped: set[tuple[str, ...]] = set()

    def problem(self, argv: list[str], message: str) -> None:
        self.problems.append(f"`{' '.join(argv)}`: {message}")

    # -- paths
    def check_input_path(self, argv: list[str], raw: str) -> None:
        path = raw.rstrip("/")
        if (ROOT / path).exists():
            return
        if path.startswith("../shared/"):
            if SHARED.is_dir() and not (ROOT / path).exists():
                self.problem(argv, f"{raw} does not exist")
            return
        if any(path == p or path.startswith(p + "/") for p in self.produced):
            return
        for folder, (n, seed) in makefile()[2].items():
            if path == folder:
                return
            if path.startswith(folder + "/"):
                rel = path.removeprefix(folder + "/")
                listing = synth_listing(n, seed)
                if rel in listing or any(f.startswith(rel + "/") for f in listing):
                    return
                self.problem(argv, f"{raw}: `make demo`'s synth step writes no such file into {folder}")
                return
        self.problem(argv, f"{raw} is neither in the repository nor written by `make demo` or an earlier example")

    def check_paths(self, argv: list[str], start: int = 1) -> None:
        skip_next = False
        for i in range(start, len(argv)):
            token = argv[i]
            if skip_next:
                skip_next = False
                continue
            if token in _OUTPUT_OPTIONS and i + 1 < len(argv):
                self.produced.add(argv[i + 1].rstrip("/"))
                skip_next = True
                continue
            if token.startswith("-"):
                continue
            value = token.split("@", 1)[1] if "=@" in token else token
            if _looks_like_path(value):
                self.check_input_path(argv, value)

    # -- commands
    def check(self, argv: list[str]) -> None:
        prog = Path(argv[0]).name
        if prog == "make":
            self.check_make(argv)
        elif prog == "cascade":
            self.check_cascade(argv, argv[1:])
        elif prog in ("python", "python3", "torchrun"):
            self.check_python(argv)
        elif prog == "curl":
            self.check_curl(argv)
        else:
            self.check_paths(argv)

    def check_make(self, argv: list[str]) -> None:
        targets, variables, _ = makefile()
        for token in argv[1:]:
            if "=" in token:
                if token.split("=", 1)[0] not in variables:
                    self.problem(argv, f"the Makefile has no variable {token.split('=', 1)[0]}")
            elif not token.startswith("-") and token not in targets:
                self.problem(argv, f"the Makefile has no target {token!r}")

    def check_python(self, argv: list[str]) -> None:
        if "-m" not in argv:
            self.check_paths(argv)
            return
        i = argv.index("-m")
        module = argv[i + 1]
        if module == "zipfile" and "-c" in argv:  # python -m zipfile -c OUT.zip FILES...
            self.produced.add(argv[argv.index("-c") + 1])
        if not module_exists(module):
            self.problem(argv, f"no module {module}")
        elif not module_runs(module):
            self.problem(argv, f"module {module} does not run (no __main__ block)")
        elif module == "cascade.cli.main":
            self.check_cascade(argv, argv[i + 2 :])
            return
        self.check_paths(argv, i + 2)

    def check_cascade(self, argv: list[str], args: list[str]) -> None:
        command = _click_root()
        path: list[str] = []
        rest = list(args)
        while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
            sub = command.commands.get(rest[0])
            if sub is None:
                self.problem(argv, f"`cascade {' '.join(path)}` has no command {rest[0]!r}")
                return
            path.append(rest.pop(0))
            command = sub
        if tuple(path) not in self.helped:
            result = CliRunner().invoke(_cascade_app(), [*path, "--help"])
            if result.exit_code != 0:
                self.problem(argv, f"`cascade {' '.join(path)} --help` exits {result.exit_code}")
            self.helped.add(tuple(path))
        known = {"--help"}
        for param in command.params:
            known.update(getattr(param, "opts", ()))
            known.update(getattr(param, "secondary_opts", ()))
        for token in rest:
            if token.startswith("-") and token != "-":
                name = token.split("=", 1)[0]
                if name not in known:
                    self.problem(argv, f"`cascade {' '.join(path)}` has no option {name}")
        self.check_paths(["cascade", *path, *rest], 1 + len(path))

    def check_curl(self, argv: list[str]) -> None:
        for token in argv[1:]:
            match = re.match(r"https?://[^/\s]+(/[^?\s]*)?", token)
            if match:
                route = (match.group(1) or "/").replace("<id>", "x")
                if not any(p.match(route) for p in service_routes()):
                    self.problem(argv, f"the service has no route {route}")
        self.check_paths(argv)


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def module_runs(name: str) -> bool:
    """Whether ``python -m name`` does something: a package with ``__main__`` or a module with a main block."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return False
    if spec.submodule_search_locations is not None:
        return module_exists(f"{name}.__main__")
    source = Path(spec.origin)
    return source.suffix != ".py" or '__name__ == "__main__"' in source.read_text()


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module_exists(module):
            obj = importlib.import_module(module)
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def check_prose(text: str) -> list[str]:
    """Problems in the README's text outside runnable commands: modules, dotted names and repository paths."""
    problems = []
    for module in sorted(set(_PYTHON_M.findall(text))):
        if not module.isupper() and not module_exists(module):  # MODULE: a placeholder
            problems.append(f"`python -m {module}`: no such module")
    for dotted in sorted(set(_DOTTED.findall(text))):
        if not _resolves(dotted):
            problems.append(f"`{dotted}` does not resolve to a module or attribute")
    links = {p for p in re.findall(r"\]\(([^)#\s]+)\)", text) if "://" not in p}
    candidates = links | set(re.findall(r"`([^`\s]+)`", text))
    for path in sorted(candidates):
        named = path.startswith(_REPO_DIRS) or path in links
        if named and not any(ch in path for ch in "<>*{}") and not (ROOT / path).exists():
            problems.append(f"{path}: no such file in the repository")
    return problems


def check_readme(text: str) -> list[str]:
    """Every problem of a README text (see the module docstring)."""
    checker = ReadmeChecker()
    for block in shell_blocks(text):
        for argv in commands(block):
            checker.check(argv)
    return checker.problems + check_prose(text)


# ---------------------------------------------------------------------------------------------- tests


def test_readme_examples_resolve() -> None:
    text = README.read_text()
    assert len(shell_blocks(text)) >= 5, "the README's bash blocks were not found: the check would be vacuous"
    problems = check_readme(text)
    assert not problems, "README examples that do not run as written:\n" + "\n".join(problems)


def test_readme_has_first_ten_minutes_block() -> None:
    text = README.read_text()
    section = text.split("## First ten minutes", 1)
    assert len(section) == 2, "the README has no 'First ten minutes' section"
    block = shell_blocks(section[1])[0]
    names = [" ".join(argv[:2]) for argv in commands(block)]
    for step in ("cascade predict", "cascade score", "cascade check-submission", "curl -F"):
        assert any(n.startswith(step) for n in names), f"'First ten minutes' lacks `{step}`: {names}"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("cascade predikt data/x --out s.csv", "has no command 'predikt'"),
        ("cascade predict data/demo-test/train_images --outt s.csv", "has no option --outt"),
        ("cascade bundle inf", "has no command 'inf'"),
        ("python -m training.tune --config configs/demo-cpu.yaml", "no module training.tune"),
        ("python -m training.tune_thresholds --config c.yaml", "training.tune_thresholds does not run"),
        ("torchrun --nproc_per_node=2 -m training.classifier --config x.yaml", "no module training.classifier"),
        ("make demoo", "no target 'demoo'"),
        ("make demo RETRAINN=1", "no variable RETRAINN"),
        ("cascade train --config configs/nope.yaml", "configs/nope.yaml is neither"),
        ("curl -F file=@0002cc93b.jpg http://127.0.0.1:8000/predict", "0002cc93b.jpg is neither"),
        ("curl -F file=@data/demo-test/train_images/0002cc93b.jpg http://h/predict", "writes no such file"),
        ("curl http://127.0.0.1:8000/predictions", "no route /predictions"),
        ("cascade bundle info runs/best.cascade.safetensors", "runs/best.cascade.safetensors is neither"),
    ],
)
def test_checker_catches_wrong_names(snippet: str, expected: str) -> None:
    problems = check_readme(f"```bash\n{snippet}\n```\n")
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Run `python -m training.hard_negatives --config c.yaml`.", "python -m training.hard_negatives"),
        ("See `cascade.rle.encodee`.", "cascade.rle.encodee"),
        ("See [design](docs/NOPE.md).", "docs/NOPE.md"),
    ],
)
def test_prose_checker_catches_wrong_names(text: str, expected: str) -> None:
    problems = check_prose(text)
    assert any(expected in p for p in problems), problems


def test_checker_accepts_outputs_of_earlier_examples() -> None:
    text = (
        "```bash\n"
        "cascade predict data/demo-test/train_images --out runs/t/sub.csv   # a comment\n"
        "cascade check-submission runs/t/sub.csv --images data/demo-test/train_images\n"
        "CASCADE_API_KEY=k cascade serve \\\n    --port 8000\n"
        "```\n"
    )
    assert check_readme(text) == []


def test_makefile_synth_step_writes_the_folders_the_readme_uses() -> None:
    synth = makefile()[2]
    assert {"data/demo", "data/demo-test"} <= synth.keys(), synth
    n, _ = synth["data/demo-test"]
    assert n <= 100, "the held-out demo set should stay small so `make demo` stays fast"
