#!/usr/bin/python3
"""Continuous client traffic for the lab tests, run inside the client namespace.

Two kinds of load, both to one HTTP server address (the VIP):
  --source ADDR      one new connection every --every-ms from ADDR (HTTP/1.0 GET, the
                     server closes it); each attempt is logged when it ends, with its
                     source port: answered (the body, i.e. which node), or failed
                     (timeout, reset, refused). With --attempts N, N per source, then the
                     probe ends once every one has.
  --keep ADDR        one long-lived HTTP/1.1 connection from ADDR, a GET every
                     --keep-every-ms; a break (error, timeout, a different node
                     answering) is logged, then it reconnects.
Events go to --out as JSON lines with millisecond wall-clock times (comparable with
bash's EPOCHREALTIME). It stops when --stop-file appears or after --seconds, whichever
comes first: every loop is bounded.
"""
import argparse
import errno
import json
import os
import selectors
import socket
import time


def now_ms():
    return time.time() * 1000.0


class Attempt:
    """One HTTP/1.0 GET on a new connection."""

    def __init__(self, source, target, timeout_ms):
        self.source = source
        self.start = now_ms()
        self.deadline = self.start + timeout_ms
        self.buf = b""
        self.sent = False
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.bind((source, 0))
        self.port = self.sock.getsockname()[1]
        rc = self.sock.connect_ex(target)
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, os.strerror(rc))


class Keep:
    """A long-lived HTTP/1.1 connection asking every keep_every_ms."""

    def __init__(self, source, target):
        self.source = source
        self.target = target
        self.sock = None
        self.node = None
        self.buf = b""
        self.pending_since = None  # a request is out since then
        self.next_request = 0.0
        self.opened = None
        self.requests = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="address:port (IPv6 in brackets)")
    ap.add_argument("--source", action="append", default=[])
    ap.add_argument("--keep", action="append", default=[])
    ap.add_argument("--every-ms", type=float, default=40)
    ap.add_argument("--attempts", type=int, default=0, help="per source (0: until the end)")
    ap.add_argument("--timeout-ms", type=float, default=1000)
    ap.add_argument("--keep-every-ms", type=float, default=100)
    ap.add_argument("--keep-timeout-ms", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    host, _, port = a.target.rpartition(":")
    target = (host.strip("[]"), int(port))
    out = open(a.out, "w", buffering=1)
    sel = selectors.DefaultSelector()
    end = now_ms() + a.seconds * 1000
    next_start = {s: now_ms() for s in a.source}
    started = {s: 0 for s in a.source}
    attempts = set()
    keeps = [Keep(s, target) for s in a.keep]
    request = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"

    def log(**event):
        out.write(json.dumps(event) + "\n")

    def finish(at, ok, why):
        sel.unregister(at.sock)
        at.sock.close()
        attempts.discard(at)
        body = at.buf.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
        log(kind="attempt", src=at.source, sport=at.port, start=at.start, end=now_ms(), ok=ok,
            node=body if ok else None, why=why)

    def keep_open(k):
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        k.sock = socket.socket(family, socket.SOCK_STREAM)
        k.sock.setblocking(False)
        k.sock.bind((k.source, 0))
        k.sock.connect_ex(target)
        k.buf = b""
        k.opened = now_ms()
        k.pending_since = None
        k.next_request = now_ms()
        k.requests = 0
        sel.register(k.sock, selectors.EVENT_READ, k)

    def keep_break(k, why):
        log(kind="keep_break", src=k.source, at=now_ms(), node=k.node, why=why,
            requests=k.requests, opened=k.opened)
        sel.unregister(k.sock)
        k.sock.close()
        k.node = None
        keep_open(k)

    for k in keeps:
        keep_open(k)
    def done():
        return (a.attempts and not keeps and not attempts and
                all(n >= a.attempts for n in started.values()))

    while now_ms() < end and not os.path.exists(a.stop_file) and not done():
        t = now_ms()
        for s in a.source:
            if t >= next_start[s] and not (a.attempts and started[s] >= a.attempts):
                next_start[s] = max(next_start[s] + a.every_ms, t)
                started[s] += 1
                try:
                    at = Attempt(s, target, a.timeout_ms)
                except OSError as e:
                    log(kind="attempt", src=s, start=t, end=t, ok=False, node=None, why=str(e))
                    continue
                attempts.add(at)
                sel.register(at.sock, selectors.EVENT_WRITE, at)
        for k in keeps:
            if k.pending_since is None and t >= k.next_request:
                try:
                    k.sock.send(request)
                    k.pending_since = t
                    k.next_request = t + a.keep_every_ms
                except (BlockingIOError, InterruptedError):
                    k.next_request = t + 5  # still connecting
                except OSError as e:
                    keep_break(k, "send: " + e.strerror)
            elif k.pending_since is not None and t - k.pending_since > a.keep_timeout_ms:
                keep_break(k, "no answer within %d ms" % a.keep_timeout_ms)
        for at in [x for x in attempts if t > x.deadline]:
            finish(at, False, "timeout")
        for key, events in sel.select(timeout=0.005):
            obj = key.data
            if isinstance(obj, Attempt):
                try:
                    if not obj.sent:
                        err = obj.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            finish(obj, False, os.strerror(err))
                            continue
                        obj.sock.send(b"GET / HTTP/1.0\r\n\r\n")
                        obj.sent = True
                        sel.modify(obj.sock, selectors.EVENT_READ, obj)
                        continue
                    data = obj.sock.recv(4096)
                    if data:
                        obj.buf += data
                    else:
                        ok = obj.buf.startswith(b"HTTP/1.1 200")
                        finish(obj, ok, "closed" if ok else "closed without an answer")
                except OSError as e:
                    finish(obj, False, e.strerror or str(e))
            else:
                k = obj
                try:
                    data = k.sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    keep_break(k, e.strerror or str(e))
                    continue
                if not data:
                    keep_break(k, "closed by the server")
                    continue
                k.buf += data
                while b"\r\n\r\n" in k.buf:
                    head, rest = k.buf.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    if len(rest) < length:
                        break
                    body, k.buf = rest[:length].decode(errors="replace").strip(), rest[length:]
                    k.requests += 1
                    k.pending_since = None
                    if k.node is None:
                        k.node = body
                        log(kind="keep_open", src=k.source, sport=k.sock.getsockname()[1],
                            at=now_ms(), node=body)
                    elif body != k.node:
                        keep_break(k, "answered by %s, not %s" % (body, k.node))
                        break
    for at in list(attempts):
        sel.unregister(at.sock)
        at.sock.close()
    for k in keeps:
        log(kind="keep_end", src=k.source, at=now_ms(), node=k.node, requests=k.requests)
        k.sock.close()
    out.close()


if __name__ == "__main__":
    main()
