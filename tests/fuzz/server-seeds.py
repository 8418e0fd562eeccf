#!/usr/bin/env python3
# Writes the seed corpus of fuzz-server (tests/fuzz/corpus/server/): client
# sessions as the harness's records (fuzz-server.c explains them).  Run it
# again when the protocol changes (libframebus/protocol-private.h).
import os
import struct
import sys

(HELLO, LIST, INFO, SUBSCRIBE, UNSUBSCRIBE, STATS, CREATE, DESTROY, DETAIL,
 DERIVE, LIMITS) = range(1, 12)
A, B = 0, 1
SEND, FDS, RING, HANGUP = 0, 1, 2, 3
NOREAD = 0x40
BGR24, GRAY8, NV12 = 2, 1, 5
LATEST, QUEUE = 0, 1


def name(s, size=64):
    return s.encode().ljust(size, b"\0")[:size]


def msg(opcode, payload=b"", seq=1, n_fds=0, size=None):
    return struct.pack("<4I", opcode, 16 + len(payload) if size is None else size, seq,
                       n_fds) + payload


def hello(seq=1, version=2, who="fuzz"):
    return msg(HELLO, struct.pack("<II", version, 0) + name(who), seq)


def subscribe(stream, mode=QUEUE, holds=0, seq=2):
    return msg(SUBSCRIBE, name(stream) + struct.pack("<II", mode, holds), seq)


def derive(parent, w=0, h=0, fmt=0, fps_milli=0, crop=(0, 0, 0, 0), mode=LATEST, holds=0,
           seq=2, reserved=0):
    return msg(DERIVE, name(parent) + struct.pack("<2I", mode, holds)
               + struct.pack("<8I", w, h, fmt, fps_milli, *crop)
               + struct.pack("<8I", reserved, 0, 0, 0, 0, 0, 0, 0), seq)


def create(stream, w=64, h=48, fmt=BGR24, slots=4, policy=0, meta=0, seq=2):
    return msg(CREATE, name(stream) + struct.pack("<6I", w, h, fmt, slots, policy, meta), seq,
               n_fds=3)


def ident(opcode, i, seq=3):
    return msg(opcode, struct.pack("<II", i, 0), seq)


def record(conn, action, payload=b"", n_fds=0, flags=0):
    return struct.pack("<BH", conn | action << 1 | n_fds << 3 | flags, len(payload)) + payload


