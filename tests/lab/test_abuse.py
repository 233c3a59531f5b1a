#!/usr/bin/python3
"""Issue 16: the admin socket and the metrics endpoint under abuse, against a live farm.

Each test builds a 2-node farm (conftest's `farm`) and abuses one endpoint of node 1: the
admin API's Unix socket, or /metrics on 10.77.0.1:9469 from inside node 1's namespace. The
abusive clients run in a helper process (this file run as a script, in node 1's namespace,
with its RLIMIT_NOFILE raised for its connections), one phase after the other:

  idle       IDLE_CONNS (1,000) connections that never send a byte, held until the daemon
             has closed every one of them itself (the longest-idle evicted for newer ones
             when its connection cap is reached, the rest at its idle timeout);
  slow       SLOW_CONNS connections sending one byte of a request that never ends every
             100 ms (slowloris), for SLOW_S seconds;
  unread     UNREAD_CONNS connections that pipeline UNREAD_REQUESTS requests each and never
             read an answer, for UNREAD_S seconds;
  fill       IDLE_CONNS connections that each send at once a request just under the
             endpoint's size limit (FILL_BYTES) and never end it, for FILL_S seconds: the
             most memory clients can make the daemon hold (without a connection cap, the
             admin API would hold 1,000 x 60 KiB, beyond the RSS bound);
  oversize   a request of OVERSIZE_BYTES without its end (admin: a line without newline;
             HTTP: a URL, then a header);
  garbage    GARBAGE_CONNS connections of GARBAGE_BYTES random bytes each;
  halfclose  shutdown(SHUT_WR) after a complete request, a partial one, and nothing.

While each abusive phase runs, a normal client (`vipfarmctl status --json`; an HTTP GET
/metrics with curl) is served within NORMAL_DEADLINE_S, and the farm keeps its view (the
same epoch and members on every node: heartbeats run on the control thread that also serves
the admin API). After each phase the daemon's open sockets go back to their count before
it, and its peak RSS (VmHWM) stays under the baseline + RSS_SLACK_MIB. Every phase prints its
figures (and they are gathered at the end of the run): latency of the normal requests, the
connections made, answered and closed by the daemon, the daemon's peak socket count, VmHWM.
At the end the metrics endpoint's vipfarm_metrics_http_refused_total shows what it turned
away (evicted, timed_out, too_large, malformed).

Run as root with Debian's python3 (see conftest.py), e.g.
  VIPFARMD=build/vipfarmd VIPFARMCTL=build/vipfarmctl \\
      /usr/bin/python3 -m pytest -p no:cacheprovider tests/lab/test_abuse.py
"""
import argparse
import errno
import json
import os
import random
import resource
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import labfarm  # noqa: E402

IDLE_CONNS = 1000
SLOW_CONNS = 300           # more than either endpoint's connection cap
SLOW_S = 5.0
UNREAD_CONNS = 20
UNREAD_REQUESTS = 50
UNREAD_S = 3.0
OVERSIZE_BYTES = 8 << 20
# Just under each endpoint's limit on one request (ApiLimits, HttpLimits).
FILL_BYTES = {"admin": 60 << 10, "metrics": 7 << 10}
FILL_S = 3.0
GARBAGE_CONNS = 20
GARBAGE_BYTES = 64 << 10
NORMAL_DEADLINE_S = 3.0    # a normal request under abuse is answered within this
NORMAL_EVERY_S = 0.5       # how often a normal request is made while a phase holds
CONNECT_DEADLINE_S = 10.0  # for the helper to open all its connections
SHOT_DEADLINE_S = 10.0     # for one oversize/garbage/half-close exchange
SOCKETS_BACK_S = 10.0      # for the daemon's sockets to go back to their count
SOCKET_SLACK = 4           # checker probes and our own normal requests, in flight
# The daemon's own bounds (ApiLimits, HttpLimits): idle connections are closed after these.
IDLE_TIMEOUT_S = {"admin": 30.0, "metrics": 10.0}
# The caps bound what clients make the daemon hold: the admin API 256 connections with a
# 64 KiB line each (16 MiB, 32 MiB if every buffer's capacity doubled past its content),
# the metrics endpoint 64 with an 8 KiB header and a reply of some 20 KiB (under 2 MiB):
# 64 MiB is twice that with room for the allocator's own slack.
RSS_SLACK_MIB = 64
METRICS_URL = "http://10.77.0.1:9469/metrics"
METRICS_ADDR = ("10.77.0.1", 9469)
NODE = 1

