"""The network-namespace lab farm in Python: tests/lab/lib.sh's lab_up, lab_start_daemons,
lab_wait_ready, lab_start_nginx, lab_client_addrs and lab_down, ported for the pytest lab.

Same topology, names, addresses, MACs and node configs as lib.sh (DESIGN.md, "Lab"):

  vflab-<S>-switch: bridge vf<S>br (no address, floods unknown unicast: the switch)
                     ├─ vf<S>c  ── veth ── lab0    in vflab-<S>-client (10.77.0.250/16)
                     ├─ vf<S>n1 ── veth ── uplink  in vflab-<S>-node1 (vipfarmd, nginx)
                     └─ ...

Everything the farm creates is registered before it is created and removed by down(), which
is idempotent and never raises: every process it started (by PID, never by name), whatever
else still runs inside its namespaces, the namespaces (and with them the bridge, the veths
and every nftables table in them), the DPDK runtime directories and the temp dir. Needs
root and Debian's python3 (/usr/bin/python3, tomllib).
"""
import ctypes
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAB_PY = "/usr/bin/python3"
VIP4 = "10.77.0.100"
VIP6 = "fd77::100"
CLIENT4 = "10.77.0.250"
CLIENT6 = "fd77::250"
CLIENT_IF = "lab0"
CLIENT_MAC = "02:77:00:00:00:fa"
TAP = "vipfarm0"
HB_PORT = 9470          # conf/lab.toml's [membership] port (the default)
METRICS_PORT = 9469     # [metrics] listen's default: the node's own address, this port
READY_TIMEOUT = float(os.environ.get("LAB_READY_TIMEOUT", "20"))
STOP_TIMEOUT = float(os.environ.get("LAB_STOP_TIMEOUT", "3"))

# Every farm that is up, for the last-resort teardown (atexit) of the conftest.
LIVE = []
# Lines tests want in the run's summary (the nemesis figures): conftest prints them last.
SUMMARY = []


def node_mac(k):
    """Node k's uplink MAC as the lab sets it; vipfarmd gives its TAP this address, so it is
    the source of every frame the node's kernel sends (the uplink's kernel side is renamed
    to another MAC when the daemon takes it)."""
    return "02:77:00:00:01:%02x" % k


def link_mac(ns, iface):
    """The MAC of IFACE in network namespace NS, lower case."""
    return json.loads(run("ip", "-n", ns, "-j", "link", "show", "dev", iface))[0]["address"]


class InNetns(threading.Thread):
    """fn(*args) run in a thread that entered network namespace ns (setns affects only the
    calling thread): sockets it opens live there. result() joins it and returns fn's value
    or raises what fn raised."""

    CLONE_NEWNET = 0x40000000

    def __init__(self, ns, fn, *args):
        super().__init__(daemon=True)
        self.ns, self.fn, self.args = ns, fn, args
        self.value, self.error = None, None

    def run(self):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, self.CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns {self.ns}: {os.strerror(e)}")
            finally:
                os.close(fd)
            self.value = self.fn(*self.args)
        except BaseException as e:  # re-raised by result()
            self.error = e

    def result(self, timeout=None):
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"the thread in {self.ns} did not end within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.value


def packet_socket(ifname):
    """A packet socket on IFNAME (in the calling thread's namespace) for every protocol,
    with a 4 MiB receive buffer (read while sending: a full buffer drops frames)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    try:
        s.bind((ifname, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    except BaseException:
        s.close()
        raise
    return s


def received(sock, until):
    """The frames SOCK receives until the monotonic time UNTIL, as bytes (not those its
    interface sends)."""
    while True:
        left = until - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        data, addr = sock.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            yield data


def in_netns(ns, fn, *args):
    """fn(*args) in network namespace ns (InNetns), waited for; its value."""
    t = InNetns(ns, fn, *args)
    t.start()
    return t.result()


def client_addr(i, family=4):
    """The i-th (1-based) extra client source address of the family (4 or 6), as lib.sh's
    lab_client_addrs."""
    if family == 6:
        return "fd77::1:%x" % i
    return "10.77.%d.%d" % (1 + i // 256, i % 256)


def thread_state(tid):
    """The state letter of a process or thread in /proc ('T' stopped, 't' stopped by its
    tracer), "gone" when there is none."""
    try:
        with open(f"/proc/{tid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def alive(pid):
    """PID runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run(*cmd, check=True, timeout=30, input=None):
    """Run a command, return its stdout; raise with its stderr when check and it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def wait_for(cond, timeout, interval=0.05):
    """Call cond() until it returns a true value (returned) or timeout seconds pass (None)."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def parse_prometheus(text):
    """Prometheus text format -> {(name, ((label, value), ...)): float}."""
    out = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            continue
        labels = tuple(sorted(label_re.findall(m.group(3) or "")))
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        out[(m.group(1), labels)] = value
    return out


