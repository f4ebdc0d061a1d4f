#!/usr/bin/env python3
"""The shape of the cxrgen package, from its source (no imports): which part imports which, cycles between parts,
imports of cxrgen's own modules inside functions, functions over 60 lines, modules over 700 lines.

    python .ci/structure.py            # the report
    python .ci/structure.py --check    # also exit 1 when a part-level cycle exists or a budget is exceeded

Parts: core, config, data, models, checkpoints, runs, testing, training, evaluation, inference, cli, demo
(a subpackage is one part; a top-level module is its own part).
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path.cwd() if (Path.cwd() / "cxrgen" / "__init__.py").is_file() else Path(__file__).resolve().parents[1]
PKG = ROOT / "cxrgen"
LONG_FUNCTION, LONG_MODULE = 60, 700
BUDGET = {"in-function imports": 12, "functions over 60 lines": 3, "modules over 700 lines": 0}


def module_name(p: Path) -> str:
    rel = p.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)


def part(mod: str) -> str:
    "cxrgen.evaluation.metrics -> evaluation; cxrgen.cli -> cli."
    bits = mod.split(".")
    return bits[1] if len(bits) > 1 else bits[0]


def resolve(mod: str, node: ast.ImportFrom | ast.Import, is_pkg: bool) -> list[str]:
    "The cxrgen modules an import statement names (relative imports made absolute)."
    if isinstance(node, ast.Import): return [a.name for a in node.names if a.name.split(".")[0] == "cxrgen"]
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else: target = node.module or ""
    if target.split(".")[0] != "cxrgen": return []
    subs = [f"{target}.{a.name}" for a in node.names]  # `from cxrgen import inference` names a module
    return [s for s in subs if (ROOT / Path(*s.split("."))).with_suffix(".py").exists()
            or (ROOT / Path(*s.split("."))).is_dir()] or [target]


def scan():
    edges, inner, long_fns, long_mods = defaultdict(set), [], [], []
    for p in sorted(PKG.rglob("*.py")):
        if p.name == "_modidx.py" or "hf_metrics" in p.parts: continue
        src = p.read_text()
        mod, is_pkg = module_name(p), p.name == "__init__.py"
        n_lines = src.count("\n") + 1
        if n_lines > LONG_MODULE: long_mods.append((mod, n_lines))
        tree = ast.parse(src)
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for f in funcs:
            n = f.end_lineno - f.lineno + 1
            if n > LONG_FUNCTION: long_fns.append((f"{mod}.{f.name}", n))
        in_func = {id(n) for f in funcs for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        lines = src.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)): continue
            for target in resolve(mod, node, is_pkg):
                if part(target) != part(mod) and target != "cxrgen": edges[part(mod)].add(part(target))  # `import cxrgen`: the version
                if id(node) in in_func:
                    inner.append((f"{mod}:{node.lineno}", target, lines[node.lineno - 1].split("#", 1)[1].strip()
                                  if "#" in lines[node.lineno - 1] else ""))
    return edges, inner, long_fns, long_mods


def cycles(edges: dict) -> list[tuple[str, str]]:
    "Pairs of parts that reach each other, directly or through other parts."
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    reach = {}
    for n in nodes:
        seen, todo = set(), [n]
        while todo:
            for t in edges.get(todo.pop(), ()):
                if t not in seen: seen.add(t); todo.append(t)
        reach[n] = seen
    return sorted({tuple(sorted((a, b))) for a in nodes for b in reach[a] if a != b and a in reach.get(b, ())})


def main(argv: list[str]) -> int:
    edges, inner, long_fns, long_mods = scan()
    print("import graph between parts (module-level and in-function imports):")
    for a in sorted(edges): print(f"  {a:12s} -> {', '.join(sorted(edges[a]))}")
    cyc = cycles(edges)
    direct = [(a, b) for a, b in cyc if b in edges.get(a, ()) and a in edges.get(b, ())]
    print(f"parts that import each other directly: {', '.join(f'{a} <-> {b}' for a, b in direct) or 'none'}")
    print(f"parts that reach each other through others: {', '.join(f'{a} <-> {b}' for a, b in cyc if (a, b) not in direct) or 'none'}")
    print(f"\nimports of cxrgen's own modules inside functions: {len(inner)} (budget {BUDGET['in-function imports']})")
    for where, target, why in inner: print(f"  {where:42s} {target:38s} {why}")
    print(f"\nfunctions over {LONG_FUNCTION} lines: {len(long_fns)} (budget {BUDGET['functions over 60 lines']})")
    for name, n in sorted(long_fns, key=lambda x: -x[1]): print(f"  {n:4d}  {name}")
    print(f"\nmodules over {LONG_MODULE} lines: {len(long_mods)}")
    for name, n in long_mods: print(f"  {n:4d}  {name}")
    if "--check" in argv:
        over = [k for k, v in (("in-function imports", len(inner)), ("functions over 60 lines", len(long_fns)),
                               ("modules over 700 lines", len(long_mods))) if v > BUDGET[k]]
        if cyc or over:
            print(f"\nstructure check failed: {'cycles ' + str(cyc) if cyc else ''} {'over budget: ' + ', '.join(over) if over else ''}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
