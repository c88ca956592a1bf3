#!/usr/bin/env python3
"""Module dependencies of src/: which module refers to which (`crate::a::b` paths and
`super::` paths, resolved to files), at the level of top-level modules (`proxy`, `batch`,
...) and of files. Prints the top-level edges and every cycle. Exits 1 on a cycle between
top-level modules or between files, on an edge against the layering the architecture
promises, or on a `ProviderKind::` outside the provider registry (run by the test command):

    config, url, quota, errors, canonical      leaves: the file's language, shared types
    limits, providers, metrics, runtime,       the parts, configured by `config`
    telemetry, history,
    surfaces
    gateway                                    the call core over those parts
    batch                                      the batch module, a client of `gateway`
    state, proxy, admin, server                the process and its HTTP surfaces

Nothing below the last line may depend on anything in it (so `batch` never reaches
`proxy`, and the call core never sees Pingora's session or the process state).

    scripts/deps.py            # report; exit 1 on a cycle or a layering violation
    scripts/deps.py --edges    # also every file-level edge
"""
import os, re, sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

def module_of(path):
    """src/a/b.rs -> ['a','b']; src/a/mod.rs -> ['a']; #[path] children stay with their file."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    return rel

files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            files[tuple(module_of(p))] = p
modules = set(files)

def resolve(path):
    """The longest known module prefix of a path of segments."""
    for i in range(len(path), 0, -1):
        if tuple(path[:i]) in modules:
            return tuple(path[:i])
    return None

# A provider kind is matched in one place: the registry (providers/mod.rs) and the enum's
# own naming (config/schema.rs); anything else asks the `Provider` trait.
KIND_MATCH_ALLOWED = {("providers",), ("config", "schema"), ("config", "provider")}
kind_matches = []

edges = defaultdict(set)
ref = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
for mod, p in files.items():
    text = open(p).read()
    text = re.sub(r"//[^\n]*", "", text)  # comments and doc comments
    text = text.split("#[cfg(test)]")[0]  # unit tests may reach anywhere
    if "ProviderKind::" in text and mod not in KIND_MATCH_ALLOWED:
        kind_matches.append("/".join(mod))
    for m in ref.finditer(text):
        segs = m.group(2).split("::")[1:]
        if m.group(1) == "crate":
            target = resolve(segs)
        else:
            base = list(mod[:-1]) if not p.endswith("mod.rs") else list(mod[:-1])
            # `super::` from a file `a/b.rs` is `a`; from `a/mod.rs` it is the parent of a.
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            target = resolve(base + segs)
        if target and target != mod and not (mod[: len(target)] == target):
            edges[mod].add(target)

def top(m):
    return m[0] if m else "lib"

top_edges = defaultdict(set)
for a, bs in edges.items():
    for b in bs:
        if top(a) != top(b):
            top_edges[top(a)].add(top(b))

def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out

print("Top-level module dependencies:")
for a in sorted(top_edges):
    print(f"  {a} -> {', '.join(sorted(top_edges[a]))}")
bad = []
for c in cycles(top_edges):
    bad.append("cycle between modules: " + " <-> ".join(c))
file_graph = {"::".join(a): {"::".join(b) for b in bs} for a, bs in edges.items()}
for c in cycles(file_graph):
    bad.append("cycle between files: " + " <-> ".join(c))
for m in sorted(kind_matches):
    bad.append(f"provider kind matched outside the registry: src/{m} (add to the Provider trait instead)")
PROCESS = {"state", "proxy", "admin", "server"}
for a, bs in sorted(top_edges.items()):
    if a not in PROCESS and a != "lib":
        for b in sorted(bs & PROCESS):
            bad.append(f"layering: {a} depends on {b}")
if "--edges" in sys.argv:
    print("File-level edges:")
    for a in sorted(file_graph):
        print(f"  {a} -> {', '.join(sorted(file_graph[a]))}")
print("\n".join(bad) if bad else "No cycles between modules or files; only the process layer (state, proxy, admin, server) reaches the process layer.")
sys.exit(1 if bad else 0)
