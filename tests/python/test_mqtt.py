# SPDX-License-Identifier: MIT
"""framebus-mqtt against a real mosquitto broker on 127.0.0.1 (started here
with a config file written here), the real framebusd and mosquitto_sub:
results per frame with their seq, state retained, availability by the last
will, a broker restart, and clear errors for bad configurations."""
import base64
import getpass
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import FRAMEBUSCTL, Daemon, wait_for, wait_running

MQTT = os.environ.get("FRAMEBUS_MQTT", "framebus-mqtt")
GRAY_PY = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples", "gray.py")


# Every process a test starts, killed after it if still running (a failed
# assertion leaves them behind).
started = []


@pytest.fixture(autouse=True)
def reap():
    yield
    while started:
        proc = started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:port, with a config of our own (no retained
    messages kept across its restarts)."""

    def __init__(self, directory, port=None, extra=""):
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = os.path.join(directory, f"mosquitto-{self.port}.conf")
        with open(self.config, "w") as f:
            # user: started as root, mosquitto would become user mosquitto,
            # who may not read the test's private directory.
            f.write(f"listener {self.port} 127.0.0.1\npersistence false\n"
                    f"user {getpass.getuser()}\n{extra or 'allow_anonymous true'}\n")
        self.log = open(os.path.join(directory, f"mosquitto-{self.port}.log"), "a")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        started.append(self.proc)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                assert self.proc.poll() is None, "mosquitto exited"
                return False
        wait_for("mosquitto to listen", listening)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def subscribe(self, topic, count=None):
        return Sub(self, topic, count)


class Sub:
    """mosquitto_sub (MQTT v5) printing topic, retain flag, user properties
    and payload, one message a line."""

    def __init__(self, broker, topic, count=None):
        # Its own file description, appending: sharing one, reading
        # (seek, read) moved the offset mosquitto_sub wrote at.
        self.out = tempfile.TemporaryFile(mode="w+")
        self.appending = open(f"/proc/self/fd/{self.out.fileno()}", "a")
        args = ["mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(broker.port),
                "-t", topic, "-F", "%t\t%r\t%P\t%p"]
        if count:
            args += ["-C", str(count)]
        self.proc = subprocess.Popen(args, stdout=self.appending, stderr=subprocess.STDOUT,
                                     text=True)
        started.append(self.proc)

    def messages(self):
        """[(topic, retained, {property: value}, payload)] so far."""
        self.out.seek(0)
        got = []
        for line in self.out.read().split("\n")[:-1]:  # whole lines only
            topic, retained, props, payload = line.split("\t", 3)
            got.append((topic, retained == "1",
                        dict(p.split(":", 1) for p in props.split()), payload))
        return got

    def wait(self, what, check, timeout=10):
        """The messages once check(messages) is true."""
        try:
            return wait_for(what, lambda: check(self.messages()) and self.messages(), timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; got {self.messages()}") from None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.appending.close()
        self.out.close()


class Proxy:
    """A TCP proxy in front of a broker that can hold back the broker's
    acknowledgements (hold.set(): PUBACKs stop arriving, the rest goes on)
    and break the connections (cut())."""

    def __init__(self, broker):
        self.broker = broker
        self.hold = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.sockets = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.broker.port))
            self.sockets += [client, server]
            threading.Thread(target=self.pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, True), daemon=True).start()

    def pipe(self, src, dst, from_broker):
        buf = b""
        try:
            while data := src.recv(65536):
                if not from_broker:
                    dst.sendall(data)
                    continue
                buf += data
                while packet := self.packet(buf):  # whole MQTT packets
                    buf = buf[len(packet):]
                    if not (packet[0] >> 4 == 4 and self.hold.is_set()):  # 4: PUBACK
                        dst.sendall(packet)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @staticmethod
    def packet(buf):
        """The MQTT packet buf starts with, if it holds all of it."""
        length, shift = 0, 0
        for i in range(1, min(len(buf), 5)):
            length |= (buf[i] & 0x7F) << shift
            shift += 7
            if not buf[i] & 0x80:
                return buf[:i + 1 + length] if len(buf) >= i + 1 + length else None
        return None

    def cut(self):
        for s in self.sockets:
            s.close()
        self.sockets = []

    def close(self):
        self.listener.close()
        self.cut()


class FakeBroker:
    """Accepts each MQTT v5 connection (CONNACK), then ends it at once: with
    a DISCONNECT whose reason is given (0x8E, session taken over, as
    Mosquitto 2.0.15 and later say to the client another replaced), or by
    closing it (as Mosquitto 2.0.11 does)."""

    def __init__(self, reason=None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"mqtt://127.0.0.1:{self.listener.getsockname()[1]}"
        self.reason = reason
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # CONNECT
                conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
                if self.reason is not None:
                    conn.sendall(bytes([0xE0, 2, self.reason, 0]))  # DISCONNECT
                    conn.recv(65536)  # until it closes

    def close(self):
        self.listener.close()


def lag(daemon, name):
    """How many frames of stream name framebus-mqtt has not read yet."""
    status = json.loads(subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "status",
                                        "--json"], capture_output=True, text=True,
                                       check=True).stdout)
    stream, = [s for s in status["streams"] if s["name"] == name]
    theirs, = [s for s in stream["subscribers"] if s["client"].startswith("framebus-mqtt")]
    return theirs["lag"]


def retained(broker, topic):
    """The message retained on topic."""
    sub = broker.subscribe(topic, count=1)
    sub.proc.wait(5)
    (_, retain, _, payload), = sub.messages()
    sub.close()
    assert retain
    return payload


class Mqtt:
    """framebus-mqtt with a config written here."""

    def __init__(self, directory, daemon, config, name="framebus-mqtt"):
        self.config = os.path.join(directory, f"{name}.conf")
        with open(self.config, "w") as f:
            f.write(config)
        self.log_path = os.path.join(directory, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([MQTT, "--config", self.config, "--socket", daemon.socket],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        started.append(self.proc)

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, text, timeout=10, count=1):
        """The log once it says text (count times)."""
        wait_for(f"framebus-mqtt to log {text!r}", lambda: self.read_log().count(text) >= count
                 or (self.proc.poll() is not None and pytest.fail(self.read_log())), timeout)
        return self.read_log()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(10) == 0, self.read_log()
        self.log.close()


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory(prefix="framebus-mqtt-") as d:
        yield d


@pytest.fixture
def broker(tmp):
    b = Broker(tmp)
    yield b
    b.stop()


def client_id(prefix="fbtest"):
    """config()'s: held on the host while framebus-mqtt runs, so one of
    this test run's own (another may run beside it)."""
    return f"{prefix}-client-{os.getpid()}"


