"""The package's shape: no import cycles (counting imports inside functions), and no
compiled entry point with more than twelve arguments."""
import ast
import pathlib
import re

import fastfit

PACKAGE = pathlib.Path(fastfit.__file__).parent


def _imports(path, modules):
    """The package modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("fastfit")):
            base = (node.module or "").removeprefix("fastfit").lstrip(".") if node.level == 0 else (node.module or "")
            if base:
                found.add(base.split(".")[0])
            else:  # from . import a, b: modules, or names of the package itself
                for alias in node.names:
                    found.add(alias.name if alias.name in modules else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "fastfit":
                    found.add("__init__")
                elif alias.name.startswith("fastfit."):
                    found.add(alias.name.split(".")[1])
    return found & (modules | {"__init__"})


def test_the_import_graph_has_no_cycles():
    files = {p.stem: p for p in PACKAGE.glob("*.py")}
    modules = set(files) | {p.stem for p in PACKAGE.glob("*.pyx")}  # compiled: they import only NumPy and SciPy
    graph = {name: sorted(_imports(path, modules) - {name}) for name, path in files.items()}
    cycles, state = [], {}  # state: 1 on the current path, 2 finished

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles}"
    assert "distributed" not in graph["epochs"] and "training" not in graph["distributed"]


def test_no_compiled_entry_point_takes_more_than_twelve_arguments():
    source = (PACKAGE / "_core.pyx").read_text()
    for match in re.finditer(r"^(?:    )?def (\w+)\((.*?)\):", source, re.S | re.M):
        params = [p for p in match.group(2).replace("\n", " ").split(",") if p.strip() and p.strip() != "self"]
        assert len(params) <= 12, f"{match.group(1)} takes {len(params)} arguments"
