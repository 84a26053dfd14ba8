"""The package's structure: imports run one way (no cycles, counting imports inside functions), and the
inference side (evaluate, export, serving) loads without Lightning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "genrec"


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: genrec modules it imports anywhere in its file}; importing a package counts as its __init__."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.startswith("genrec")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("genrec"):
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else owner(node.module)
                         for a in node.names}
        graph[name] = deps - {name, ""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "genrec"
    (pkg / "lit").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "lit" / "__init__.py").write_text("")
    (pkg / "pipeline.py").write_text("from genrec.lit.cli import main\n")
    (pkg / "lit" / "cli.py").write_text("def main():\n    from genrec.lit.data import X\n")
    (pkg / "lit" / "data.py").write_text("def f():\n    import genrec.pipeline\n")
    assert cycles(module_graph(pkg)) == [["genrec.lit.cli", "genrec.lit.data", "genrec.pipeline"]]


def test_genrec_modules_import_one_way():
    assert cycles(module_graph()) == []


def test_inference_side_does_not_import_lightning():
    code = ("import sys, genrec.evaluate, genrec.export, genrec.export.onnx, genrec.model.genrec; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


MAX_LINE = 120   # genrec/, bench/ and tests/ (nanoGPT/litgpt-style code stays readable side by side)


def test_package_bench_and_test_lines_fit_the_line_length():
    repo = PACKAGE.parent
    sources = [*PACKAGE.rglob("*.py"), *(repo / "bench").glob("*.py"), *(repo / "tests").rglob("*.py")]
    long = [f"{path.relative_to(repo)}:{n}: {len(line)} characters"
            for path in sorted(sources)
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if len(line) > MAX_LINE]
    assert not long, f"lines over {MAX_LINE} characters:\n" + "\n".join(long)
