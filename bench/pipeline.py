#!/usr/bin/python3
"""Pipeline benchmark of issue 3: vipfarmd against dpdk-testpmd, same vdevs, same lcores,
same run.

The uplink of both is `net_pcap,rx_pcap=<pcap of thousands of flows>,infinite_rx=1`
(bench/gen_pcap.py: varied flows, so packets spread over all buckets, unlike net_null's).
Both run with `-l 0-1` (main lcore 0, one worker / forwarding lcore 1), `--no-huge -m 128`
as in the lab, inside a network namespace this script creates (the TAP and the metrics
port live there; the kernel's answers to the generated clients have no route out).

  scenario    vipfarmd                                 baseline (testpmd)
  drop        view {2,3}: owns nothing, all not_owner  rxonly: receive and free
  mixed       view {1,2,3}: a third to net_null        rxonly
  accept      view {1}: all to net_null                io: pcap -> net_null (no-rx=1)
  exception   view {1}: all into a real TAP            mac: pcap -> TAP, same addresses
  isolation   the mixed rate with a real TAP (the kernel saturated) / the drop rate with it
  forward     directed VIP, view {2,3}: every frame       macswap: pcap -> the same port
              forwarded to its owner's MAC (issue 7)

vipfarmd's rates come from its counters (admin API): drop and mixed its receive rate,
accept and exception what it handed to the exception port, forward what it forwarded (the
forward runs read a second pcap: IPv4 frames sent to the node's own MAC, as a directed
VIP's clients send them; both sides write their output to tx_pcap=/dev/null). testpmd's from its own
per-second port statistics. Each figure is the median of --seconds one-second samples;
each ratio the median over --rounds rounds, each round measuring every scenario once
(interleaved, so a noisy neighbour hits both sides). Prints a table; exits 1 when a
ratio is below its bound. Needs root, dpdk-testpmd (Debian's dpdk package) and a build.

  bench/pipeline.py [--build build] [--rounds 3] [--seconds 5] [--flows 4096]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTPMD = "dpdk-testpmd"
TAP = "vfbench0"
TAP_MAC = "02:00:00:be:0c:01"  # testpmd's TAP (vipfarmd's takes the uplink's MAC)
VIP4, VIP6, NODE = "10.99.0.100", "fd99::100", "10.99.0.1"
PCAP_PORT_MAC = "02:70:63:61:70:00"  # net_pcap's MAC for a port reading a file
EAL_COMMON = ["--no-huge", "-m", "128", "--no-pci", "-l", "0-1"]

CONFIG = """\
# Written by bench/pipeline.py: node 1 of a 3-node farm, uplink a pcap file.
[node]
id = 1
name = "bench1"
[cluster]
name = "bench"
buckets = 256
seed = 20261125
{nodes}
[[vip]]
address = "{vip4}"
[[vip]]
address = "{vip6}"
[[group]]
name = "web"
[[group.rule]]
proto = "tcp"
ports = "80,443"
key = "on_addr"
[dataplane]
uplink = "net_pcap0,rx_pcap={pcap},infinite_rx=1"
eal_args = {eal}
workers = 1
poll = "adaptive"
[exception]
name = "{tap}"
prefix = 24
[api]
socket = "{socket}"
[metrics]
listen = "127.0.0.1:9479"
# A view set moves buckets away while the pcap's flows are live (it replays them for
# ever): without a short window the node would keep serving them in the buckets it gave up
# (flow handoff), and the drop run would measure a node in the middle of a handoff.
[flows]
window = 1
"""

BOUNDS = {"drop": 0.75, "mixed": 0.75, "accept": 0.80, "exception": 0.90, "isolation": 0.90,
          "forward": 0.40}


class Bench:
    def __init__(self, args):
        self.args = args
        self.vipfarmd = os.path.join(args.build, "vipfarmd")
        self.vipfarmctl = os.path.join(args.build, "vipfarmctl")
        self.tmp = tempfile.mkdtemp(prefix="vfbench.")
        self.ns = "vfbench-%d" % os.getpid()
        self.prefixes = []
        self.procs = []
        self.rss_kib = None

    # --- set-up and teardown -------------------------------------------------------------
    def setup(self):
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.pcap = os.path.join(self.tmp, "flows.pcap")
        self.socket = os.path.join(self.tmp, "api.sock")
        self.config = os.path.join(self.tmp, "bench.toml")
        nodes = "".join('[[cluster.node]]\nid = %d\nname = "bench%d"\naddress = "10.99.0.%d"\n'
                        % (k, k, k) for k in (1, 2, 3))
        with open(self.config, "w") as f:
            f.write(CONFIG.format(nodes=nodes, vip4=VIP4, vip6=VIP6, pcap=self.pcap,
                                  eal=json.dumps(EAL_COMMON), tap=TAP, socket=self.socket))
        out = subprocess.run([self.vipfarmctl, "check-config", self.config], check=True,
                             capture_output=True, text=True).stdout
        macs = dict(re.findall(r"^\s*vip (\S+) mac (\S+)", out, re.M))
        subprocess.run([sys.executable, os.path.join(HERE, "gen_pcap.py"), "--count",
                        str(self.args.flows), "--vip4", VIP4, "--vmac4", macs[VIP4],
                        "--vip6", VIP6, "--vmac6", macs[VIP6], "-o", self.pcap], check=True)
        # The forward runs: the IPv4 VIP directed, every node's MAC known ahead, frames sent
        # to this node's own MAC, the uplink's output thrown away like testpmd's.
        self.pcap_fwd = os.path.join(self.tmp, "flows-node.pcap")
        self.config_fwd = os.path.join(self.tmp, "forward.toml")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_pcap.py"), "--count",
                        str(self.args.flows), "--vip4", VIP4, "--vmac4", PCAP_PORT_MAC,
                        "--vip6", VIP6, "--vmac6", macs[VIP6], "--v6-share", "0",
                        "-o", self.pcap_fwd], check=True)
        text = open(self.config).read()
        text = text.replace('address = "%s"\n' % VIP4, 'address = "%s"\nl2_mode = "directed"\n' % VIP4)
        for k in (1, 2, 3):
            text = text.replace('address = "10.99.0.%d"\n' % k,
                                'address = "10.99.0.%d"\nmac = "02:00:00:be:0c:%02x"\n' % (k, 0x10 + k))
        text = text.replace("rx_pcap=%s,infinite_rx=1" % self.pcap,
                            "rx_pcap=%s,tx_pcap=/dev/null,infinite_rx=1" % self.pcap_fwd)
        with open(self.config_fwd, "w") as f:
            f.write(text)
        subprocess.run([self.vipfarmctl, "check-config", self.config_fwd], check=True,
                       capture_output=True)

    def teardown(self):
        for p in self.procs:
            stop(p)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)
        for prefix in self.prefixes:
            shutil.rmtree("/var/run/dpdk/" + prefix, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def prefix(self):
        p = "vfbench-%d-%d" % (os.getpid(), len(self.prefixes))
        self.prefixes.append(p)
        return "--file-prefix=" + p

    def spawn(self, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + argv, **kw)
        self.procs.append(p)
        return p

    # --- vipfarmd ------------------------------------------------------------------------
    def api(self, request, deadline):
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(self.socket)
                    s.sendall((json.dumps(request) + "\n").encode())
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    return json.loads(data)
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("vipfarmd's admin API did not answer")
                time.sleep(0.05)

    def vipfarmd_rate(self, view, tap, counters, config=None):
        """Median per-second rate of the sum of `counters` (names, or a function of the
        counters reply) with this view."""
        argv = [self.vipfarmd, "--config", config or self.config]
        if not tap:
            argv.append("--bench-null-exception")
        log = open(os.path.join(self.tmp, "vipfarmd.log"), "a")
        p = self.spawn(argv + ["--", self.prefix()], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            reply = self.api({"cmd": "view", "set": view}, deadline)
            if not reply.get("ok"):
                raise RuntimeError("view set: %s" % reply)
            while self.api({"cmd": "status"}, deadline)["applied_generation"] < reply["generation"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers never applied the view")
                time.sleep(0.01)

            def sample():
                c = self.api({"cmd": "counters"}, time.monotonic() + 5)
                value = counters(c) if callable(counters) else sum(c[k] for k in counters)
                return time.monotonic(), value

            time.sleep(1.5)  # warm-up, and the handoff window of the view set (1 s) past
            rates, (t0, v0) = [], sample()
            for _ in range(self.args.seconds):
                time.sleep(1)
                t1, v1 = sample()
                rates.append((v1 - v0) / (t1 - t0))
                t0, v0 = t1, v1
            if tap:
                self.rss_kib = max(self.rss_kib or 0, vm_hwm_kib(p.pid))
            return statistics.median(rates)
        finally:
            stop(p)
            self.procs.remove(p)

    # --- testpmd -------------------------------------------------------------------------
    def testpmd_rate(self, mode, second_port, port, field):
        """Median of testpmd's per-second `field` (Rx-pps/Tx-pps) of `port`."""
        vdevs = ["--vdev=net_pcap0,rx_pcap=%s,infinite_rx=1" % self.pcap]
        if mode == "macswap":
            vdevs = ["--vdev=net_pcap0,rx_pcap=%s,tx_pcap=/dev/null,infinite_rx=1" % self.pcap_fwd]
        extra = []
        if second_port == "null":
            vdevs.append("--vdev=net_null0,no-rx=1")
        elif second_port == "tap":
            vdevs.append("--vdev=net_tap0,iface=%s,mac=%s" % (TAP, TAP_MAC))
            extra = ["--eth-peer=1,%s" % TAP_MAC]
        argv = ([TESTPMD] + EAL_COMMON + [self.prefix()] + vdevs +
                ["--", "--forward-mode=" + mode, "--nb-cores=1", "--stats-period=1",
                 "--total-num-mbufs=16384"] + extra)
        p = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       stdin=subprocess.DEVNULL)
        samples, lines = [], []
        ready_at = [None]

        def reader():
            current = None
            for line in p.stdout:
                lines.append(line)
                m = re.search(r"NIC statistics for port (\d+)", line)
                if m:
                    current = int(m.group(1))
                m = re.search(field + r":\s+(\d+)", line)
                if m and current == port and ready_at[0] and time.monotonic() > ready_at[0]:
                    samples.append(int(m.group(1)))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            if second_port == "tap":
                self.address_tap(time.monotonic() + 20)
            ready_at[0] = time.monotonic() + 1.5  # warm-up, and a full period after it
            deadline = time.monotonic() + self.args.seconds + 15
            while len(samples) < self.args.seconds:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError("testpmd gave %d samples:\n%s"
                                       % (len(samples), "".join(lines[-30:])))
                time.sleep(0.1)
            return statistics.median(samples[:self.args.seconds])
        finally:
            stop(p)
            self.procs.remove(p)
            t.join(timeout=5)

    def address_tap(self, deadline):
        """testpmd's TAP gets what vipfarmd puts on its own: the kernel's work is the same."""
        while subprocess.run(["ip", "-n", self.ns, "link", "show", TAP],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("testpmd's TAP never appeared")
            time.sleep(0.05)
        for cmd in (["addr", "add", NODE + "/24", "dev", TAP],
                    ["addr", "add", VIP4 + "/32", "dev", TAP],
                    ["-6", "addr", "add", VIP6 + "/64", "dev", TAP, "nodad"],
                    ["link", "set", TAP, "up"]):
            subprocess.run(["ip", "-n", self.ns] + cmd, check=True)

    # --- one round -----------------------------------------------------------------------
    def round(self, only):
        rx, tx = ["rx_packets"], ["exception_tx"]
        runs = {
            "rxonly": lambda: self.testpmd_rate("rxonly", None, 0, "Rx-pps"),
            "io_null": lambda: self.testpmd_rate("io", "null", 0, "Rx-pps"),
            "mac_tap": lambda: self.testpmd_rate("mac", "tap", 1, "Tx-pps"),
            "drop": lambda: self.vipfarmd_rate([2, 3], False, rx),
            "mixed": lambda: self.vipfarmd_rate([1, 2, 3], False, rx),
            "accept": lambda: self.vipfarmd_rate([1], False, tx),
            "exception": lambda: self.vipfarmd_rate([1], True, tx),
            "drop_tap": lambda: self.vipfarmd_rate([2, 3], True, rx),
            "mixed_tap": lambda: self.vipfarmd_rate([1, 2, 3], True, rx),
            "macswap": lambda: self.testpmd_rate("macswap", None, 0, "Tx-pps"),
            "forward": lambda: self.vipfarmd_rate(
                [2, 3], False, lambda c: sum(c["directed"]["forwarded"].values()),
                self.config_fwd),
        }
        return {k: run() for k, run in runs.items() if not only or k in only}


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_PIPELINE_ROUNDS", 3)))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_PIPELINE_SECONDS", 5)))
    ap.add_argument("--flows", type=int, default=4096)
    ap.add_argument("--only", default="", help="comma-separated runs (rxonly, io_null, mac_tap, "
                    "drop, mixed, accept, exception, drop_tap, mixed_tap, macswap, forward), "
                    "when tuning")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    if shutil.which(TESTPMD) is None:
        sys.exit("pipeline: %s not found (Debian's dpdk package; scripts/setup installs it)" % TESTPMD)
    bench = Bench(args)
    rounds = []
    try:
        bench.setup()
        for i in range(args.rounds):
            rounds.append(bench.round(only))
            print("round %d: %s" % (i + 1, ", ".join("%s %.2f" % (k, v / 1e6)
                                                     for k, v in rounds[-1].items())),
                  file=sys.stderr)
    finally:
        bench.teardown()

    def med(key):
        return statistics.median(r[key] for r in rounds)

    def ratio(num, den):
        return statistics.median(r[num] / r[den] for r in rounds)

    rows = [("drop", "drop", "testpmd rxonly", "rxonly"),
            ("mixed", "mixed", "testpmd rxonly", "rxonly"),
            ("accept", "accept", "testpmd io pcap->null", "io_null"),
            ("exception", "exception", "testpmd mac pcap->TAP", "mac_tap"),
            ("isolation", "mixed_tap", "vipfarmd drop, TAP", "drop_tap"),
            ("forward", "forward", "testpmd macswap", "macswap")]
    print("pipeline: vipfarmd vs dpdk-testpmd, %d flows, lcores 0-1, median of %d rounds x %d s"
          % (args.flows, args.rounds, args.seconds))
    print("%-10s %14s  %-22s %14s %7s %7s" % ("path", "vipfarmd Mpps", "baseline",
                                              "baseline Mpps", "ratio", "bound"))
    missed = []
    for name, ours, label, base in rows:
        if ours not in rounds[0] or base not in rounds[0]:
            continue
        q = ratio(ours, base)
        if q < BOUNDS[name]:
            missed.append(name)
        print("%-10s %14.2f  %-22s %14.2f %7.2f %7s" % (name, med(ours) / 1e6, label,
                                                        med(base) / 1e6, q,
                                                        ">=%.2f" % BOUNDS[name]))
    if bench.rss_kib:
        print("vipfarmd RSS (peak, TAP runs, --no-huge -m 128): %.1f MiB" % (bench.rss_kib / 1024))
    if missed:
        print("pipeline: below the bound: %s" % ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