ADMIN_REQUEST = b'{"cmd":"status"}\n'
HTTP_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 10.77.0.1:9469\r\n\r\n"
# Requests that never end, sent a byte at a time by the slow phase.
SLOW_PREFIX = {"admin": b'{"cmd":"status","pad":"',
               "metrics": b"GET /metrics HTTP/1.1\r\nHost: 10.77.0.1\r\nX-Slow: "}


# --- the helper: abusive clients, run inside node 1's namespace -----------------------------
def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def target_of(args):
    if args.unix:
        return socket.AF_UNIX, args.unix
    host, _, port = args.tcp.rpartition(":")
    return socket.AF_INET, (host, int(port))


def connect_all(family, addr, count, deadline):
    """count non-blocking connections; returns (connected sockets, failures by errno)."""
    done, pending, failed = [], {}, {}
    todo = count
    while todo and time.monotonic() < deadline:
        s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        rc = s.connect_ex(addr)
        if rc == 0:
            done.append(s)
            todo -= 1
        elif rc == errno.EINPROGRESS:
            pending[s.fileno()] = s
            todo -= 1
        elif rc == errno.EAGAIN:  # a Unix socket's backlog is full: try again
            s.close()
            time.sleep(0.01)
        else:
            s.close()
            name = errno.errorcode.get(rc, str(rc))
            failed[name] = failed.get(name, 0) + 1
            todo -= 1
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            s = pending.pop(fd)
            poller.unregister(fd)
            rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc == 0:
                done.append(s)
            else:
                s.close()
                name = errno.errorcode.get(rc, str(rc))
                failed[name] = failed.get(name, 0) + 1
    for s in pending.values():
        s.close()
    if pending:
        failed["timeout"] = len(pending)
    failed_total = count - len(done)
    if todo:
        failed["not tried"] = todo
    return done, failed, failed_total


def hold(args):
    """Open --count connections, abuse them as --mode says, and watch the server close them.
    Ends at the stop file, after --seconds, or (--until-closed) once the server closed all."""
    out = open(args.out, "a", buffering=1)

    def event(**kw):
        out.write(json.dumps(kw) + "\n")

    try:
        raise_nofile(args.count + 64)
        family, addr = target_of(args)
        t0 = time.monotonic()
        socks, failed, failed_total = connect_all(family, addr, args.count,
                                                  t0 + CONNECT_DEADLINE_S)
        ready = time.monotonic()
        event(event="ready", connected=len(socks), failed=failed_total, errors=failed,
              connect_s=round(ready - t0, 3))
        by_fd = {s.fileno(): s for s in socks}
        sent = {fd: 0 for fd in by_fd}
        answered, answer_bytes, samples, closed_at = set(), 0, [], {}
        poller = select.poll()
        # unread: only the peer's close is watched; nothing is ever read.
        watch = select.POLLRDHUP if args.mode == "unread" else select.POLLIN
        if args.mode in ("unread", "fill"):
            if args.mode == "unread":
                request = ADMIN_REQUEST if args.kind == "admin" else HTTP_REQUEST
                payload = request * UNREAD_REQUESTS
            else:
                prefix = SLOW_PREFIX[args.kind]
                payload = prefix + b"a" * (FILL_BYTES[args.kind] - len(prefix))
            for s in socks:
                try:
                    sent[s.fileno()] = s.send(payload)
                except OSError:
                    pass
        for fd in by_fd:
            poller.register(fd, watch)
        prefix = SLOW_PREFIX[args.kind]
        next_tick = ready
        end = ready + args.seconds

        def closed(fd):
            closed_at[fd] = time.monotonic() - ready
            poller.unregister(fd)
            by_fd.pop(fd).close()

        while by_fd:
            now = time.monotonic()
            if now >= end or os.path.exists(args.stop_file):
                break
            if args.mode == "slow" and now >= next_tick:
                for fd, s in list(by_fd.items()):
                    i = sent[fd]
                    byte = prefix[i:i + 1] or b"a"
                    try:
                        sent[fd] += s.send(byte)
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed(fd)
                next_tick += 0.1
            for fd, ev in poller.poll(50):
                if fd not in by_fd:
                    continue
                if args.mode == "unread":
                    closed(fd)
                    continue
                try:
                    data = by_fd[fd].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    answered.add(fd)
                    answer_bytes += len(data)
                    if len(samples) < 3:
                        samples.append(data[:160].decode("utf-8", "replace"))
                else:
                    closed(fd)
        open_at_end = len(by_fd)
        for s in by_fd.values():
            s.close()
        times = sorted(closed_at.values())

        def pct(p):
            return round(times[min(len(times) - 1, int(p * len(times)))], 3) if times else None

        event(event="done", connected=len(socks), failed=failed_total, answered=len(answered),
              answer_bytes=answer_bytes, samples=samples, closed_by_server=len(closed_at),
              closed_within_1s=sum(1 for t in times if t <= 1.0), open_at_end=open_at_end,
              close_p50_s=pct(0.5), close_max_s=round(times[-1], 3) if times else None,
              held_s=round(time.monotonic() - ready, 3), bytes_sent=sum(sent.values()))
    except Exception as e:  # the test reads why
        event(event="error", error=repr(e))
        raise
    finally:
        out.close()


