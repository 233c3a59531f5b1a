#!/usr/bin/python3
"""End to end through the uplink kinds a kernel-interface farm can use (issue 16, item 2):
the lab's 3-node farm (tests/lab/labfarm.py: network namespaces, nginx on every node) with
its uplink set to each candidate in turn, wrk from the client namespace to the IPv4 VIP,
1 thread, 64 connections, with keep-alive and with a new connection per request. Rounds are
interleaved (A B C A B C ...), a fresh farm for each measurement; medians are printed with
the ratio to the first candidate, and the CPU the three vipfarmd used.

  /usr/bin/python3 bench/uplink.py [--rounds 3] [--seconds 10] [--build build]
      [--uplink NAME=DEVARGS ...]   (default: af_packet, af_xdp with and without
      busy_budget=0, pcap)

Needs root, nginx and wrk (scripts/setup installs them). Label the figures with the CPU
(`lscpu`): they are printed with it.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import labfarm  # noqa: E402

CANDIDATES = [
    ("af_packet", "net_af_packet0,iface=uplink"),
    ("af_xdp", "net_af_xdp0,iface=uplink,busy_budget=0"),
    ("af_xdp_busy", "net_af_xdp0,iface=uplink"),
    ("pcap", "net_pcap0,iface=uplink,phy_mac=1"),
]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(f, seconds, close):
    cmd = ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "--timeout", "2s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = f.in_client(*cmd, f"http://{labfarm.VIP4}/", timeout=seconds + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, float(p99.group(1)) * scale, (errors.group(1) if errors else ""), \
        int(non2xx.group(1)) if non2xx else 0


def measure(name, uplink, args):
    text = open(os.path.join(ROOT, "conf", "lab.toml"), encoding="utf-8").read()
    text, n = re.subn(r'(?m)^uplink = "[^"]*"', f'uplink = "{uplink}"', text)
    assert n == 1, "conf/lab.toml: expected one uplink line"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as conf:
        conf.write(text)
    f = labfarm.Farm(3, config=conf.name,
                     vipfarmd=os.path.join(args.build, "vipfarmd"),
                     vipfarmctl=os.path.join(args.build, "vipfarmctl"))
    try:
        f.up()
        result = {}
        for close in (False, True):
            pids = [f.daemon_pid(k) for k in f.all_nodes()]
            cpu0 = sum(cpu_seconds(p) for p in pids)
            rps, p99, errors, non2xx = wrk(f, args.seconds, close)
            cpu = (sum(cpu_seconds(p) for p in pids) - cpu0) / args.seconds
            result["close" if close else "keepalive"] = (rps, p99, cpu, errors, non2xx)
        return result
    finally:
        f.down()
        os.unlink(conf.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--uplink", action="append", default=[], help="NAME=DEVARGS")
    args = ap.parse_args()
    candidates = [tuple(u.split("=", 1)) for u in args.uplink] or CANDIDATES
    model = re.search(r"Model name:\s+(.*)", subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout)
    cpu = f"{model.group(1).strip() if model else '?'}, {os.cpu_count()} CPUs"
    runs = {name: [] for name, _ in candidates}
    for r in range(args.rounds):
        for name, uplink in candidates:
            got = measure(name, uplink, args)
            runs[name].append(got)
            for mode, (rps, p99, used, errors, non2xx) in got.items():
                print(f"round {r + 1} {name:10} {mode:9} {rps:9.0f} req/s  p99 {p99:6.2f} ms  "
                      f"vipfarmd {used * 100:4.0f} % CPU  {errors} {non2xx or ''}", flush=True)
    print(f"\nmedians of {args.rounds} rounds, {args.seconds} s each, wrk -t1 -c64, on {cpu}:")
    base = candidates[0][0]
    for mode in ("keepalive", "close"):
        ref = statistics.median(g[mode][0] for g in runs[base])
        for name, uplink in candidates:
            rps = statistics.median(g[mode][0] for g in runs[name])
            p99 = statistics.median(g[mode][1] for g in runs[name])
            used = statistics.median(g[mode][2] for g in runs[name])
            print(f"  {mode:9} {name:10} {rps:9.0f} req/s  ({rps / ref:4.2f} x {base})  "
                  f"p99 {p99:6.2f} ms  vipfarmd {used * 100:4.0f} % CPU   [{uplink}]")


if __name__ == "__main__":
    main()