def metric(samples, name, **labels):
    """One sample of parse_prometheus's result (None when absent)."""
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def set_toml_key(text, section, key, value):
    """text with `key = value` in the single table [section] (replaced, or added first)."""
    head = re.search(r"(?m)^\[" + re.escape(section) + r"\][^\n]*\n", text)
    if not head:
        return text + f"\n[{section}]\n{key} = {_toml_value(value)}\n"
    end = re.compile(r"(?m)^\s*\[").search(text, head.end())
    end = end.start() if end else len(text)
    body = text[head.end():end]
    body, n = re.subn(r"(?m)^(\s*" + re.escape(key) + r"\s*=).*$",
                      lambda m: f"{m.group(1)} {_toml_value(value)}", body, count=1)
    if n == 0:
        body = f"{key} = {_toml_value(value)}\n" + body
    return text[:head.end()] + body + text[end:]


class ThreadFreeze:
    """One thread of another process held stopped with ptrace (PTRACE_SEIZE + INTERRUPT),
    the rest of its process running: SIGSTOP cannot do that (a stop signal stops the whole
    thread group). Released by release(), or by the kernel when this process exits."""

    PTRACE_DETACH = 17
    PTRACE_SEIZE = 0x4206
    PTRACE_INTERRUPT = 0x4207
    WALL = 0x40000000

    def __init__(self, tid):
        self.tid = tid
        self.held = False
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.ptrace.restype = ctypes.c_long
        self._libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_void_p]

    def _ptrace(self, req):
        if self._libc.ptrace(req, self.tid, None, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"ptrace({req:#x}, {self.tid}): {os.strerror(e)}")

    def hold(self):
        self._ptrace(self.PTRACE_SEIZE)
        self.held = True
        self._ptrace(self.PTRACE_INTERRUPT)
        os.waitpid(self.tid, self.WALL)  # the interrupt stop

    def state(self):
        return thread_state(self.tid)

    def release(self):
        if self.held:
            self.held = False
            try:
                self._ptrace(self.PTRACE_DETACH)
            except OSError:
                pass  # the thread is gone


