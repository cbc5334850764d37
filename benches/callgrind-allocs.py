#!/usr/bin/env python3
"""Allocations per request from a callgrind profile, in total and under edgegate's hooks.

    benches/compare/instr.py --keep-tmp 'plain=target/release/edgegate run -c benches/proxybench.yaml@19091'
    benches/callgrind-allocs.py /tmp/instr.*/cg.plain.*.1 20000

Counts calls into the allocator's entry points (mimalloc's, or glibc's for a vanilla build). A call is
attributed to the hooks in proportion to how often each caller is itself reached from a
`ProxyHttp` hook of edgegate (callgrind records caller -> callee counts, not whole stacks), so a
helper that Pingora and our hooks both call is split between them.
"""
import collections
import re
import sys

ALLOCATOR = re.compile(
    r"^(mi_malloc|mi_malloc_aligned|mi_zalloc|mi_zalloc_aligned|mi_calloc|mi_realloc|"
    r"mi_realloc_aligned|mi_new\w*|malloc|calloc|realloc|__libc_malloc|__libc_calloc|__libc_realloc)$"
)
HOOK = re.compile(
    r"edgegate::gateway::Gateway as pingora_proxy::proxy_trait::ProxyHttp>::"
    r"|drop_in_place<edgegate::gateway::ctx::RequestCtx>"
)


def call_edges(path):
    """(caller, callee) -> number of calls, from a callgrind output file."""
    names, edges = {}, collections.Counter()

    def name(token):
        match = re.match(r"\((\d+)\)(?: (.*))?", token)
        if not match:
            return token
        if match.group(2) is not None:
            names[match.group(1)] = match.group(2)
        return names.get(match.group(1), token)

    caller = callee = None
    with open(path, errors="replace") as lines:
        for line in lines:
            if line.startswith("fn="):
                caller = name(line[3:].rstrip("\n"))
            elif line.startswith("cfn="):
                callee = name(line[4:].rstrip("\n"))
            elif line.startswith("calls="):
                edges[(caller, callee)] += int(line[6:].split()[0])
    return edges


def bare(function):
    """The function's name without callgrind's `file:` prefix and ` [object]` suffix."""
    return function.split(" [")[0].split(":")[-1]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, requests = sys.argv[1], int(sys.argv[2])
    edges = call_edges(path)
    callers = collections.defaultdict(list)
    for (caller, callee), calls in edges.items():
        callers[callee].append((caller, calls))
    functions = {f for edge in edges for f in edge}
    ours = {f: 1.0 if HOOK.search(f) else 0.0 for f in functions}
    for _ in range(60):  # propagate down the call graph until it settles
        for function in functions:
            if HOOK.search(function) or not callers[function]:
                continue
            total = sum(calls for _, calls in callers[function])
            if total:
                ours[function] = sum(calls * ours[c] for c, calls in callers[function]) / total
    total = mine = 0.0
    by_caller = collections.Counter()
    for function in functions:
        if not ALLOCATOR.match(bare(function)):
            continue
        for caller, calls in callers[function]:
            if ALLOCATOR.match(bare(caller)):
                continue  # the allocator calling itself
            total += calls
            mine += calls * ours[caller]
            by_caller[caller.split(" [")[0]] += calls * ours[caller]
    print(f"allocation calls per request: {total / requests:.1f}; under edgegate's hooks: {mine / requests:.1f}")
    for caller, calls in by_caller.most_common(20):
        if calls / requests >= 0.05:
            print(f"  {calls / requests:6.2f}  {caller[:150]}")


if __name__ == "__main__":
    main()
