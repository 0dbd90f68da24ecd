"""The layering rules of crm_core and demo, checked on the source (AST), and the engine surface.

1. Nothing in ``crm_core`` imports ``demo`` or ``gradio``: the engine works without the UI; the
   library (``crm_core`` outside ``crm_core/experiments``) imports none of the studies, and the
   studies' one subprocess into ``demo`` (``python -m demo.bench``) does not import them back.
2. Outside the adapter (demo.engine, the services it composes and demo.locks, demo.bootstrap,
   demo.bench), ``demo`` and ``app.py`` import nothing from ``crm_core`` but ``crm_core.api``;
   the UI modules (layout, tabs, callbacks, plots, render, messages, protocol) do not import the
   adapter either: they reach the engine only through :class:`demo.protocol.DashboardEngine`.
3. The adapter and the protocol do not import gradio.
4. ``Engine`` and the tests' ``FakeEngine`` hold every service of ``DashboardEngine``; each real
   service and each fake implements every member of its Protocol with the same parameters and
   return annotation, and the UI calls no engine member outside those Protocols.
5. No service Protocol and no class of demo or tests has more than 20 public methods; no function
   of demo is over 100 lines.
"""
from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Iterator

import pytest

from demo.engine import Engine
from demo.protocol import DashboardEngine
from demo_fixtures import FakeEngine

ROOT = Path(__file__).resolve().parent.parent
# The demo modules that may import crm_core: the engine, the services it composes, its lock order and
# memory accounting, and the tools that drive the engine or the served app (bench, load).
ADAPTER = {"demo.engine", "demo.checkpoint_store", "demo.inference", "demo.evaluation", "demo.finetune",
           "demo.results_reader", "demo.stage2", "demo.stage2_train", "demo.stage2_job", "demo.locks", "demo.memory", "demo.bootstrap", "demo.bench",
           "demo.load"}