def exchange(family, addr, payload, shut_wr, deadline):
    """Send payload while reading whatever comes back; then shut_wr: shutdown(SHUT_WR);
    read until the server closes or the deadline. Returns what happened."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(max(0.1, deadline - time.monotonic()))
    got, sent, error = bytearray(), 0, None
    closed = False
    try:
        s.connect(addr)
        s.setblocking(False)
        poller = select.poll()
        poller.register(s.fileno(), select.POLLIN | select.POLLOUT)
        while time.monotonic() < deadline and not closed:
            if sent == len(payload):
                if shut_wr:
                    shut_wr = False
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError as e:  # ENOTCONN: the server has already reset it
                        error, closed = errno.errorcode.get(e.errno, str(e)), True
                        break
                poller.modify(s.fileno(), select.POLLIN)
            for _, ev in poller.poll(50):
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    try:
                        data = s.recv(1 << 20)
                    except BlockingIOError:
                        data = None
                    except OSError as e:
                        error, data = errno.errorcode.get(e.errno, str(e)), b""
                    if data == b"":
                        closed = True
                        break
                    if data:
                        got += data
                if ev & select.POLLOUT and sent < len(payload):
                    try:
                        sent += s.send(payload[sent:sent + (1 << 16)])
                    except BlockingIOError:
                        pass
                    except OSError as e:  # the server hung up mid-request
                        error = errno.errorcode.get(e.errno, str(e))
                        closed = True
                        break
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
    return {"sent": sent, "size": len(payload), "closed_by_server": closed, "error": error,
            "reply_bytes": len(got), "reply": bytes(got[:2000]).decode("utf-8", "replace"),
            "reply_lines": got.count(b"\n")}


def shot(args):
    """One-off abusive exchanges (--mode oversize|garbage|halfclose), as one JSON line."""
    family, addr = target_of(args)
    results = []
    http = args.kind == "metrics"
    if args.mode == "oversize":
        big = b"a" * OVERSIZE_BYTES
        if http:
            payloads = {"url": b"GET /" + big + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                        "header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + big
                                  + b"\r\n\r\n"}
        else:
            payloads = {"line": b'{"cmd":"status","pad":"' + big}
        for name, payload in payloads.items():
            t0 = time.monotonic()
            r = exchange(family, addr, payload, False, t0 + SHOT_DEADLINE_S)
            r.update(name=name, seconds=round(time.monotonic() - t0, 3))
            results.append(r)
    elif args.mode == "garbage":
        rng = random.Random(16)
        for i in range(GARBAGE_CONNS):
            payload = rng.randbytes(GARBAGE_BYTES)
            t0 = time.monotonic()
            r = exchange(family, addr, payload, True, t0 + SHOT_DEADLINE_S)
            r.update(name=f"garbage{i}", seconds=round(time.monotonic() - t0, 3))
            results.append(r)
    elif args.mode == "halfclose":
        complete = HTTP_REQUEST if http else ADMIN_REQUEST.rstrip(b"\n")
        partial = complete[:7]
        for name, payload in (("complete", complete), ("partial", partial), ("nothing", b"")):
            t0 = time.monotonic()
            r = exchange(family, addr, payload, True, t0 + SHOT_DEADLINE_S)
            r.update(name=name, seconds=round(time.monotonic() - t0, 3))
            results.append(r)
    print(json.dumps(results))


def helper_main(argv):
    p = argparse.ArgumentParser(description="abusive clients for test_abuse.py")
    p.add_argument("what", choices=["hold", "shot"])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix")
    where.add_argument("--tcp")
    p.add_argument("--kind", choices=["admin", "metrics"], required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--out")
    p.add_argument("--stop-file")
    args = p.parse_args(argv)
    if args.what == "hold":
        hold(args)
    else:
        shot(args)


# --- the tests -----------------------------------------------------------------------------
def proc_status(pid):
    """VmHWM and VmRSS of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def socket_count(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


class Endpoint:
    """One endpoint of node 1: how the helper reaches it and what a normal request is."""

    def __init__(self, f, kind):
        self.f = f
        self.kind = kind
        self.target = (["--unix", f.api_socket(NODE)] if kind == "admin" else
                       ["--tcp", f"{METRICS_ADDR[0]}:{METRICS_ADDR[1]}"])

    def normal(self):
        """A normal request: (seconds it took, None) or (seconds, why it failed)."""
        t0 = time.monotonic()
        if self.kind == "admin":
            cmd = [self.f.vipfarmctl, "status", "--json", "--socket", self.f.api_socket(NODE)]
        else:
            cmd = ["ip", "netns", "exec", self.f.node_ns[NODE], "curl", "-sS", "--max-time",
                   str(NORMAL_DEADLINE_S), "-w", "\n%{http_code}", METRICS_URL]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=NORMAL_DEADLINE_S + 5)
        except subprocess.TimeoutExpired:
            return time.monotonic() - t0, "no answer"
        took = time.monotonic() - t0
        if self.kind == "admin":
            try:
                js = json.loads(p.stdout)
            except ValueError:
                js = None
            if p.returncode != 0 or not isinstance(js, dict) or not js.get("ok"):
                return took, f"exit {p.returncode}: {p.stdout[-300:]} {p.stderr[-300:]}"
        else:
            body, _, code = p.stdout.rpartition("\n")
            if p.returncode != 0 or code != "200" or "vipfarm_build_info" not in body:
                return took, f"exit {p.returncode}, HTTP {code}: {p.stderr[-300:]}"
        if took > NORMAL_DEADLINE_S:
            return took, f"took {took:.2f} s"
        return took, None


