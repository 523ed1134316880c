"""No import circle between any two modules of cascade, models, service and training (issue 13).

``make lint-imports`` checks the same at package level ([tool.importlinter] ``acyclic_siblings``); this test
checks module by module with grimp (import-linter's graph), so a plain ``pytest`` run catches a circle too.
Imports under ``if TYPE_CHECKING:`` and imports inside functions count: a circle only type checkers or a lazy
import walk is still a circle.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

PACKAGES = ("cascade", "models", "service", "training")


def import_cycles(graph: grimp.ImportGraph) -> list[str]:
    """Every import ``a -> b`` of the graph for which ``b`` leads back to ``a``, as ``a -> b -> ... -> a``."""
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.append(" -> ".join((module, *chain)))
    return cycles


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)  # TYPE_CHECKING and function-level imports included
    assert len(graph.modules) > 100, "grimp found too few modules: are the packages importable?"
    assert import_cycles(graph) == []


@pytest.mark.parametrize(
    "back_import",
    [
        "from cycle_probe.a import A\n",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from cycle_probe.a import A\n",
        "def lazy():\n    from cycle_probe.a import A\n\n    return A\n",
    ],
    ids=["plain", "type-checking", "lazy"],
)
def test_a_circle_is_found_however_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, back_import: str
) -> None:
    package = tmp_path / "cycle_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cycle_probe.b import B\n\n\nclass A:\n    pass\n")
    (package / "b.py").write_text(back_import + "\n\nclass B:\n    pass\n")
    (package / "c.py").write_text("from cycle_probe.a import A\n")  # one way: no circle
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cycle_probe", cache_dir=None)
    assert import_cycles(graph) == [
        "cycle_probe.a -> cycle_probe.b -> cycle_probe.a",
        "cycle_probe.b -> cycle_probe.a -> cycle_probe.b",
    ]