GRADIO_FREE = ADAPTER - {"demo.bench"} | {"demo.protocol"}  # demo.bench times the callbacks, lazily
# The UI, as docs/architecture.md's import table names it: the page, one module per tab and its
# callbacks, and the pictures, figures and messages they make.
UI = {"demo.layout", "demo.tabs", "demo.callbacks", "demo.plots", "demo.render", "demo.messages", "demo.protocol"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(*roots: str) -> list[Path]:
    paths = []
    for root in roots:
        path = ROOT / root
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return paths


def imports(path: Path, module: str | None = None) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import in ``path`` (the module ``module``, default: its
    name in the repository), lazy ones in functions included; ``from a import b`` yields ``a.b``
    (b may be a module) and ``importlib.import_module("x")`` yields x."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            yield node.args[0].value, node.lineno


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(paths: list[Path], forbidden) -> list[str]:
    found = []
    for path in paths:
        for module, line in imports(path):
            if forbidden(module_name(path), module):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_crm_core_imports_neither_demo_nor_gradio() -> None:
    bad = violations(sources("crm_core"), lambda _, m: within(m, "demo") or within(m, "gradio"))
    assert not bad, "crm_core must work without the UI:\n" + "\n".join(bad)


def test_demo_reaches_crm_core_only_through_its_api_outside_the_adapter() -> None:
    def forbidden(importer: str, module: str) -> bool:
        return importer not in ADAPTER and within(module, "crm_core") and module not in ("crm_core", "crm_core.api") \
            and not within(module, "crm_core.api")

    bad = violations(sources("demo", "app.py"), forbidden)
    assert not bad, f"only the adapter ({', '.join(sorted(ADAPTER))}) may import crm_core beyond crm_core.api:\n" + \
        "\n".join(bad)


def documented_ui() -> set[str]:
    """The modules and packages of docs/architecture.md's "(the UI)" row, as module names."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("|") and "(the UI)" in line)
    paths = re.findall(r"`(demo/[\w/]*?)(?:\.py)?/?`", row.split("|")[1])
    return {path.replace("/", ".") for path in paths}


def test_ui_modules_reach_the_engine_only_through_the_protocol() -> None:
    ui = [p for p in sources("demo") if module_name(p) not in ADAPTER]
    assert documented_ui() == UI, "docs/architecture.md's UI row and this test name other modules"
    seen = {module_name(p) for p in ui}
    assert all(any(within(module, package) for module in seen) for package in UI), \
        f"a UI module the walk does not see: {sorted(UI)}"
    bad = violations(ui, lambda _, m: any(within(m, a) for a in ADAPTER))
    assert not bad, "the UI talks to demo.protocol.DashboardEngine, not to the adapter:\n" + "\n".join(bad)


def test_engine_and_protocol_do_not_import_gradio() -> None:
    paths = [p for p in sources("demo") if module_name(p) in GRADIO_FREE]
    assert {module_name(p) for p in paths} == GRADIO_FREE
    bad = violations(paths, lambda _, m: within(m, "gradio"))
    assert not bad, "the engine works without the UI toolkit:\n" + "\n".join(bad)


def test_the_api_and_the_engine_stay_light_at_import() -> None:
    """crm_core.api loads crm_core.train (and its CLI's imports) only when TrainConfig or
    TrainingDiverged is asked for; neither it nor the engine adapter pulls in gradio."""
    probe = ("import sys, crm_core.api, demo.protocol\n"
             "api = sorted(m for m in sys.modules if m in ('crm_core.train', 'gradio') or m.startswith('demo.callbacks'))\n"
             "import demo.engine\n"
             "engine = sorted(m for m in sys.modules if m == 'gradio' or m.startswith('demo.callbacks'))\n"
             "print(api, engine)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]", "[]"], out.stdout


def test_the_rules_see_what_they_forbid(tmp_path: Path) -> None:
    """The AST walk finds lazy, aliased, relative and importlib imports (a check that cannot fail is no check)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import crm_core.metrics as m\nfrom crm_core import data\nfrom crm_core.api import CamModel\n"
                     "def f():\n    from ..engine import Engine\n    import importlib\n"
                     "    return importlib.import_module('gradio')\n", encoding="utf-8")
    found = set(imports(probe, "demo.callbacks.probe"))
    assert {("crm_core.metrics", 1), ("crm_core.data", 2), ("crm_core.api.CamModel", 3), ("demo.engine.Engine", 5),
            ("gradio", 7)} <= found


# -- the layers of crm_core and no cycles --------------------------------------------------
def documented_layers() -> list[list[str]]:
    """docs/architecture.md's numbered list of crm_core layers: the backticked names before the dash."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("The layers are, bottom up"):]
    layers = []
    for match in re.finditer(r"^(\d+)\. (.+?) —", section, flags=re.M):
        assert int(match.group(1)) == len(layers) + 1, "the layer list is numbered 1, 2, 3, ..."
        layers.append(re.findall(r"`([\w.]+)`", match.group(2)))
    return layers


def crm_core_unit(module: str) -> str | None:
    """The layer unit a crm_core module belongs to: its top-level module or subpackage name, and
    inside the studies' package ``experiments.<module or subpackage>``."""
    parts = module.split(".")
    if len(parts) > 2 and parts[:2] == ["crm_core", "experiments"]:
        return f"experiments.{parts[2]}"
    return parts[1] if len(parts) > 1 and parts[0] == "crm_core" else None


def is_study(unit: str | None) -> bool:
    return unit is not None and within(unit, "experiments")


def import_graph(roots: tuple[str, ...], unit) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources(*roots):
        importer = unit(module_name(path))
        if importer is None:
            continue
        graph.setdefault(importer, set())
        for module, _ in imports(path):
            imported = unit(module)
            if imported is not None and imported != importer:
                graph[importer].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_crm_core_module_is_in_one_documented_layer() -> None:
    layers = documented_layers()
    named = [name for layer in layers for name in layer]
    assert len(named) == len(set(named)), f"a unit is in two layers: {named}"
    units = {crm_core_unit(module_name(p)) for p in sources("crm_core")} - {None}
    assert units == set(named), f"undocumented: {sorted(units - set(named))}, gone: {sorted(set(named) - units)}"


def test_crm_core_imports_only_lower_layers() -> None:
    level = {name: i for i, layer in enumerate(documented_layers()) for name in layer}
    bad = []
    for path in sources("crm_core"):
        importer = crm_core_unit(module_name(path))
        for module, line in imports(path):
            imported = crm_core_unit(module)
            if importer and imported and imported != importer and level[imported] >= level[importer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({importer}, layer {level[importer] + 1}) imports "
                           f"{module} (layer {level[imported] + 1})")
    assert not bad, "docs/architecture.md: each layer imports only lower layers:\n" + "\n".join(bad)


def test_the_library_imports_no_study() -> None:
    """crm_core's library (everything outside crm_core/experiments) imports nothing from the studies,
    lazily or not, and the layer list puts every study above every library module."""
    bad = violations([p for p in sources("crm_core") if not is_study(crm_core_unit(module_name(p)))],
                     lambda importer, module: within(module, "crm_core.experiments"))
    assert not bad, bad
    level = {name: i for i, layer in enumerate(documented_layers()) for name in layer}
    studies = [lvl for name, lvl in level.items() if is_study(name)]
    assert studies and min(studies) > max(lvl for name, lvl in level.items() if not is_study(name))
    assert crm_core_unit("crm_core.experiments.bench.cli") == "experiments.bench"
    assert crm_core_unit("crm_core.experiments") == "experiments" and is_study("experiments")


def test_the_benchmarks_subprocess_does_not_loop_back() -> None:
    """crm_core.experiments.bench runs ``python -m demo.bench``: nothing that module reaches through
    demo's imports (lazy ones included) imports the benchmark package back, and demo.bench itself
    imports only the library."""
    seen, todo, bad = set(), ["demo.bench"], []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        for imported, line in imports(path):
            if within(imported, "crm_core.experiments.bench") or (
                    module == "demo.bench" and within(imported, "crm_core.experiments")):
                bad.append(f"{module}:{line} imports {imported}")
            elif within(imported, "demo"):
                while imported and not (ROOT / (imported.replace(".", "/") + ".py")).is_file() \
                        and not (ROOT / imported.replace(".", "/") / "__init__.py").is_file():
                    imported = imported.rpartition(".")[0]
                todo.append(imported)
    assert "demo.engine" in seen or "demo.load" in seen  # the walk follows demo's own imports
    assert not bad, bad


def test_no_import_cycle_between_crm_core_packages_or_demo_modules() -> None:
    assert cycles(import_graph(("crm_core",), crm_core_unit)) == []
    assert cycles(import_graph(("crm_core",), lambda m: m if within(m, "crm_core") else None)) == []
    modules = {module_name(p) for p in sources("demo", "app.py")}

    def demo_module(module: str) -> str | None:  # "from demo.x import name" counts as demo.x
        while module and module not in modules:
            module = module.rpartition(".")[0]
        return module or None

    assert cycles(import_graph(("demo", "app.py"), demo_module)) == []


def test_the_cycle_and_layer_checks_see_what_they_forbid() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert crm_core_unit("crm_core.models.classifier") == "models" and crm_core_unit("demo.engine") is None
    assert ["models"] in documented_layers()


def test_crm_core_names_demo_only_where_the_docs_say() -> None:
    """A module run by name (``python -m demo.bench``) is an import no AST walk sees: the one such
    place is crm_core/experiments/bench/dashboard.py, which docs/architecture.md names."""
    naming = sorted(str(p.relative_to(ROOT)) for p in sources("crm_core")
                    if re.search(r"[\"']demo(\.\w+)*[\"']", p.read_text(encoding="utf-8")))
    assert naming == ["crm_core/experiments/bench/dashboard.py"]
    assert "bench/dashboard.py" in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_no_module_is_longer_than_a_sitting() -> None:
    """A module a new engineer reads in one sitting: at most 600 lines in crm_core, demo and app.py."""
    long = {str(p.relative_to(ROOT)): n for p in sources("crm_core", "demo", "app.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, f"split these by job: {long}"


# -- the engine surface ------------------------------------------------------------------
#: service attribute -> its Protocol, as DashboardEngine names them.
SERVICES = typing.get_type_hints(DashboardEngine)
REAL, FAKE = Engine("/nonexistent", "/nonexistent"), FakeEngine()  # neither reads a file when built
MAX_METHODS = 20  # public methods of one class: a service a reader holds in mind at once


def public_methods(cls: type) -> list[str]:
    return sorted(name for name, value in vars(cls).items() if not name.startswith("_") and callable(value))


def members(service: str) -> list[str]:
    return public_methods(SERVICES[service])


def _annotation(value: object) -> str:
    """A return annotation as text, module prefixes dropped (``api.TrainConfig`` is ``TrainConfig``)."""
    text = value if isinstance(value, str) else getattr(value, "__name__", repr(value))
    return re.sub(r"\b\w+\.(?=\w)", "", str(text)).replace(" ", "")


def test_the_engines_compose_the_services() -> None:
    """Each engine holds every service, and nothing the UI could reach besides them but its own
    composite tools (warm-up and memory accounting, read by app.py, never by a view)."""
    assert SERVICES and all(isinstance(p, type) for p in SERVICES.values())
    for engine in (REAL, FAKE):
        assert all(hasattr(engine, service) for service in SERVICES), type(engine).__name__
    assert public_methods(Engine) == ["cache_sizes", "memory_report", "warm_up"]
    assert public_methods(FakeEngine) == []


@pytest.mark.parametrize("engine", [REAL, FAKE], ids=["Engine", "FakeEngine"])
@pytest.mark.parametrize("service, member", [(s, m) for s in SERVICES for m in members(s)])
def test_services_implement_their_protocol(engine: object, service: str, member: str) -> None:
    protocol, implementation = SERVICES[service], type(getattr(engine, service))
    where = f"{type(engine).__name__}.{service} ({implementation.__name__}).{member}"
    expected = inspect.signature(getattr(protocol, member))
    assert hasattr(implementation, member), f"{where} is missing"
    actual = inspect.signature(getattr(implementation, member))
    names = [(p.name, p.kind) for p in expected.parameters.values()]
    assert [(p.name, p.kind) for p in actual.parameters.values()] == names, \
        f"{where}{actual} drifted from {protocol.__name__}.{member}{expected}"
    for name, param in expected.parameters.items():
        if param.default is not inspect.Parameter.empty:
            assert actual.parameters[name].default is not inspect.Parameter.empty, \
                f"{where}: {name} needs a default, as in the protocol"
    assert _annotation(actual.return_annotation) == _annotation(expected.return_annotation), \
        f"{where} returns {actual.return_annotation}, the protocol {expected.return_annotation}"


def _is_engine(node: ast.AST) -> bool:
    """``engine`` or ``<anything>.engine`` (the tabs reach it as ``page.engine``)."""
    return (isinstance(node, ast.Name) and node.id == "engine") or (isinstance(node, ast.Attribute)
                                                                    and node.attr == "engine")


def engine_calls(tree: ast.AST) -> Iterator[tuple[str, str | None, int]]:
    """(service, member or None, line) of every ``engine.<service>[.<member>]`` in ``tree``."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_engine(node.value):
            parent = parents.get(node)
            member = parent.attr if isinstance(parent, ast.Attribute) and parent.value is node else None
            yield node.attr, member, node.lineno


def test_the_ui_uses_no_engine_member_outside_the_protocols() -> None:
    bad = []
    for path in [p for p in sources("demo") if module_name(p) not in ADAPTER]:
        for service, member, line in engine_calls(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{line}"
            if service not in SERVICES:
                bad.append(f"{where}: engine.{service} is no service of DashboardEngine")
            elif member not in members(service):
                bad.append(f"{where}: engine.{service}.{member} is not in {SERVICES[service].__name__}")
    assert not bad, "add these to a service Protocol of demo.protocol (and its service and fake) or stop using " \
        "them:\n" + "\n".join(bad)


def test_the_ui_check_sees_what_it_forbids() -> None:
    tree = ast.parse("engine.inference.cam(1)\nengine.cam(2)\nx = engine.training\npage.engine.runs.names()\n"
                     "f(page.engine)\n")
    assert sorted(engine_calls(tree), key=lambda call: call[2]) == [
        ("inference", "cam", 1), ("cam", None, 2), ("training", None, 3), ("runs", "names", 4)]


def test_services_stay_small() -> None:
    """A service Protocol, and any class of demo or tests, has at most MAX_METHODS public methods; a
    function of demo fits on two screens (100 lines)."""
    big = {protocol.__name__: len(public_methods(protocol)) for protocol in SERVICES.values()
           if len(public_methods(protocol)) > MAX_METHODS}
    for path in sources("demo", "tests"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '')}"
            if isinstance(node, ast.ClassDef):
                methods = [f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and not f.name.startswith("_")]
                if len(methods) > MAX_METHODS:
                    big[where] = len(methods)
            elif (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and path.parts[len(ROOT.parts)] == "demo"
                  and node.end_lineno - node.lineno + 1 > 100):
                big[where] = node.end_lineno - node.lineno + 1
    assert not big, f"split these by job: {big}"


def test_fake_train_config_is_a_train_config() -> None:
    """The fake once returned the request itself where the engine returns a TrainConfig."""
    from crm_core.train import TrainConfig
    from demo.protocol import FineTuneRequest

    config = FakeEngine().training.config(FineTuneRequest(name="new-one", steps=3))
    assert isinstance(config, TrainConfig) and (config.name, config.steps) == ("new-one", 3)


def test_the_serving_policy_needs_only_the_standard_library() -> None:
    """demo.serving (bind check, logins, job book) is read by app.py before anything heavy loads and
    by the UI: it imports the standard library alone (docs/architecture.md's import table)."""
    import ast
    import sys

    tree = ast.parse((ROOT / "demo" / "serving.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.parametrize("old", ["crm_core.results", "crm_core.recipe_sweep", "crm_core.oracle", "crm_core.bench",
                                 "crm_core.bench.segment_step"])
def test_a_moved_cli_says_where_it_went_in_one_line(old: str) -> None:
    from crm_core.moved import MOVED

    package = next(o for o in MOVED if within(old, o))  # crm_core.bench.X: its package moved
    run = subprocess.run([sys.executable, "-m", old, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and run.stdout == ""
    message = f"{package} moved to {MOVED[package]}: run python -m {MOVED[package]}"
    assert run.stderr.strip() == message or run.stderr.strip().endswith(f"(ImportError: {message})")
    assert len(run.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert importlib_error(old) == message
    new = MOVED[package] + old[len(package):]  # the new module exists (its --help: test_crm_benchmark)
    assert (ROOT / (new.replace(".", "/") + ".py")).is_file() or (ROOT / new.replace(".", "/") / "__main__.py").is_file()


def importlib_error(module: str) -> str:
    """The ImportError an import of ``module`` raises, in a fresh interpreter."""
    code = f"try:\n import {module}\nexcept ImportError as e:\n print(e)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout.strip()