class Phase:
    """Book-keeping of one abusive phase: normal requests, the daemon's sockets and memory."""

    def __init__(self, f, ep, name, baseline):
        self.f, self.ep, self.name, self.baseline = f, ep, name, baseline
        self.pid = f.daemon_pid(NODE)
        self.log_at = {k: log_size(f, k) for k in f.all_nodes()}
        self.sockets_before = socket_count(self.pid)
        self.peak_sockets = self.sockets_before
        self.latencies = []

    def normal(self):
        """One normal request; it must be served in time. Also samples the daemon's sockets."""
        self.peak_sockets = max(self.peak_sockets, socket_count(self.pid))
        took, why = self.ep.normal()
        self.latencies.append(took)
        assert why is None, f"{self.ep.kind} {self.name}: a normal request failed: {why}"

    def check_view(self, view0):
        view = self.f.one_view()
        if view != view0:
            # What the daemons said meanwhile: a node whose data plane did not run (a stall
            # of the exception path) steps aside, which on this shared VM means CPU starvation.
            said = "".join(f"  node {k}: {line}" for k in self.f.all_nodes()
                           for line in log_since(self.f, k, self.log_at[k])
                           if "view epoch" in line or "has not run" in line or "lease" in line)
            raise AssertionError(f"{self.ep.kind} {self.name}: the farm's view changed: "
                                 f"{view0} -> {view}; the daemons' logs meanwhile:\n{said}")

    def finish(self, view0, details):
        """After the abuse: served, view kept, sockets back, memory bounded; prints figures."""
        assert self.f.daemon_pid(NODE) == self.pid, "vipfarmd exited"
        self.normal()
        self.check_view(view0)
        back = labfarm.wait_for(
            lambda: socket_count(self.pid) <= self.sockets_before + SOCKET_SLACK, SOCKETS_BACK_S)
        now = socket_count(self.pid)
        assert back, (f"{self.ep.kind} {self.name}: the daemon still has {now} sockets "
                      f"{SOCKETS_BACK_S} s after, {self.sockets_before} before")
        mem = proc_status(self.pid)
        lat = sorted(self.latencies)
        line = (f"abuse {self.ep.kind} {self.name}: normal requests {len(lat)}, latency "
                f"median {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; "
                f"daemon sockets {self.sockets_before} before, peak {self.peak_sockets}, {now} "
                f"after; VmHWM {mem['VmHWM'] // 1024} MiB (baseline "
                f"{self.baseline['VmHWM'] // 1024} MiB), VmRSS {mem['VmRSS'] // 1024} MiB; "
                f"{details}")
        print(line)
        labfarm.SUMMARY.append(line)
        assert mem["VmHWM"] <= self.baseline["VmHWM"] + RSS_SLACK_MIB * 1024, \
            f"{self.ep.kind} {self.name}: peak RSS beyond baseline + {RSS_SLACK_MIB} MiB: {line}"


