#!/usr/bin/env python3
"""Summarises the file `rpc_bench --latencies PATH` writes: for each run of
`lat`, in order, its system, p50, p99 and p999 in microseconds, and the share
of calls slower than p50 + 35 us (calls that waited for one more wake-up of a
thread, on the machines in docs/BENCHMARKS.md).

    python3 benches/rpc_bench/tail.py PATH
"""
import sys

def report(system, latencies):
    if not latencies:
        return
    ordered = sorted(latencies)
    at = lambda q: ordered[int(q * (len(ordered) - 1))]
    p50 = at(0.50)
    slow = sum(1 for latency in latencies if latency > p50 + 35) / len(latencies)
    print(f"{system:9} p50 {p50:6.1f}  p99 {at(0.99):6.1f}  p999 {at(0.999):6.1f}  slower than p50 + 35 us: {slow:6.1%}")

system, latencies = "?", []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        report(system, latencies)
        system, latencies = line[1:].strip(), []
    else:
        latencies.append(int(line) / 1000)
report(system, latencies)
