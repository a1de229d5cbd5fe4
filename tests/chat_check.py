#!/usr/bin/env python3
"""Checks examples/chat as its clients see it.

  chat_check.py CHAT [--clients 200] [--lines 50] [--workers 2]
                     [--shard reuseport|handoff] [--mode full|early]

Starts CHAT --host 127.0.0.1 --port 0 --workers N --shard S, connects the
clients, waits until each one hears its own "hello" line (so every client
is in the chat before anyone talks), then:

  full:  every client sends its lines at once. Every client must receive
         every line of every client (its own included), each sender's in
         the order sent. Then SIGTERM: every client must get a clean end
         of stream (EOF, not a reset) and nothing more.
  early: as full, but the clients' receive buffers are small, so the
         server's writes back up, and SIGTERM comes once client 0 heard a
         twentieth of all lines. Each client must receive, per sender, the
         lines in order and without gaps, and every client the same count
         per sender (a line accepted by the server reaches everyone, one
         that was not reaches no one); then EOF, not a reset.

In both modes the clients go on sending after the SIGTERM and stop reading
for 0.3 s, so the server stops with input unread and output queued.

Either way the server must exit 0 (under ASan: no leak). Exit status 0
when everything held, 1 with a message otherwise.
"""
import argparse
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time


LATE_LINES = 20  # each client sends these after the SIGTERM


def fail(msg):
    print("chat_check: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class Client:
    def __init__(self, ident, port, nclients, rcvbuf):
        self.id = ident
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Small: the server's writes back up into its own buffers.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.inbuf = b""
        self.outbuf = b""
        self.heard_hello = False
        self.expected = [0] * nclients  # next seq per sender
        self.got = 0                    # chat lines received
        self.sent = 0                   # chat lines queued
        self.eof = False

    def queue_line(self):
        # Padding makes lines of different lengths (partial reads split them).
        pad = "x" * ((self.id * 7 + self.sent * 13) % 40)
        self.outbuf += ("m %d %d %s\n" % (self.id, self.sent, pad)).encode()
        self.sent += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chat")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard", default="reuseport")
    ap.add_argument("--mode", choices=["full", "early"], default="full")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    nclients, nlines = args.clients, args.lines

    if not os.access(args.chat, os.X_OK):
        print("chat_check: %s not built: skipped" % args.chat)
        sys.exit(77)
    server = subprocess.Popen(
        [args.chat, "--host", "127.0.0.1", "--port", "0", "--workers", str(args.workers), "--shard", args.shard],
        stdout=subprocess.PIPE)
    try:
        run(args, server, nclients, nlines)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def run(args, server, nclients, nlines):
    first = server.stdout.readline().decode()
    if not first.startswith("listening on "):
        fail("server printed %r" % first)
    port = int(first.rsplit(":", 1)[1])
    t_start = time.monotonic()
    deadline = t_start + args.timeout

    clients = [Client(i, port, nclients, 4096 if args.mode == "early" else 0) for i in range(nclients)]
    by_fd = {c.sock.fileno(): c for c in clients}
    sel = selectors.DefaultSelector()
    for c in clients:
        c.outbuf = ("hello %d\n" % c.id).encode()
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    phase = "hello"          # then "talk", then "stopping"
    hellos = 0
    term_sent = False
    eofs = 0
    total = nclients * nlines

    def on_line(c, ln):
        nonlocal hellos
        if ln.startswith(b"hello "):
            if int(ln.split()[1]) == c.id and not c.heard_hello:
                c.heard_hello = True
                hellos += 1
            return
        if not ln.startswith(b"m "):
            fail("client %d got %r" % (c.id, ln))
        _, sender, seq = ln.split(b" ", 3)[:3]
        sender, seq = int(sender), int(seq)
        if seq != c.expected[sender]:
            fail("client %d: from %d got line %d, expected %d (order or loss)"
                 % (c.id, sender, seq, c.expected[sender]))
        c.expected[sender] += 1
        c.got += 1

    while eofs < nclients:
        if time.monotonic() > deadline:
            fail("timed out in phase %s: %d hellos, %d/%d lines at client 0, %d EOFs"
                 % (phase, hellos, clients[0].got, total, eofs))
        for key, events in sel.select(timeout=0.5):
            c = key.data
            if events & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(1 << 16)
                except BlockingIOError:
                    data = None
                except ConnectionResetError:
                    fail("client %d was reset (phase %s)" % (c.id, phase))
                if data == b"":
                    if not term_sent:
                        fail("client %d: EOF before SIGTERM" % c.id)
                    if c.inbuf:
                        fail("client %d: EOF after a partial line %r" % (c.id, c.inbuf[:60]))
                    c.eof = True
                    eofs += 1
                    sel.unregister(c.sock)
                    c.sock.close()
                    continue
                if data:
                    c.inbuf += data
                    *lines, c.inbuf = c.inbuf.split(b"\n")
                    for ln in lines:
                        on_line(c, ln)
            if events & selectors.EVENT_WRITE and c.outbuf:
                try:
                    n = c.sock.send(c.outbuf)
                    c.outbuf = c.outbuf[n:]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    fail("client %d: send failed (phase %s)" % (c.id, phase))
        # Interest in writing only while there is something to write.
        for c in clients:
            if not c.eof:
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
                if sel.get_key(c.sock).events != want:
                    sel.modify(c.sock, want, c)

        if phase == "hello" and hellos == nclients:
            phase = "talk"
            t_talk = time.monotonic()
            for c in clients:
                for _ in range(nlines):
                    c.queue_line()
        elif phase == "talk" and not term_sent:
            if args.mode == "full":
                done = all(c.got >= total for c in clients)
            else:
                done = clients[0].got >= total // 20
            if done:
                phase = "stopping"
                t_term = time.monotonic()
                server.send_signal(signal.SIGTERM)
                term_sent = True
                # Clients go on talking (the server must read and drop
                # what it does not accept, not reset us) and stop reading
                # for a moment (the server stops with lines still queued
                # for them: they must still arrive, before the EOF).
                for c in clients:
                    for _ in range(LATE_LINES):
                        c.queue_line()
                time.sleep(0.3)

    t_eofs = time.monotonic()
    # Every client closed its side after EOF; the server must finish.
    try:
        rc = server.wait(timeout=max(5.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        fail("server did not exit after SIGTERM")
    if rc != 0:
        fail("server exited with %d" % rc)

    for c in clients:
        if args.mode == "full" and min(c.expected) < nlines:
            fail("client %d got %d of %d lines" % (c.id, c.got, total))
        if c.expected != clients[0].expected:
            diff = [(s, c.expected[s], clients[0].expected[s]) for s in range(nclients)
                    if c.expected[s] != clients[0].expected[s]][:5]
            fail("client %d and client 0 got different lines (sender, count, count): %s" % (c.id, diff))
    t_exit = time.monotonic()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("chat_check: times: connect+hello %.2f s, talk %.2f s, SIGTERM to last EOF %.2f s, to exit %.2f s;"
          " server CPU %.2f s user, %.2f s sys"
          % (t_talk - t_start, t_term - t_talk, t_eofs - t_term, t_exit - t_eofs, ru.ru_utime, ru.ru_stime))
    accepted = sum(clients[0].expected)
    print("chat_check: %s: %d clients x %d lines, %d accepted lines delivered to every client, clean EOF each"
          % (args.mode, nclients, nlines, accepted))


if __name__ == "__main__":
    main()