def log_size(f, k):
    try:
        return os.path.getsize(f.daemon_log[k])
    except (KeyError, OSError):
        return 0


def log_since(f, k, offset):
    try:
        with open(f.daemon_log[k], errors="replace") as fh:
            fh.seek(offset)
            return fh.readlines()[-200:]
    except (KeyError, OSError):
        return []


def helper_cmd(ep, what, mode, *extra):
    return [labfarm.LAB_PY, os.path.abspath(__file__), what, *ep.target, "--kind", ep.kind,
            "--mode", mode, *extra]


def read_events(path):
    try:
        with open(path) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError):
        return []


def event_of(path, name):
    for e in read_events(path):
        if e.get("event") in (name, "error"):
            return e
    return None


def hold_phase(f, ep, view0, baseline, mode, count, seconds, until_closed=None):
    """Run the helper in `mode` with `count` connections; make normal requests while it
    holds them, for `seconds` (or, until_closed: until the daemon closed all of them, at
    most that many seconds). Returns the helper's summary."""
    phase = Phase(f, ep, mode, baseline)
    tag = f"{ep.kind}-{mode}"
    out = os.path.join(f.dir, f"abuse-{tag}.jsonl")
    stop = os.path.join(f.dir, f"abuse-{tag}.stop")
    log = os.path.join(f.dir, f"abuse-{tag}.log")
    limit = until_closed or seconds
    proc = f.spawn(f.node_ns[NODE], log, *helper_cmd(
        ep, "hold", mode, "--count", str(count), "--seconds", str(limit + 5), "--out", out,
        "--stop-file", stop))
    try:
        ready = labfarm.wait_for(lambda: event_of(out, "ready") or proc.poll() is not None,
                                 CONNECT_DEADLINE_S + 10)
        ready = event_of(out, "ready")
        assert ready and ready["event"] == "ready", \
            f"{tag}: the helper did not get ready: {ready} {open(log).read()[-2000:]}"
        t0 = time.monotonic()
        checked_view = False
        while True:
            phase.normal()
            if not checked_view:
                phase.check_view(view0)
                checked_view = True
            left = t0 + limit - time.monotonic()
            if until_closed and event_of(out, "done"):
                break
            if left <= 0:
                break
            labfarm.wait_for(lambda: until_closed and event_of(out, "done"),
                             min(NORMAL_EVERY_S, left))
        phase.check_view(view0)
        # After the normal requests: a full listen backlog fails those first.
        assert ready["connected"] == count, f"{tag}: connections failed: {ready}"
        if not until_closed:
            open(stop, "w").close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise AssertionError(f"{tag}: the helper did not stop")
        done = event_of(out, "done")
        assert done and done["event"] == "done", f"{tag}: {done} {open(log).read()[-2000:]}"
        if until_closed:
            assert done["open_at_end"] == 0, \
                (f"{tag}: the daemon left {done['open_at_end']} of {count} idle connections "
                 f"open for {until_closed:.0f} s: {done}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    details = (f"{done['connected']} connections made, {done['answered']} answered, "
               f"{done['closed_by_server']} closed by the daemon ({done['closed_within_1s']} "
               f"within 1 s, median {done['close_p50_s']} s, last {done['close_max_s']} s), "
               f"{done['open_at_end']} still open after {done['held_s']} s; "
               f"samples {done['samples'][:1]}")
    phase.finish(view0, details)
    return done


def shot_phase(f, ep, view0, baseline, mode):
    phase = Phase(f, ep, mode, baseline)
    p = subprocess.run(["ip", "netns", "exec", f.node_ns[NODE],
                        *helper_cmd(ep, "shot", mode)],
                       capture_output=True, text=True, timeout=SHOT_DEADLINE_S * 25)
    assert p.returncode == 0, f"{ep.kind} {mode}: the helper failed: {p.stderr[-2000:]}"
    results = json.loads(p.stdout)
    brief = "; ".join(
        f"{r['name']}: sent {r['sent']} of {r['size']} B, {r['reply_bytes']} B back"
        f"{' (' + r['reply'][:60].splitlines()[0] + ')' if r['reply'] else ''}, "
        f"{'closed by the daemon' if r['closed_by_server'] else 'NOT closed'}"
        f"{', ' + r['error'] if r['error'] else ''} in {r['seconds']} s"
        for r in results[:4])
    if len(results) > 4:
        brief += f"; ... ({len(results)} connections)"
    phase.finish(view0, brief)
    return results


