#!/usr/bin/env python3
"""The module graph of a Rust crate, from its source: one node per file, an edge for every `mod` declaration
and every `crate::`/`super::`/`self::` path a file uses (in `use` lines and in code, tests left out). Fails when
the graph has a cycle — two files that import each other, directly or through others, including a file that
imports its own folder's mod.rs (which declares it).

    tools/module-graph.py src                 check the operator crate; print a summary
    tools/module-graph.py keyward-dev/src     the same for the developer tools
    tools/module-graph.py src --edges         also print every edge
    tools/module-graph.py src --dot > g.dot   the graph for Graphviz
"""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
TESTS = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+tests\s*\{", re.M)


def module_of(root, path):
    """The module path (list of names) of a file under root."""
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main") and len(rel) == 1:
        return []
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def file_of(root, module):
    """The file that defines a module path, or None."""
    if not module:
        for name in ("lib.rs", "main.rs"):
            if os.path.exists(os.path.join(root, name)):
                return os.path.join(root, name)
        return None
    base = os.path.join(root, *module)
    for candidate in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.exists(candidate):
            return candidate
    return None


def strip(text):
    """The code without comments, strings and the unit-test module."""
    m = TESTS.search(text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def resolve(root, here, head, rest):
    """The deepest module file a path reaches, starting from `here` (a module path)."""
    names = [n for n in rest.split("::") if n]
    if head == "crate":
        base = []
    elif head == "super":
        base = here[:-1]
        while names and names[0] == "super":
            base, names = base[:-1], names[1:]
    else:
        base = list(here)
    target = file_of(root, base)
    module = list(base)
    for name in names:
        found = file_of(root, module + [name])
        if not found:
            break
        module.append(name)
        target = found
    return target


def graph(root):
    files = []
    for d, _, names in os.walk(root):
        files += [os.path.join(d, n) for n in names if n.endswith(".rs")]
    edges = {f: set() for f in files}
    for f in files:
        here = module_of(root, f)
        if os.path.basename(f) in ("lib.rs", "main.rs", "mod.rs"):
            pass
        text = strip(open(f, encoding="utf-8").read())
        for name in MOD_DECL.findall(text):
            child = file_of(root, here + [name])
            if child:
                edges[f].add(child)
        uses = [(h, r) for h, r in PATH.findall(text)]
        for h, prefix, group in USE_GROUP.findall(text):
            for item in re.split(r",", group):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self" and re.match(r"^[A-Za-z_][A-Za-z0-9_:]*$", item):
                    uses.append((h, prefix + "::" + item))
        for h, r in uses:
            target = resolve(root, here, h, r)
            if target and target != f:
                edges[f].add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip())
        return 2
    root = argv[1]
    edges = graph(root)
    found = cycles(edges)
    if "--dot" in argv:
        print("digraph modules {")
        for f in sorted(edges):
            for t in sorted(edges[f]):
                print(f'  "{os.path.relpath(f, root)}" -> "{os.path.relpath(t, root)}";')
        print("}")
        return 1 if found else 0
    if "--edges" in argv:
        for f in sorted(edges):
            for t in sorted(edges[f]):
                print(f"{os.path.relpath(f, root)} -> {os.path.relpath(t, root)}")
    n = sum(len(t) for t in edges.values())
    for comp in found:
        print("module-graph: import cycle: " + " -> ".join(os.path.relpath(f, root) for f in comp), file=sys.stderr)
    print(f"module-graph: {root}: {len(edges)} files, {n} imports, {len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