def config(url, streams, prefix="fbtest", extra=""):
    """[mqtt] naming streams in streams = (None: extra has [stream NAME])."""
    return (f"[mqtt]\nbroker = {url}\nprefix = {prefix}\nclient_id = {client_id(prefix)}\n"
            + (f"streams = {streams}\n" if streams else "") + extra)


def results_of(messages, topic):
    return [(int(props["seq"]), payload) for t, _, props, payload in messages if t == topic]


def test_records_arrive_one_message_each_with_their_seq(daemon, bus, broker, tmp):
    """JSON records as they are, other records in an envelope; seq in a
    user property; the state retained; the end of the stream said."""
    # block: a burst waits for framebus-mqtt (a drop ring would overwrite
    # what it has not read yet, counted as missed).
    records = bus.publish_results("res.json", slots=8, policy="block", meta_max=256)
    binary = bus.publish_results("res.bin", slots=8, policy="block", meta_max=256)
    sub = broker.subscribe("fbtest/#")
    mqtt = Mqtt(tmp, daemon, config(broker.url, "res.json res.bin"))
    mqtt.wait_for_log("publishing res.bin to fbtest/res.bin/result")
    sub.wait("online", lambda m: ("fbtest/availability", "online") in [(t, p) for t, _, _, p in m])

    sent, sent_bin = {}, {}
    for i in range(20):
        doc = {"n": i, "label": "café", "boxes": [[i, 2, 3, 4]]}
        sent[records.send(json.dumps(doc))] = doc
        raw = bytes([0, 255, i, 10])
        sent_bin[binary.send(raw)] = raw
    text_seq = binary.send("not json: ünïcode")
    empty_seq = binary.send(b"")

    msgs = sub.wait("every record", lambda m: len(results_of(m, "fbtest/res.json/result")) == 20
                    and len(results_of(m, "fbtest/res.bin/result")) == 22)
    got = results_of(msgs, "fbtest/res.json/result")
    assert [seq for seq, _ in got] == sorted(sent)
    for seq, payload in got:
        assert json.loads(payload) == sent[seq]
    got_bin = dict(results_of(msgs, "fbtest/res.bin/result"))
    for seq, raw in sent_bin.items():
        env = json.loads(got_bin[seq])
        assert env["stream"] == "res.bin" and env["seq"] == seq
        assert base64.b64decode(env["meta_base64"]) == raw
        assert env["realtime_ns"] > 0
    assert json.loads(got_bin[text_seq])["meta"] == "not json: ünïcode"
    assert json.loads(got_bin[empty_seq])["meta"] is None

    # The state, retained: a subscriber that comes later gets it.
    def state():
        late = broker.subscribe("fbtest/res.json/state", count=1)
        late.proc.wait(5)
        (topic, retained, _, payload), = late.messages()
        late.close()
        assert retained
        return json.loads(payload)
    s = wait_for("a state with every record", lambda: (lambda s: s["frames"] == 20 and s)(state()))
    assert s["state"] == "running" and s["seq"] == max(sent) and s["sent"] == 20
    assert s["dropped"] == 0 and s["missed"] == 0

    records.close()
    assert wait_for("the state to say ended", lambda: state()["state"] == "ended")
    mqtt.stop()
    assert "res.json ended" in mqtt.read_log()
    # A clean stop says offline itself.
    last = sub.wait("offline", lambda m: m[-1][0] == "fbtest/availability")[-1]
    assert last[3] == "offline"
    sub.close()
    binary.close()