def abuse(f, kind):
    ep = Endpoint(f, kind)
    pid = f.daemon_pid(NODE)
    view0 = f.one_view()
    assert view0 is not None, f"no single view before the abuse: {f.views()}"
    took, why = ep.normal()
    assert why is None, f"{kind}: a normal request failed before any abuse: {why}"
    baseline = proc_status(pid)
    print(f"abuse {kind}: baseline VmHWM {baseline['VmHWM'] // 1024} MiB, VmRSS "
          f"{baseline['VmRSS'] // 1024} MiB, {socket_count(pid)} sockets")

    idle = hold_phase(f, ep, view0, baseline, "idle", IDLE_CONNS, None,
                      until_closed=IDLE_TIMEOUT_S[kind] + 15)
    assert idle["closed_by_server"] == IDLE_CONNS, idle
    slow = hold_phase(f, ep, view0, baseline, "slow", SLOW_CONNS, SLOW_S)
    hold_phase(f, ep, view0, baseline, "unread", UNREAD_CONNS, UNREAD_S)
    fill = hold_phase(f, ep, view0, baseline, "fill", IDLE_CONNS, FILL_S)

    for r in shot_phase(f, ep, view0, baseline, "oversize"):
        assert r["closed_by_server"], f"{kind} oversize {r['name']}: not closed: {r}"
        assert r["sent"] < r["size"], f"{kind} oversize {r['name']}: all of it read: {r}"
        if kind == "admin" and r["reply"]:
            assert "request too large" in r["reply"], r
        if kind == "metrics" and r["reply"]:
            assert r["reply"].startswith("HTTP/1.1 4"), r
    for r in shot_phase(f, ep, view0, baseline, "garbage"):
        assert r["closed_by_server"], f"{kind} garbage {r['name']}: not closed: {r}"
        if kind == "admin":
            # One error reply per line of garbage, each a JSON object with "ok": false.
            for line in r["reply"].splitlines()[:-1]:
                assert json.loads(line)["ok"] is False, line
        elif r["reply"]:
            assert r["reply"].startswith("HTTP/1.1 400"), r
    results = {r["name"]: r for r in shot_phase(f, ep, view0, baseline, "halfclose")}
    for r in results.values():
        assert r["closed_by_server"], f"{kind} half-closed {r['name']}: not closed: {r}"
    complete = results["complete"]["reply"]
    if kind == "admin":
        assert json.loads(complete.splitlines()[0])["ok"] is True, complete
        assert json.loads(results["partial"]["reply"])["ok"] is False, results["partial"]
    else:
        assert complete.startswith("HTTP/1.1 200"), complete[:300]
    assert results["nothing"]["reply_bytes"] == 0, results["nothing"]

    if kind == "metrics":
        # What the endpoint turned away is counted, by reason.
        samples = f.metrics(NODE)
        refused = {r: labfarm.metric(samples, "vipfarm_metrics_http_refused_total", reason=r)
                   for r in ("evicted", "timed_out", "too_large", "malformed")}
        print(f"abuse metrics: vipfarm_metrics_http_refused_total {refused}")
        labfarm.SUMMARY.append(f"abuse metrics: vipfarm_metrics_http_refused_total {refused}")
        assert None not in refused.values(), refused
        # Evicted: what the helper saw closed at once (idle), or at all (slow, fill: it closed
        # the rest itself); timed out: the idle ones the daemon closed later.
        evicted = idle["closed_within_1s"] + slow["closed_by_server"] + fill["closed_by_server"]
        assert refused["evicted"] >= evicted, (refused, evicted)
        assert refused["timed_out"] >= idle["closed_by_server"] - idle["closed_within_1s"], \
            (refused, idle)
        assert refused["too_large"] >= 2, refused
        assert refused["malformed"] >= GARBAGE_CONNS, refused


def test_admin_socket_under_abuse(farm):
    abuse(farm(2), "admin")


def test_metrics_endpoint_under_abuse(farm):
    abuse(farm(2), "metrics")


if __name__ == "__main__":
    helper_main(sys.argv[1:])