class Farm:
    """A lab farm of n nodes, split_brain mode, config overrides `section__key=value`
    (e.g. membership__interval_ms=100). up() builds and starts it; down() removes it."""

    def __init__(self, n=3, split_brain="serve", config=None, vipfarmd=None, vipfarmctl=None,
                 plain=False, flood=True, **overrides):
        if not 1 <= n <= 64:
            raise ValueError(f"n must be 1..64, got {n}")
        self.n = n
        # plain: the links as a user makes them from the README alone (issue 16): the bridge,
        # the veths and the client at their defaults (kernel-chosen MACs, IPv6 on, duplicate
        # address detection run), nothing but what the README says to do. flood=False: the
        # switch floods no unknown unicast to the nodes' ports (directed mode's switch).
        self.plain = plain
        self.flood = flood
        self.macs = {}           # k -> node k's uplink MAC (lib.sh's fixed ones unless plain)
        self.split_brain = split_brain
        self.overrides = overrides
        self.vipfarmd = os.path.abspath(vipfarmd or os.environ.get("VIPFARMD") or
                                        os.path.join(ROOT, "build", "vipfarmd"))
        self.vipfarmctl = os.path.abspath(vipfarmctl or os.environ.get("VIPFARMCTL") or
                                          os.path.join(ROOT, "build", "vipfarmctl"))
        self.config = os.path.abspath(config or os.environ.get("LAB_CONFIG") or
                                      os.path.join(ROOT, "conf", "lab.toml"))
        self.sfx = os.environ.get("LAB_SUFFIX") or secrets.token_hex(3)
        if not re.fullmatch(r"[a-z0-9]{1,6}", self.sfx):
            raise ValueError(f"LAB_SUFFIX must be 1-6 of [a-z0-9], got {self.sfx!r}")
        self.bridge = f"vf{self.sfx}br"
        self.switch_ns = f"vflab-{self.sfx}-switch"
        self.client_ns = f"vflab-{self.sfx}-client"
        self.client_veth = f"vf{self.sfx}c"
        self.node_ns = {k: f"vflab-{self.sfx}-node{k}" for k in range(1, n + 1)}
        self.node_veth = {k: f"vf{self.sfx}n{k}" for k in range(1, n + 1)}
        self.dir = None
        self.key = None
        self.node_conf = {}
        self.daemons = {}        # k -> Popen of the running vipfarmd
        self.daemon_status = {}  # k -> exit status of its last daemon
        self.daemon_log = {}
        self.nginx = {}          # k -> Popen of nginx's master
        self.spawned = []        # other processes (prober, flooder)
        self.freezes = []        # ThreadFreeze objects still holding a thread
        self.client_addrs = []   # added by add_client_addrs, IPv4
        self.client_addrs6 = []  # and IPv6
        self._netns = []         # created, in creation order
        self._strays = []        # PIDs down() found still inside the namespaces
        self._started = []       # PID of every process started, for leftovers()
        self._eal_prefixes = []
        self._up = False

    # --- building ------------------------------------------------------------------------
    def up(self, start=True):
        """Topology and configs; with start, daemons and nginx too, converged on the full
        view. On any error (or an interrupt) the partial farm is removed before raising."""
        if os.geteuid() != 0:
            raise RuntimeError("the lab needs root (network namespaces)")
        for tool in ("ip", "ethtool", "nft", "nginx", "ss", "curl", "tcpdump"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not found (scripts/setup installs it)")
        for binary in (self.vipfarmd, self.vipfarmctl):
            if not os.access(binary, os.X_OK):
                raise RuntimeError(f"no {binary} (make build, or set VIPFARMD / VIPFARMCTL)")
        names = [self.bridge, self.switch_ns, self.client_ns, self.client_veth]
        names += list(self.node_ns.values()) + list(self.node_veth.values())
        taken = [x for x in names if os.path.exists(f"/run/netns/{x}") or
                 subprocess.run(["ip", "link", "show", "dev", x], capture_output=True).returncode == 0]
        if taken:
            raise RuntimeError(f"names of lab {self.sfx} already exist: {taken} (a leftover run?)")
        self._up = True
        LIVE.append(self)
        try:
            self._build()
            if start:
                self.start_daemons()
                self.wait_ready()
                self.start_nginx()
                if not self.wait_one_view(20):
                    raise RuntimeError(f"the farm did not agree on the view {self.all_nodes()} "
                                       f"within 20 s: {self.views()}")
        except BaseException:
            sys.stderr.write(self.dump())
            self.down()
            raise
        return self

    def _build(self):
        self.dir = tempfile.mkdtemp(prefix=f"vipfarm-lab-{self.sfx}.")
        self.key = os.path.join(self.dir, "cluster.key")
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32))
        os.close(fd)
        self.base_config = os.path.join(self.dir, "lab-base.toml")
        text = open(self.config, encoding="utf-8").read()
        if self.split_brain != "serve":
            if text.count('split_brain = "serve"') != 1:
                raise RuntimeError(f'{self.config}: expected one split_brain = "serve"')
            text = text.replace('split_brain = "serve"', f'split_brain = "{self.split_brain}"')
        for name, value in self.overrides.items():
            section, _, key = name.rpartition("__")
            if not section:
                raise ValueError(f"override {name!r}: use section__key=value")
            text = set_toml_key(text, section.replace("__", "."), key, value)
        tomllib.loads(text)
        with open(self.base_config, "w", encoding="utf-8") as f:
            f.write(text)

        # The switch, in a namespace of its own (lib.sh: the host's bridge netfilter never
        # sees lab frames); no STP, no multicast snooping, no IPv6 on its links.
        self._add_ns(self.switch_ns)
        run("ip", "netns", "exec", self.switch_ns, "sh", "-c",
            "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e \"$f\" ] && echo 0 >\"$f\"; done; true")
        if self.plain:
            run("ip", "-n", self.switch_ns, "link", "add", "name", self.bridge, "type", "bridge")
        else:
            run("ip", "-n", self.switch_ns, "link", "add", "name", self.bridge, "type", "bridge",
                "stp_state", "0", "mcast_snooping", "0")
            self._no_ipv6(self.bridge, self.switch_ns)
        run("ip", "-n", self.switch_ns, "link", "set", "dev", self.bridge, "up")

        self._add_ns(self.client_ns)
        self._add_veth(self.client_veth, self.client_ns, CLIENT_IF, CLIENT_MAC)
        # A real client's NIC fills in the TCP/UDP checksums; so does this one's (lib.sh).
        run("ip", "netns", "exec", self.client_ns, "ethtool", "-K", CLIENT_IF, "tx", "off",
            "gso", "off", "tso", "off")
        run("ip", "-n", self.client_ns, "addr", "add", f"{CLIENT4}/16", "dev", CLIENT_IF)
        if self.plain:  # duplicate address detection run, as on any host
            run("ip", "-n", self.client_ns, "addr", "add", f"{CLIENT6}/64", "dev", CLIENT_IF)
            if not wait_for(lambda: "tentative" not in run(
                    "ip", "-n", self.client_ns, "-6", "addr", "show", "dev", CLIENT_IF), 10):
                raise RuntimeError("the client's IPv6 address stayed tentative for 10 s")
        else:
            run("ip", "-n", self.client_ns, "addr", "add", f"{CLIENT6}/64", "dev", CLIENT_IF,
                "nodad")

        for k in self.all_nodes():
            self._add_ns(self.node_ns[k])
            self._add_veth(self.node_veth[k], self.node_ns[k], "uplink", node_mac(k))
            if not self.flood:
                run("ip", "-n", self.switch_ns, "link", "set", "dev", self.node_veth[k], "type",
                    "bridge_slave", "flood", "off")
            self.macs[k] = link_mac(self.node_ns[k], "uplink")
            self.node_conf[k] = os.path.join(self.dir, f"node{k}.toml")
            self._eal_prefixes.append(f"vipfarm-{self.sfx}-n{k}")
            self._write_config(k)

    def _add_ns(self, ns):
        self._netns.append(ns)  # registered first: down() removes it whatever happens next
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "dev", "lo", "up")

    def _no_ipv6(self, iface, ns):
        run("ip", "netns", "exec", ns, "sh", "-c",
            f"echo 1 >/proc/sys/net/ipv6/conf/{iface}/disable_ipv6")

    def _add_veth(self, sw, ns, inner, mac):
        run("ip", "-n", self.switch_ns, "link", "add", "name", sw, "type", "veth", "peer",
            "name", inner, "netns", ns)
        if not self.plain:
            self._no_ipv6(sw, self.switch_ns)
            if inner == "uplink":  # no address at all, not even link-local
                self._no_ipv6(inner, ns)
        run("ip", "-n", self.switch_ns, "link", "set", "dev", sw, "master", self.bridge, "up")
        if self.plain:
            run("ip", "-n", ns, "link", "set", "dev", inner, "up")
        else:
            run("ip", "-n", ns, "link", "set", "dev", inner, "address", mac, "up")

    def _write_config(self, k):
        """lib.sh's _lab_write_config: the base config with [node] set to node k, this run's
        EAL file prefix, admin socket and key file, and nodes the file does not list."""
        text = open(self.base_config, encoding="utf-8").read()
        base = tomllib.loads(text)
        listed = {node["id"]: node for node in base["cluster"]["node"]}
        name = listed[k]["name"] if k in listed else f"node{k}"
        prefix = f"vipfarm-{self.sfx}-n{k}"
        section = re.search(r"(?ms)^\[node\][^\n]*\n(.*?)(?=^\s*\[|\Z)", text)
        if not section:
            raise RuntimeError(f"{self.config}: no [node] table")
        body, ids = re.subn(r"(?m)^(\s*id\s*=\s*)\d+", lambda m: f"{m.group(1)}{k}",
                            section.group(1), count=1)
        body, names = re.subn(r'(?m)^(\s*name\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{name}"',
                              body, count=1)
        text = text[:section.start(1)] + body + text[section.end(1):]
        text, prefixes = re.subn(r"--file-prefix=[^\"'\s]*", f"--file-prefix={prefix}", text)
        text = re.sub(r'(?m)^(\s*socket\s*=\s*)"[^"]*"',
                      lambda m: f'{m.group(1)}"{self.api_socket(k)}"', text)
        text = re.sub(r'(?m)^(\s*file\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{self.key}"', text)
        if (ids, names, prefixes) != (1, 1, 1):
            raise RuntimeError(f"{self.config}: expected one [node] id, one [node] name and one "
                               f"--file-prefix= (found {ids}, {names}, {prefixes})")
        for i in self.all_nodes():
            if i not in listed:
                text += f'\n[[cluster.node]]\nid = {i}\nname = "node{i}"\naddress = "10.77.0.{i}"\n'
        new = tomllib.loads(text)
        assert new["node"]["id"] == k and new["node"]["name"] == name, new["node"]
        with open(self.node_conf[k], "w", encoding="utf-8") as f:
            f.write(text)

    # --- names and commands --------------------------------------------------------------
    def all_nodes(self):
        return list(range(1, self.n + 1))

    def api_socket(self, k):
        return os.path.join(self.dir, f"node{k}.sock")

    def in_ns(self, ns, *cmd, **kw):
        return run("ip", "netns", "exec", ns, *cmd, **kw)

    def in_node(self, k, *cmd, **kw):
        return self.in_ns(self.node_ns[k], *cmd, **kw)

    def in_client(self, *cmd, **kw):
        return self.in_ns(self.client_ns, *cmd, **kw)

    def ctl(self, k, *args, timeout=2):
        """`vipfarmctl ARGS --json` on node k's admin socket, parsed (None: no answer)."""
        try:
            p = subprocess.run([self.vipfarmctl, *args, "--json", "--socket", self.api_socket(k)],
                               capture_output=True, text=True, timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    def metrics(self, k):
        """Node k's /metrics, parsed (parse_prometheus); {} when it does not answer."""
        try:
            text = self.in_node(k, "curl", "-s", "--max-time", "2",
                                f"http://10.77.0.{k}:{METRICS_PORT}/metrics", check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return {}
        return parse_prometheus(text)

    def owner(self, source, sport=1234, view=None, vip=VIP4, proto="tcp", dport=80):
        """The node `vipfarmctl owner` predicts for proto source:sport -> vip:dport (0:
        none)."""
        cmd = [self.vipfarmctl, "owner", "--config", self.node_conf[1]]
        if view is not None:
            cmd += ["--view", ",".join(map(str, view))]
        def endpoint(addr, port):
            return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        cmd += [proto, endpoint(source, sport), endpoint(vip, dport), "--json"]
        return json.loads(run(*cmd)).get("owner", 0)

    # --- processes -----------------------------------------------------------------------
    def start_daemon(self, k):
        if k in self.daemons and self.daemons[k].poll() is None:
            raise RuntimeError(f"node {k}'s daemon is already running")
        out = run(self.vipfarmctl, "check-config", self.node_conf[k])
        if not re.search(rf"(?m)^this node: {k} \(", out):
            raise RuntimeError(f"node {k}'s config is not node {k}'s:\n{out}")
        self.daemon_log[k] = os.path.join(self.dir, f"vipfarmd-node{k}.log")
        log = open(self.daemon_log[k], "ab")
        # `ip netns exec` execs the daemon: the PID is the daemon's.
        self.daemons[k] = subprocess.Popen(
            ["ip", "netns", "exec", self.node_ns[k], self.vipfarmd, "--config", self.node_conf[k]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._started.append(self.daemons[k].pid)
        self.daemon_status.pop(k, None)

    def start_daemons(self, nodes=None):
        for k in nodes or self.all_nodes():
            self.start_daemon(k)

    def daemon_pid(self, k):
        p = self.daemons.get(k)
        return p.pid if p is not None and p.poll() is None else None

    def _daemon_ready(self, k):
        out = run("ip", "-n", self.node_ns[k], "-4", "-o", "addr", "show", "dev", TAP, check=False)
        return f" inet {VIP4}/" in out

    def wait_ready(self, nodes=None, timeout=READY_TIMEOUT):
        """Until each daemon has its TAP with the VIP; raise (with its log) when one exits."""
        pending = list(nodes or self.all_nodes())
        end = time.monotonic() + timeout
        while pending:
            for k in list(pending):
                if self._daemon_ready(k):
                    pending.remove(k)
                elif self.daemons[k].poll() is not None:
                    self.daemon_status[k] = self.daemons[k].returncode
                    raise RuntimeError(f"node {k}: vipfarmd exited with status "
                                       f"{self.daemons[k].returncode} before it was ready:\n"
                                       f"{self.log_tail(k, 40)}")
            if pending and time.monotonic() >= end:
                raise RuntimeError(f"daemons not ready after {timeout} s: nodes {pending}")
            if pending:
                time.sleep(0.1)

    def kill_daemon(self, k, sig=signal.SIGKILL):
        """Send sig to node k's vipfarmd by PID and reap it; returns its exit status."""
        p = self.daemons.pop(k)
        p.send_signal(sig)
        self.daemon_status[k] = p.wait(timeout=10)
        return self.daemon_status[k]

    def signal_daemon(self, k, sig):
        os.kill(self.daemons[k].pid, sig)

    def daemon_state(self, k):
        """The process state letter of node k's daemon ('T': stopped), None when gone."""
        pid = self.daemon_pid(k)
        return None if pid is None else thread_state(pid)

    def threads(self, k):
        """[(tid, comm)] of node k's daemon."""
        pid = self.daemon_pid(k)
        out = []
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    out.append((int(tid), f.read().strip()))
            except OSError:
                pass
        return out

    def freeze_thread(self, tid):
        f = ThreadFreeze(tid)
        self.freezes.append(f)
        f.hold()
        return f

    def start_nginx(self, nodes=None):
        """In each node namespace, nginx answering "node<k>" on port 80 (lib.sh's)."""
        nodes = nodes or self.all_nodes()
        for k in nodes:
            d = os.path.join(self.dir, f"nginx-node{k}")
            os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF.replace("@DIR@", d).replace("@BODY@", f"node{k}"))
            self.nginx[k] = subprocess.Popen(
                ["ip", "netns", "exec", self.node_ns[k], "nginx", "-p", d + "/", "-e",
                 os.path.join(d, "error.log"), "-c", os.path.join(d, "nginx.conf")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._started.append(self.nginx[k].pid)
        for k in nodes:
            def listening():
                out = run("ip", "netns", "exec", self.node_ns[k], "ss", "-Hltn", "sport = :80",
                          check=False)
                return len(out.splitlines()) >= 2 or self.nginx[k].poll() is not None
            wait_for(listening, 10)
            if self.nginx[k].poll() is not None or not listening():
                raise RuntimeError(f"nginx of node {k} is not listening on port 80")

    def spawn(self, ns, log, *cmd):
        """CMD in namespace ns in the background (stdout+stderr to log), stopped by down()."""
        with open(log, "ab") as f:
            p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdin=subprocess.DEVNULL,
                                 stdout=f, stderr=subprocess.STDOUT)
        self.spawned.append(p)
        self._started.append(p.pid)
        return p

    def add_client_addrs(self, count, family=4):
        """count more client source addresses of the family, 4 or 6 (lab_client_addrs'
        numbering); returns them."""
        addrs = self.client_addrs6 if family == 6 else self.client_addrs
        have = len(addrs)
        added = [client_addr(i, family) for i in range(have + 1, have + count + 1)]
        how = "/64 dev %s nodad" if family == 6 else "/16 dev %s"
        batch = "".join(f"address add {a}{how % CLIENT_IF}\n" for a in added)
        run("ip", "-n", self.client_ns, "-batch", "-", input=batch)
        addrs += added
        return added

    def vip_mac(self, timeout=5):
        """The VIP's MAC as the client resolves it (ARP): the virtual MAC."""
        def resolved():
            self.in_client("ping", "-c", "1", "-W", "1", VIP4, check=False)
            for n in json.loads(run("ip", "-n", self.client_ns, "-j", "neigh", "show", VIP4) or "[]"):
                if n.get("lladdr") and "FAILED" not in n.get("state", []):
                    return n["lladdr"]
            return None
        mac = wait_for(resolved, timeout)
        if mac is None:
            raise RuntimeError(f"the client did not resolve {VIP4}")
        return mac

    # --- views ---------------------------------------------------------------------------
    def view(self, k):
        return self.ctl(k, "view")

    def views(self, nodes=None):
        return {k: self.view(k) for k in nodes or self.running_nodes()}

    def running_nodes(self):
        return [k for k in self.all_nodes() if self.daemon_pid(k) is not None]

    def one_view(self, members=None):
        """Every running node reports the same epoch and members (members, when given), with
        its lease held; returns (epoch, members) or None."""
        nodes = self.running_nodes()
        seen = set()
        for k in nodes:
            v = self.view(k)
            if v is None or not v.get("lease_ok"):
                return None
            seen.add((v["epoch"], tuple(v["members"])))
        if len(seen) != 1:
            return None
        got = next(iter(seen))
        if members is not None and list(got[1]) != list(members):
            return None
        return got

    def wait_one_view(self, timeout, members=None):
        """Until one_view(members or every node): seconds it took, None on timeout."""
        members = self.all_nodes() if members is None else members
        t0 = time.monotonic()
        if wait_for(lambda: self.one_view(members), timeout, 0.02) is None:
            return None
        return time.monotonic() - t0

    # --- the switch ----------------------------------------------------------------------
    def nft_switch(self, script):
        return run("ip", "netns", "exec", self.switch_ns, "nft", "-f", "-", input=script)

    def nft_switch_json(self, *args):
        return json.loads(run("ip", "netns", "exec", self.switch_ns, "nft", "-j", *args))

    # --- diagnostics ---------------------------------------------------------------------
    def log_tail(self, k, lines=30):
        try:
            with open(self.daemon_log[k], errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except (KeyError, OSError):
            return "(no log)\n"

    def dump(self):
        """The farm's state for a failing test: per node view, nodes, buckets, counters (JSON
        from vipfarmctl) and the tail of the daemon's log; the switch's nftables rules."""
        if not self._up or not self.dir:
            return ""
        out = [f"=============== lab dump: suffix {self.sfx}, {self.n} nodes, "
               f"split_brain {self.split_brain}, dir {self.dir}\n"]
        for k in self.all_nodes():
            try:
                pid = self.daemon_pid(k)
                frozen = [f.tid for f in self.freezes if f.held]
                state = (f"pid {pid}, running" if pid else
                         f"exited {self.daemon_status.get(k, '?')}")
                out.append(f"--- node {k} ({state}"
                           f"{', frozen threads ' + str(frozen) if frozen else ''})\n")
                if pid and self.daemon_state(k) not in ("T", "t"):
                    for cmd in ("view", "nodes", "buckets", "counters"):
                        got = self.ctl(k, cmd)
                        out.append(f"vipfarmctl {cmd} --json: {json.dumps(got)}\n")
            except Exception as e:  # the dump never raises
                out.append(f"(node {k}: {e!r})\n")
            out.append(f"--- node {k}: tail of {self.daemon_log.get(k)}\n{self.log_tail(k, 30)}")
        try:
            out.append("--- switch nftables\n" +
                       run("ip", "netns", "exec", self.switch_ns, "nft", "list", "ruleset",
                           check=False))
        except Exception as e:  # the dump never raises
            out.append(f"(switch ruleset: {e})\n")
        out.append("=============== end of lab dump\n")
        return "".join(out)

    # --- teardown ------------------------------------------------------------------------
    def _stop(self, procs, timeout):
        """TERM (and CONT, for a stopped one) each Popen, KILL after timeout; reap."""
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass

    def stop_daemons(self, nodes=None):
        """SIGTERM, SIGKILL after STOP_TIMEOUT; returns {k: exit status}."""
        nodes = [k for k in (nodes or self.all_nodes()) if k in self.daemons]
        procs = [self.daemons[k] for k in nodes]
        self._stop(procs, STOP_TIMEOUT)
        for k in nodes:
            self.daemon_status[k] = self.daemons.pop(k).returncode
        return {k: self.daemon_status[k] for k in nodes}

    def down(self):
        """Remove everything this farm made. Idempotent; never raises."""
        if not self._up:
            return
        try:
            for f in self.freezes:
                f.release()  # first: a held thread cannot run the daemon's orderly exit
            self._stop([p for p in self.spawned], 3)
            self.stop_daemons()
            self._stop(list(self.nginx.values()), STOP_TIMEOUT)
            # Whatever still runs inside the lab's namespaces (nginx workers, strays), by PID.
            pids = []
            for ns in self._netns:
                if os.path.exists(f"/run/netns/{ns}"):
                    out = run("ip", "netns", "pids", ns, check=False)
                    pids += [int(x) for x in out.split()]
            self._strays = pids
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if pids:
                wait_for(lambda: not any(alive(p) for p in pids), 3)
            # Deleting the namespaces deletes every link (the switch's holds the bridge and
            # one end of every veth) and every nftables table in them.
            for ns in reversed(self._netns):
                if os.path.exists(f"/run/netns/{ns}"):
                    run("ip", "netns", "del", ns, check=False)
            for ns in self._netns:
                if os.path.exists(f"/run/netns/{ns}"):
                    sys.stderr.write(f"lab: warning: namespace {ns} is still there\n")
            for prefix in self._eal_prefixes:
                shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
            if self.dir and os.path.isdir(self.dir):
                if os.environ.get("LAB_KEEP_DIR") == "1":
                    sys.stderr.write(f"lab: kept {self.dir}\n")
                else:
                    shutil.rmtree(self.dir, ignore_errors=True)
        except BaseException as e:  # never raise from teardown; say what went wrong
            sys.stderr.write(f"lab: error during teardown of {self.sfx}: {e!r}\n")
        finally:
            self._up = False
            if self in LIVE:
                LIVE.remove(self)

    def leftovers(self):
        """Names of this farm's namespaces and links, and its processes, still present."""
        left = [ns for ns in self._netns if os.path.exists(f"/run/netns/{ns}")]
        for link in [self.bridge, self.client_veth, *self.node_veth.values()]:
            if subprocess.run(["ip", "link", "show", "dev", link], capture_output=True).returncode == 0:
                left.append(link)
        left += [f"pid {pid}" for pid in self._started + self._strays if alive(pid)]
        left += [f"dpdk {p}" for p in self._eal_prefixes if os.path.exists(f"/var/run/dpdk/{p}")]
        if self.dir and os.path.isdir(self.dir) and os.environ.get("LAB_KEEP_DIR") != "1":
            left.append(self.dir)
        return left


NGINX_CONF = """# nginx of the lab (tests/lab/labfarm.py; lib.sh's)
daemon off;
master_process on;
worker_processes 1;
user root;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log info;
events { worker_connections 4096; }
http {
    keepalive_requests 1000000;
    log_format lab '$remote_addr $server_addr:$server_port "$request" $status';
    access_log @DIR@/access.log lab;
    client_body_temp_path @DIR@/tmp/body;
    proxy_temp_path @DIR@/tmp/proxy;
    fastcgi_temp_path @DIR@/tmp/fastcgi;
    uwsgi_temp_path @DIR@/tmp/uwsgi;
    scgi_temp_path @DIR@/tmp/scgi;
    server {
        listen 80 default_server;
        listen [::]:80 default_server ipv6only=on;
        default_type text/plain;
        location / { return 200 "@BODY@\\n"; }
    }
}
"""