def test_gray_py_results_arrive_per_frame_with_the_right_seq(daemon, bus, broker, tmp):
    """The demo's gray.py, its JSON per frame: MQTT's messages are the frames
    a subscriber of cam0.gray reads, seq for seq."""
    wait_running(bus, "cam0")
    # block: gray.py waits for its queue readers, so neither misses a frame.
    gray = subprocess.Popen([sys.executable, GRAY_PY, "--socket", daemon.socket,
                             "--output", "cam0.grayq", "--policy", "block"],
                            stdout=subprocess.PIPE, text=True)
    started.append(gray)
    assert "-> cam0.grayq" in gray.stdout.readline()
    seen = {}

    def read(reader):
        for frame in reader:  # to its end: gray.py ends its stream
            seen[frame.seq] = (frame.source_seq, json.loads(bytes(frame.meta)))
    thread = threading.Thread(target=read, args=(bus.subscribe("cam0.grayq", mode="queue"),))
    thread.start()
    sub = broker.subscribe("fbtest/gray/result")
    mqtt = Mqtt(tmp, daemon, config(broker.url, None, extra="[stream cam0.grayq]\ntopic = gray\n"))
    mqtt.wait_for_log("publishing cam0.grayq to fbtest/gray/result")
    sub.wait("30 results", lambda m: len(m) >= 30)
    gray.terminate()
    gray.wait(10)
    thread.join(10)
    msgs = sub.messages()
    assert len(msgs) >= 30
    for topic, _, props, payload in msgs:
        seq = int(props["seq"])
        source_seq, result = seen[seq]
        assert int(props["source_seq"]) == source_seq
        assert json.loads(payload) == result and set(result) == {"mean", "process_us"}
    seqs = [int(p["seq"]) for _, _, p, _ in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a frame went missing"
    mqtt.stop()
    sub.close()


def test_a_clean_stop_at_qos_1_says_offline_with_results_unacknowledged(daemon, bus, broker,
                                                                       tmp):
    """QoS 1 and a broker whose acknowledgements stop arriving (held back by
    a proxy): libmosquitto keeps all but 20 unacknowledged messages back, and
    an "offline" at QoS 1 would wait behind them.  A clean stop still leaves
    availability offline, and counts what was not acknowledged as unsent."""
    records = bus.publish_results("res.qos1", slots=8, policy="block", meta_max=64)
    proxy = Proxy(broker)
    try:
        sub = broker.subscribe("fbtest/#")
        mqtt = Mqtt(tmp, daemon, config(proxy.url, "res.qos1", extra="qos = 1\n"))
        mqtt.wait_for_log("publishing res.qos1")
        sub.wait("online", lambda m: ("fbtest/availability", "online") in
                 [(t, p) for t, _, _, p in m])
        for i in range(5):
            records.send(json.dumps({"i": i}))
        sub.wait("5 acknowledged", lambda m: any(
            t == "fbtest/res.qos1/state" and json.loads(p)["sent"] == 5 for t, _, _, p in m))
        proxy.hold.set()
        for i in range(100):
            records.send(json.dumps({"i": 5 + i}))
        # The broker gets what libmosquitto sends unacknowledged (20, some
        # of them states), then nothing.
        sub.wait("results unacknowledged", lambda m: len(
            results_of(m, "fbtest/res.qos1/result")) >= 5 + 15)
        mqtt.stop()
        assert retained(broker, "fbtest/availability") == "offline"
        assert "res.qos1: 105 frames, 5 sent, 0 dropped, 100 unsent at stop, 0 missed" \
            in mqtt.read_log()
        sub.close()
    finally:
        proxy.close()
    records.close()


def test_a_stream_that_comes_later_and_one_that_returns(daemon, bus, broker, tmp):
    """A stream not there at start is published once it appears; one that
    ends, once it comes back (subscribed anew); the state says each."""
    sub = broker.subscribe("fbtest/#")
    mqtt = Mqtt(tmp, daemon, config(broker.url, "res.late"))
    mqtt.wait_for_log("connected to")

    def states(m):
        return [json.loads(p)["state"] for t, _, _, p in m if t == "fbtest/res.late/state"]
    sub.wait("absent", lambda m: "absent" in states(m))
    for n in (1, 2):
        records = bus.publish_results("res.late", slots=4, policy="block", meta_max=64)
        mqtt.wait_for_log("publishing res.late to fbtest/res.late/result", count=n)
        seq = records.send(json.dumps({"round": n}))
        sub.wait(f"round {n}", lambda m: (seq, json.dumps({"round": n})) in
                 results_of(m, "fbtest/res.late/result"))
        records.close()
        mqtt.wait_for_log("res.late ended", count=n)
        sub.wait("ended", lambda m: states(m)[-1] == "ended")
    got = [json.loads(p)["round"] for _, p in results_of(sub.messages(), "fbtest/res.late/result")]
    assert got == [1, 2]
    mqtt.stop()
    sub.close()


def test_a_flapping_connection_does_not_grow_a_backlog_in_libmosquitto(daemon, bus, broker,
                                                                      tmp):
    """QoS 1, no acknowledgements, the connection broken twice: libmosquitto
    sends its unacknowledged messages again on each connection, and they
    stay in the window of 64 (which used to start again from 0 on each
    connection, handing libmosquitto 64 more each time): results beyond it
    wait in the queue (10 here) or are dropped."""
    records = bus.publish_results("res.flap", slots=8, policy="block", meta_max=64)
    proxy = Proxy(broker)
    try:
        mqtt = Mqtt(tmp, daemon, config(proxy.url, "res.flap", extra="qos = 1\nqueue = 10\n"))
        mqtt.wait_for_log("publishing res.flap")
        mqtt.wait_for_log("connected to")
        proxy.hold.set()
        for n in (1, 2, 3):
            for i in range(100):
                records.send(json.dumps({"i": i}))
            if n < 3:
                proxy.cut()
                mqtt.wait_for_log("connected to", count=n + 1, timeout=20)
        wait_for("every record read", lambda: lag(daemon, "res.flap") == 0)
        mqtt.stop()
        line, = [line for line in mqtt.read_log().splitlines() if "res.flap: " in line]
        counts = dict((what, int(n)) for n, what in re.findall(r"(\d+) (\w+)", line))
        assert counts["frames"] == 300 and counts["sent"] == 0, line
        assert counts["dropped"] + counts["unsent"] == 300, line
        assert counts["unsent"] <= 64 + 10, line
    finally:
        proxy.close()
    records.close()


def test_the_last_will_says_offline_when_killed(daemon, bus, broker, tmp):
    records = bus.publish_results("res.will", slots=4, meta_max=64)
    mqtt = Mqtt(tmp, daemon, config(broker.url, None, extra="[stream res.will]\n"))  # empty
    mqtt.wait_for_log("connected to")

    assert wait_for("online", lambda: retained(broker, "fbtest/availability") == "online")
    mqtt.proc.kill()
    mqtt.proc.wait()
    # The broker publishes the will once it sees the connection closed.
    assert wait_for("offline", lambda: retained(broker, "fbtest/availability") == "offline")
    records.close()


def test_a_broker_restart_costs_queued_messages_not_frames(daemon, bus, broker, tmp):
    """While the broker is away the queue (5 here) loses its oldest
    messages, counted; framebus-mqtt's subscription keeps up (it misses
    nothing, its publisher drops nothing); publishing resumes by itself."""
    records = bus.publish_results("res.restart", slots=4, policy="drop", meta_max=64)
    stop = threading.Event()
    seqs = []

    def produce():
        while not stop.is_set():
            seqs.append(records.send(json.dumps({"i": len(seqs)})))
            time.sleep(0.005)
    mqtt = Mqtt(tmp, daemon, config(broker.url, "res.restart", extra="queue = 5\n"))
    mqtt.wait_for_log("connected to")
    thread = threading.Thread(target=produce)
    thread.start()
    try:
        sub = broker.subscribe("fbtest/res.restart/result")
        sub.wait("results", lambda m: len(m) >= 10)
        sub.close()
        broker.stop()
        mqtt.wait_for_log("lost the broker")
        before = len(seqs)
        wait_for("records while the broker is away", lambda: len(seqs) > before + 100)
        broker.start()
        mqtt.wait_for_log(f"connected to {broker.url}", timeout=20, count=2)
        after = len(seqs)
        sub = broker.subscribe("fbtest/#")
        msgs = sub.wait("results after the restart", lambda m: any(
            t.endswith("/result") and int(p["seq"]) > seqs[after - 1] for t, _, p, _ in m))
        # The broker lost its retained messages: framebus-mqtt says them again.
        msgs = sub.wait("the state again", lambda m: any(
            t == "fbtest/res.restart/state" and json.loads(p)["dropped"] > 0
            for t, _, _, p in m))
    finally:
        stop.set()
        thread.join()
    state = [json.loads(p) for t, _, _, p in msgs if t == "fbtest/res.restart/state"][-1]
    assert state["missed"] == 0 and state["dropped"] > 0
    status = json.loads(subprocess.run([FRAMEBUSCTL, "--socket", daemon.socket, "status",
                                        "--json"], capture_output=True, text=True,
                                       check=True).stdout)
    stream, = [s for s in status["streams"] if s["name"] == "res.restart"]
    assert stream["dropped"] == 0, stream
    theirs, = [s for s in stream["subscribers"] if s["client"].startswith("framebus-mqtt")]
    assert theirs["missed"] == 0, theirs
    sub.close()
    mqtt.stop()
    assert f"dropped" in mqtt.read_log()
    records.close()


def test_the_queue_holds_queue_bytes_at_most(daemon, bus, tmp):
    """Large results are bounded by bytes too, not only by count: 64 KiB
    hold 65 results of 1000 bytes, the rest are dropped oldest first (the
    broker is never reached; the exit line counts them)."""
    records = bus.publish_results("res.big", slots=8, policy="block", meta_max=1024)
    mqtt = Mqtt(tmp, daemon, config(f"mqtt://127.0.0.1:{free_port()}", "res.big",
                                     extra="queue_bytes = 64K\n"))
    mqtt.wait_for_log("publishing res.big")
    record = json.dumps({"p": ""})
    record = json.dumps({"p": "x" * (1000 - len(record))})
    assert len(record) == 1000
    for _ in range(200):
        records.send(record)
    wait_for("every record read", lambda: lag(daemon, "res.big") == 0)
    mqtt.stop()
    assert "res.big: 200 frames, 0 sent, 135 dropped, 65 unsent at stop, 0 missed" \
        in mqtt.read_log()
    records.close()


def test_it_follows_framebusd_through_a_restart(broker, tmp):
    """framebusd killed and started again: the state says daemon-gone, then
    framebus-mqtt subscribes again by itself and results flow again."""
    daemon = Daemon()
    try:
        sub = broker.subscribe("fbtest/#")
        mqtt = Mqtt(tmp, daemon, config(broker.url, "cam0"))
        sub.wait("results", lambda m: len(results_of(m, "fbtest/cam0/result")) >= 5)
        daemon.kill()
        sub.wait("daemon-gone", lambda m: any(
            t == "fbtest/cam0/state" and json.loads(p)["state"] == "daemon-gone"
            for t, _, _, p in m))
        before = len(results_of(sub.messages(), "fbtest/cam0/result"))
        daemon.start()
        mqtt.wait_for_log("subscribed to cam0 again")
        sub.wait("results again", lambda m: len(results_of(m, "fbtest/cam0/result")) >= before + 5)
        sub.wait("running again", lambda m: [json.loads(p)["state"] for t, _, _, p in m
                                             if t == "fbtest/cam0/state"][-1] == "running")
        mqtt.stop()
        sub.close()
    finally:
        daemon.stop()


def test_tls_with_a_ca_file(daemon, tmp):
    """mqtts:// to a broker whose certificate a private CA signed, named by
    ca_file; without it the system's CAs do not know it: said so."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(tmp, "san"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san", "-out", "server.pem")
    broker = Broker(tmp, extra=f"allow_anonymous true\ncafile {tmp}/ca.pem\n"
                    f"certfile {tmp}/server.pem\nkeyfile {tmp}/server.key")
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        unknown = Mqtt(tmp, daemon, config(url, "cam0", prefix="tls1"), name="unknown")
        log = unknown.wait_for_log("cannot connect")
        assert f"cannot connect to broker {url}: A TLS error occurred. (error:" in log
        assert "certificate verify failed" in log and "connected to" not in log
        unknown.stop()
        mqtt = Mqtt(tmp, daemon, config(url, "cam0", extra=f"ca_file = {tmp}/ca.pem\n"))
        mqtt.wait_for_log(f"connected to {url}")
        got = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "--cafile",
                              f"{tmp}/ca.pem", "-h", "127.0.0.1", "-t", "fbtest/cam0/result",
                              "-C", "2", "-W", "10"], capture_output=True, text=True)
        assert got.returncode == 0, got.stdout + got.stderr
        assert [json.loads(line)["stream"] for line in got.stdout.splitlines()] == ["cam0"] * 2
        mqtt.stop()
    finally:
        broker.stop()


def test_an_unreachable_broker_is_named_and_tried_again(daemon, bus, tmp):
    records = bus.publish_results("res.later", slots=4, meta_max=64)
    port = free_port()
    mqtt = Mqtt(tmp, daemon, config(f"mqtt://127.0.0.1:{port}", "res.later"))
    log = mqtt.wait_for_log("Connection refused")
    assert f"cannot connect to broker mqtt://127.0.0.1:{port}: Connection refused (next try" in log
    assert mqtt.proc.poll() is None, "it gave up"
    broker = Broker(tmp, port=port)
    try:
        mqtt.wait_for_log("connected to", timeout=40)
        sub = broker.subscribe("fbtest/#")
        sub.wait("online", lambda m: ("fbtest/availability", True, {}, "online") in m)
        seq = records.send('{"late":true}')
        msgs = sub.wait("the record", lambda m: results_of(m, "fbtest/res.later/result"))
        assert results_of(msgs, "fbtest/res.later/result") == [(seq, '{"late":true}')]
        sub.close()
        mqtt.stop()
    finally:
        broker.stop()
    records.close()


def test_credentials_come_from_their_file(daemon, bus, tmp):
    """The password is the rest of its line but the white space at either
    end: ';' and '#' in it are not comments, and it may be long."""
    password = "s3cret ;not a comment # = nor this " + "x" * 300
    passwd = os.path.join(tmp, "passwd")
    subprocess.run(["mosquitto_passwd", "-b", "-c", passwd, "cam", password], check=True,
                   capture_output=True)
    broker = Broker(tmp, extra=f"allow_anonymous false\npassword_file {passwd}")
    good, bad = os.path.join(tmp, "good"), os.path.join(tmp, "bad")
    with open(good, "w") as f:
        f.write(f"# for the broker\n\n  username=cam\n; the password\npassword =\t {password} \t\r\n")
    with open(bad, "w") as f:
        f.write("username = cam\npassword = wrong\n")
    os.chmod(good, 0o600)
    os.chmod(bad, 0o600)
    try:
        refused = Mqtt(tmp, daemon, config(broker.url, "cam0", extra=f"credentials_file = {bad}\n"),
                       name="refused")
        log = refused.wait_for_log("refused the connection")
        assert f"broker {broker.url} refused the connection: Not authorized (next try" in log
        assert "protocol error" not in log
        refused.stop()
        mqtt = Mqtt(tmp, daemon, config(broker.url, "cam0", extra=f"credentials_file = {good}\n"))
        mqtt.wait_for_log("connected to")
        authed = subprocess.run(["mosquitto_sub", "-V", "mqttv5", "-p", str(broker.port),
                                 "-u", "cam", "-P", password, "-t", "fbtest/cam0/result",
                                 "-C", "3", "-W", "10"], capture_output=True, text=True)
        assert authed.returncode == 0, authed.stdout + authed.stderr
        assert all(json.loads(line)["stream"] == "cam0" for line in authed.stdout.splitlines())
        mqtt.stop()
    finally:
        broker.stop()


def test_one_client_id_is_held_by_one_framebus_mqtt(daemon, bus, broker, tmp):
    """A second framebus-mqtt with the same client id would take the
    broker's session from the first, and the first take it back: it is
    refused, and the first goes on."""
    first = Mqtt(tmp, daemon, config(broker.url, "cam0"), name="first")
    first.wait_for_log("connected to")
    second = Mqtt(tmp, daemon, config(broker.url, "cam0"), name="second")
    assert second.proc.wait(10) == 3  # systemd does not restart it
    assert f"another framebus-mqtt on this host has client id '{client_id()}'" \
        in second.read_log()
    third = Mqtt(tmp, daemon, config(broker.url, "cam0", prefix="other"), name="third")
    third.wait_for_log("connected to")
    assert first.proc.poll() is None and "lost the broker" not in first.read_log()
    third.stop()
    first.stop()
    second.log.close()


def test_a_session_taken_over_stops_it_for_good(daemon, tmp):
    """The broker says another client took the session over (0x8E): another
    host has our client id, and starting again would take it back: exit 3,
    which the unit's RestartPreventExitStatus= names."""
    fake = FakeBroker(reason=0x8E)
    try:
        mqtt = Mqtt(tmp, daemon, config(fake.url, "cam0"))
        assert mqtt.proc.wait(10) == 3, mqtt.read_log()
        assert f"another client connected to {fake.url} with client id '{client_id()}'" \
            in mqtt.read_log()
        mqtt.log.close()
    finally:
        fake.close()


def test_a_connection_ended_at_once_does_not_reset_the_backoff(daemon, tmp):
    """Mosquitto 2.0.11 just closes the connection of a client another with
    the same id replaced: each connection is accepted, then ended.  The
    backoff goes on growing (it used to start again at 0.5 s on every
    accepted connection: the two clients took turns twice a second), and
    the log says what may be going on."""
    fake = FakeBroker()
    try:
        mqtt = Mqtt(tmp, daemon, config(fake.url, "cam0"))
        wait_for("three connections lost",
                 lambda: mqtt.read_log().count("lost the broker") >= 3, timeout=20)
        lost = [line for line in mqtt.read_log().splitlines() if "lost the broker" in line]
        assert [line.split("(next try in ")[1].split(")")[0] for line in lost[:3]] == \
            ["1.0 s", "2.0 s", "4.0 s"], lost
        assert f"if this repeats, another client may have client id '{client_id()}'" in lost[0]
        mqtt.stop()
    finally:
        fake.close()


def test_the_default_client_id_comes_from_the_machine_id(daemon, bus, broker, tmp):
    """Not the host name, which hosts cloned from one image share; the same
    at every start, so the broker ends the previous session."""
    ids = []
    for name in ("one", "two"):
        mqtt = Mqtt(tmp, daemon, f"[mqtt]\nbroker = {broker.url}\nstreams = cam0\n", name=name)
        log = mqtt.wait_for_log("connected to")
        ids.append(log.split(f"connected to {broker.url} as ")[1].split("\n")[0])
        mqtt.stop()
    assert ids[0] == ids[1] and ids[0] != f"framebus-mqtt-{socket.gethostname()}"
    if os.path.exists("/etc/machine-id"):
        assert re.fullmatch(r"framebus-mqtt-[0-9a-f]{16}", ids[0]), ids
        with open("/etc/machine-id") as f:
            assert f.read().strip()[:16] not in ids[0]  # a hash of it, not it


@pytest.mark.parametrize("text, error", [
    ("[mqtt]\nbroker = http://127.0.0.1:1883\nstreams = a\n",
     ":2: [mqtt] broker: 'http://127.0.0.1:1883' must start with mqtt:// or mqtts:// (TLS)"),
    ("[mqtt]\nbroker = mqtt://127.0.0.1:99999\nstreams = a\n",
     ":2: [mqtt] broker: 'mqtt://127.0.0.1:99999' the port must be a number from 1 to 65535"),
    ("[mqtt]\nbroker = mqtt://h\ncolour = blue\n", ":3: [mqtt] colour: unknown key"),
    ("[mqtt]\nbroker = mqtt://h\nqos = 3\n", ":3: [mqtt] qos: '3' is not 0, 1 or 2"),
    ("[mqtt]\nbroker = mqtt://h\nprefix = a/#\n", ":3: [mqtt] prefix: 'a/#' is not a topic"),
    ("[mqtt]\nbroker = mqtt://h\nqueue_bytes = 1K\n",
     ":3: [mqtt] queue_bytes: '1K' is not a size from 64K to 1G (bytes, or with K, M or G)"),
    ("[mqtt]\nbroker = mqtt://h\nqueue_bytes = 2T\n", ":3: [mqtt] queue_bytes: '2T' is not a size"),
    ("[mqtt]\nbroker = mqtt://h\n[stream cam0]\nqos = 1\nfps = 2\n",
     ":5: [stream cam0] fps: unknown key"),
    ("[mqtt]\nbroker = mqtt://h\nstreams = a b a\n", ":3: [mqtt] streams: stream 'a' is named twice"),
    ("[mqtt]\nbroker = mqtt://h\nstreams = a/b\n", "stream name 'a/b' must be"),
    ("[mqtt]\nstreams = a\n", ": [mqtt] broker: missing"),
    ("[mqtt]\nbroker = mqtt://h\n", ": no stream to publish"),
    ("[mqtt]\nbroker = mqtt://h\nca_file = /etc/hostname\nstreams = a\n",
     "ca_file: is for mqtts:// brokers, and broker is mqtt://h"),
    ("[mqtt]\nbroker = mqtts://h\nca_file = /nonexistent/ca.pem\nstreams = a\n",
     "ca_file: /nonexistent/ca.pem: No such file or directory"),
    ("[mqtt]\nbroker = mqtt://h\ncredentials_file = /nonexistent/creds\nstreams = a\n",
     "/nonexistent/creds: No such file or directory"),
    ("[mqtt]\nbroker = mqtt://h\nstreams = a\n[output x]\nurl = y\n",
     ":5: [output x] url: unknown section (expected [mqtt] or [stream NAME])"),
    # inih reads 199 characters a line: a longer one is refused where it is
    # (not read as two lines), one of 199 is whole and the next counted right.
    ("[mqtt]\nbroker = mqtt://h\nstreams = " + " ".join(f"camera{i:02d}.people" for i in range(12))
     + "\nqos = 1\n", ":3: line longer than 199 characters"),
    ("[mqtt]\nbroker = mqtt://h\n" + ("streams = a" + " " * 200)[:199] + "\ncolour = blue\n",
     ":4: [mqtt] colour: unknown key"),
])
def test_a_bad_configuration_is_named(daemon, tmp, text, error):
    path = os.path.join(tmp, "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([MQTT, "--config", path, "--socket", daemon.socket], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
    assert r.stderr.startswith("framebus-mqtt: " + (path if error[0] == ":" else "")), r.stderr
    assert error in r.stderr, r.stderr


def test_a_bad_credentials_file_is_named(daemon, tmp):
    creds = os.path.join(tmp, "creds")
    with open(creds, "w") as f:
        f.write("user = cam\n")
    path = os.path.join(tmp, "c.conf")
    with open(path, "w") as f:
        f.write(f"[mqtt]\nbroker = mqtt://h\ncredentials_file = {creds}\nstreams = a\n")
    r = subprocess.run([MQTT, "--config", path, "--socket", daemon.socket], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
    assert f"{creds}:1: user: unknown key (expected username or password)" in r.stderr
    with open(creds, "w") as f:
        f.write("username = cam\n[mqtt]\n")
    r = subprocess.run([MQTT, "--config", path, "--socket", daemon.socket], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
    assert f"{creds}:2: expected username = or password = (or a comment)" in r.stderr
