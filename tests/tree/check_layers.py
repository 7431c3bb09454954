#!/usr/bin/env python3
"""The source tree's layering, checked: every #include goes down (or sideways within a layer), never up,
and no two modules include each other's headers in a cycle.

Layers, lowest first (CMakeLists.txt links them in this order): core model store fit sae config eval run cli.
A module is a header include/resae/NAME.h with its src/<layer>/NAME.c (or a header-only module, whose
layer is given below); a file's layer is its folder. Local headers ("arch.h") must sit in the including
file's own folder.

usage: check_layers.py [REPO_ROOT]   (exit 1 and one line per violation on failure)
"""
import os
import re
import sys

LAYERS = ["core", "model", "store", "fit", "sae", "config", "eval", "run", "cli"]
HEADER_ONLY = {"version": "core", "rng": "core", "cli": "cli"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    src, inc = os.path.join(root, "src"), os.path.join(root, "include", "resae")
    errors = []
    layer_of = dict(HEADER_ONLY)  # module name -> layer
    files = []  # (path, layer, module)
    for layer in sorted(os.listdir(src)):
        d = os.path.join(src, layer)
        if not os.path.isdir(d):
            errors.append(f"src/{layer}: a file outside the layer folders")
            continue
        if layer not in LAYERS:
            errors.append(f"src/{layer}/: not a layer ({' '.join(LAYERS)}); add it to the list here and in CMakeLists.txt")
            continue
        for f in sorted(os.listdir(d)):
            name, ext = os.path.splitext(f)
            if ext not in (".c", ".h"):
                continue
            files.append((os.path.join(d, f), layer, name))
            if ext == ".c":
                if name in layer_of and layer_of[name] != layer:
                    errors.append(f"src/{layer}/{f}: module {name} also lives in {layer_of[name]}")
                layer_of[name] = layer
    for f in sorted(os.listdir(inc)):
        name = os.path.splitext(f)[0]
        if name not in layer_of:
            errors.append(f"include/resae/{f}: no src/<layer>/{name}.c; name its layer in HEADER_ONLY")
            continue
        files.append((os.path.join(inc, f), layer_of[name], name))

    edges = {}  # module -> set of modules whose headers it includes
    for path, layer, module in files:
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        for target in INCLUDE.findall(text):
            if target.startswith("resae/"):
                dep = os.path.splitext(target[len("resae/"):])[0]
                if dep not in layer_of:
                    errors.append(f"{rel}: includes {target}, which is no module")
                    continue
                if LAYERS.index(layer_of[dep]) > LAYERS.index(layer):
                    errors.append(f"{rel} ({layer}) includes {target} ({layer_of[dep]}): against the layer order")
                if dep != module:
                    edges.setdefault(module, set()).add(dep)
            elif not os.path.exists(os.path.join(os.path.dirname(path), target)):
                errors.append(f'{rel}: includes "{target}", which is not in its own folder')

    # cycles between modules (depth-first search, reporting each cycle once)
    state, stack, seen_cycles = {}, [], set()

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                cyc = stack[stack.index(n):] + [n]
                key = frozenset(cyc)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    errors.append("include cycle: " + " -> ".join(cyc))
            elif not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m)

    for e in errors:
        print(e)
    nmod = len({m for _, _, m in files})
    print(f"layers: {len(files)} files, {nmod} modules, {len(errors)} violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