SEEDS = {
    "hello": [record(A, SEND, hello())],
    "no-hello": [record(A, SEND, msg(LIST))],
    "hello-twice": [record(A, SEND, hello()), record(A, SEND, hello(2))],
    "wrong-version": [record(A, SEND, hello(version=7))],
    "bad-name": [record(A, SEND, hello(who="\x01bad"))],
    "malformed-size": [record(A, SEND, hello()), record(A, SEND, msg(LIST, size=400))],
    "unknown-opcode": [record(A, SEND, hello()), record(A, SEND, msg(99))],
    "reply-opcode": [record(A, SEND, hello()), record(A, SEND, msg(65))],
    "fds-on-list": [record(A, SEND, hello()), record(A, FDS, msg(LIST, n_fds=2), 2)],
    "list-info-stats": [
        record(A, SEND, hello()),
        record(A, SEND, msg(LIST, seq=2)),
        record(A, SEND, msg(INFO, name("live"), 3)),
        record(A, SEND, msg(INFO, name("starting"), 4)),
        record(A, SEND, msg(INFO, name("nothing"), 5)),
        record(A, SEND, msg(STATS, name("live"), 6)),
        record(A, SEND, msg(INFO, b"\xff" * 64, 7)),
    ],
    "subscribe-unsubscribe": [
        record(A, SEND, hello()),
        record(A, SEND, subscribe("live", QUEUE, 0, 2)),
        record(A, SEND, subscribe("live", LATEST, 3, 3)),
        record(A, SEND, msg(STATS, name("live"), 4)),
        record(A, SEND, msg(DETAIL, name("live"), 7)),
        record(A, SEND, msg(DETAIL, name("starting"), 8)),
        record(A, SEND, ident(UNSUBSCRIBE, 1, 5)),
        record(A, SEND, ident(UNSUBSCRIBE, 99, 6)),
    ],
    "subscribe-refused": [
        record(A, SEND, hello()),
        record(A, SEND, subscribe("starting", QUEUE, 0, 2)),
        record(A, SEND, subscribe("live", 7, 0, 3)),
        record(A, SEND, subscribe("live", QUEUE, 4, 4)),
        record(A, SEND, subscribe("nothing", QUEUE, 0, 5)),
    ],
    "subscribe-to-the-limit": [record(A, SEND, hello())]
    + [record(A, SEND, subscribe("live", i % 2, 1, 2 + i)) for i in range(8)],
    "subscribe-then-hang-up": [
        record(A, SEND, hello()),
        record(A, SEND, subscribe("live")),
        record(A, HANGUP),
        record(A, SEND, hello()),
        record(A, SEND, msg(STATS, name("live"), 2)),
    ],
    "publish-subscribe-withdraw": [
        record(A, SEND, hello(who="publisher")),
        record(A, RING, create("pub")),
        record(B, SEND, hello(who="subscriber")),
        record(B, SEND, subscribe("pub", QUEUE, 0, 2)),
        record(B, SEND, msg(STATS, name("pub"), 3)),
        record(A, SEND, ident(DESTROY, 1, 3)),
        record(B, SEND, msg(LIST, seq=4)),
    ],
    "publisher-hangs-up": [
        record(A, SEND, hello(who="publisher")),
        record(A, RING, create("pub", 32, 32, NV12, 3, 1, 64)),
        record(B, SEND, hello(who="subscriber")),
        record(B, SEND, subscribe("pub", LATEST, 2, 2)),
        record(A, HANGUP),
        record(B, SEND, subscribe("pub", QUEUE, 0, 3)),
        record(B, SEND, msg(LIST, seq=4)),
    ],
    "publish-refused": [
        record(A, SEND, hello()),
        record(A, FDS, create("empty"), 3),
        record(A, RING, create("live")),
        record(A, RING, create("odd", 33, 33, NV12)),
        record(A, RING, create("mismatch"), 1),
        record(A, RING, create("meta")[:-4] + struct.pack("<I", 16)),
        record(A, RING, create("big", 1920, 1080, BGR24, 8)),
        record(A, RING, create("one", seq=3)),
        record(A, RING, create("two", seq=4)),
        record(A, RING, create("three", seq=5)),
        record(A, SEND, ident(DESTROY, 77, 6)),
    ],
    "derive-share-hang-up": [
        record(A, SEND, hello(who="a")),
        record(A, SEND, derive("live", 32, 24, GRAY8, seq=2)),
        record(B, SEND, hello(who="b")),
        record(B, SEND, derive("live", 32, 24, GRAY8, seq=2)),
        record(B, SEND, derive("live", 0, 0, 0, 5000, (8, 8, 16, 16), QUEUE, 1, 3)),
        record(A, SEND, msg(LIST, seq=3)),
        record(A, SEND, ident(UNSUBSCRIBE, 1, 4)),
        record(B, HANGUP),
        record(A, SEND, msg(LIST, seq=5)),
    ],
    "derive-refused": [
        record(A, SEND, hello()),
        record(A, SEND, derive("starting", 32, 24, seq=2)),
        record(A, SEND, derive("nothing", 32, 24, seq=3)),
        record(A, SEND, derive("live", 33, 24, NV12, seq=4)),
        record(A, SEND, derive("live", 32, 0, seq=5)),
        record(A, SEND, derive("live", fmt=99, seq=6)),
        record(A, SEND, derive("live", crop=(60, 0, 40, 40), seq=7)),
        record(A, SEND, derive("live", crop=(2 ** 32 - 1, 0, 2, 2), seq=12)),
        record(A, SEND, derive("live", fps_milli=10 ** 9, seq=8)),
        record(A, SEND, derive("live", reserved=1, seq=9)),
        record(A, SEND, derive("live", 32, 24, mode=5, seq=10)),
        record(A, SEND, derive("live", 32, 24, holds=60, seq=11)),
    ],
    "limits": [
        record(A, SEND, hello()),
        record(A, SEND, msg(LIMITS, seq=2)),
        record(A, SEND, subscribe("live", QUEUE, 0, 3)),
        record(A, SEND, msg(LIMITS, seq=4)),
        record(A, SEND, msg(LIMITS, b"\x01" * 8, seq=5)),
    ],
    "unread-replies": [record(A, SEND, hello())]
    + [record(A, SEND, msg(LIST, seq=2 + i), flags=NOREAD) for i in range(40)]
    + [record(A, SEND, msg(LIST, seq=50))],
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                          "server")
os.makedirs(out, exist_ok=True)
for seed, records in SEEDS.items():
    with open(os.path.join(out, seed), "wb") as f:
        f.write(b"".join(records))
