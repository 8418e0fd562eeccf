# SPDX-License-Identifier: MIT
"""Frames as DLPack tensors (python/framebus/dlpack.c): torch.from_dlpack and
numpy.from_dlpack see the slot itself, and the frame stays held while the
tensor lives."""
import ctypes
import gc
import resource
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import framebus
from conftest import in_a_ring, wait_running

try:
    import torch
except ImportError as e:  # a dependency, not an option: fail, do not skip
    raise ImportError("tests/python/test_dlpack.py needs PyTorch (Debian's python3-torch, "
                      "in FRAMEBUS_PACKAGES of scripts/lib.sh)") from e


def publish_one(pub, value):
    with pub.frame() as out:
        out.array[:] = value


# The DLPack structures as dlpack.h declares them, to read a capsule as a
# consumer does.
class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32),
                ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32),
                ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16),
                ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # called without the GIL, as torch does


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", DELETER)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32),
                ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


capsule_name = ctypes.pythonapi.PyCapsule_GetName
capsule_name.restype, capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
capsule_pointer.restype, capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                      ctypes.c_char_p]
capsule_rename = ctypes.pythonapi.PyCapsule_SetName
capsule_rename.restype, capsule_rename.argtypes = ctypes.c_int, [ctypes.py_object,
                                                                 ctypes.c_char_p]


def test_a_torch_tensor_is_the_slot_itself(bus):
    wait_running(bus, "cam0")
    sub = bus.subscribe("cam0")
    with sub.acquire(timeout=2) as frame:
        a = frame.array
        ptr = a.__array_interface__["data"][0]
        assert frame.__dlpack_device__() == (1, 0)  # kDLCPU
        t = torch.from_dlpack(frame)
        assert t.data_ptr() == ptr
        assert in_a_ring(t.data_ptr(), a.strides[0] * 240)
        assert t.device.type == "cpu" and t.dtype == torch.uint8
        assert tuple(t.shape) == a.shape == (240, 320, 3)
        assert t.stride() == a.strides == (960, 3, 1)  # elements: bytes for uint8
        assert torch.equal(t, torch.from_numpy(a.copy()))
        assert a.std() > 10  # a test pattern, not an empty buffer
        del a, t
    assert frame.released and sub.held == 0
    sub.close()


@pytest.mark.parametrize("fmt,shape", [("gray8", (36, 100)), ("bgra", (36, 100, 4)),
                                       ("rgb24", (36, 100, 3)), ("nv12", (54, 100)),
                                       ("yuv420p", (54, 100))])
def test_every_format_has_the_arrays_shape_and_strides(bus, fmt, shape):
    # 100 pixels a row: rows are padded to 64 bytes, so strides are not the width.
    pub = bus.publish(f"py.dl.{fmt}", 100, 36, format=fmt, slots=4)
    sub = bus.subscribe(pub.name)
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    with pub.frame() as out:
        out.array[:] = pixels
    with sub.acquire(timeout=2) as frame:
        a = frame.array
        assert a.strides[0] > a.shape[1] * (a.shape[2] if a.ndim == 3 else 1)
        t = torch.from_dlpack(frame)
        n = np.from_dlpack(frame)
        assert tuple(t.shape) == n.shape == a.shape == shape
        assert t.stride() == n.strides == a.strides
        assert t.data_ptr() == n.ctypes.data == a.ctypes.data
        assert np.array_equal(t.numpy(), pixels) and np.array_equal(n, pixels)
        del a, t, n
    sub.close()
    pub.close()


def test_a_tensor_keeps_its_frame_held_until_it_is_freed(bus):
    pub = bus.publish("py.dl.hold", 64, 48, format="gray8", slots=4)
    sub = bus.subscribe(pub.name, max_holds=2)
    publish_one(pub, 1)
    with sub.acquire(timeout=2) as frame:
        t = torch.from_dlpack(frame)
    # The with block ended: the frame is released, but the tensor holds it.
    assert not frame.released and sub.held == 1 and pub.stats["held"] == 1
    for value in range(2, 12):  # 10 frames through a 4-slot ring
        publish_one(pub, value)
    assert int(t.min()) == int(t.max()) == 1, "the slot was reused under a live tensor"
    view = t[10:20, 10:20]  # a view shares the tensor's storage, and its hold
    del t
    gc.collect()
    assert sub.held == 1
    # Tensors count against the hold limit, as arrays do.
    second = torch.from_dlpack(sub.acquire(timeout=2))
    assert sub.held == 2
    with pytest.raises(framebus.HoldLimitError):
        sub.acquire(timeout=2)
    del view, second
    gc.collect()
    assert frame.released and sub.held == 0 and pub.stats["held"] == 0
    with pytest.raises(BufferError, match="released"):
        torch.from_dlpack(frame)
    sub.close()
    pub.close()


def test_numpy_from_dlpack_is_a_read_only_view_that_holds_the_frame(bus):
    pub = bus.publish("py.dl.numpy", 64, 48, format="gray8", slots=4)
    sub = bus.subscribe(pub.name)
    publish_one(pub, 9)
    frame = sub.acquire(timeout=2)
    # numpy 1.24 calls __dlpack__() with no arguments (legacy capsule).
    n = np.from_dlpack(frame)
    frame.release()
    assert n.ctypes.data == np.asarray(n).ctypes.data and in_a_ring(n.ctypes.data, n.nbytes)
    assert not n.flags.writeable and not n.flags.owndata
    assert sub.held == 1 and not frame.released
    assert int(n.sum()) == 9 * 64 * 48
    del n
    gc.collect()
    assert frame.released and sub.held == 0
    sub.close()
    pub.close()


def test_a_tensor_outlives_its_subscriber_and_bus(daemon):
    b = framebus.connect(daemon.socket, name="pytest-dl")
    pub = b.publish("py.dl.outlive", 64, 48, format="gray8", slots=4)
    other = framebus.connect(daemon.socket, name="pytest-dl-sub")
    sub = other.subscribe(pub.name)
    publish_one(pub, 7)
    frame = sub.acquire(timeout=2)
    t = torch.from_dlpack(frame)
    del frame
    sub.close()
    other.close()
    assert sub.closed and other.closed
    gc.collect()
    # Still mapped, still the frame's pixels, still held in the ring.
    assert in_a_ring(t.data_ptr(), 48 * 64)
    assert int(t.sum()) == 7 * 64 * 48
    assert pub.stats["held"] == 1
    ptr = t.data_ptr()
    del t
    gc.collect()
    # The last export gone, the subscriber unsubscribed and the ring was
    # unmapped; its slot went back.
    assert not in_a_ring(ptr, 1)
    assert pub.stats["held"] == 0
    pub.close()
    b.close()


def test_a_capsule_owns_the_frame_until_a_consumer_takes_it(bus):
    pub = bus.publish("py.dl.capsule", 64, 48, format="gray8", slots=4)
    sub = bus.subscribe(pub.name)
    publish_one(pub, 3)
    frame = sub.acquire(timeout=2)
    legacy = frame.__dlpack__()
    assert capsule_name(legacy) == b"dltensor"
    m = DLManagedTensor.from_address(capsule_pointer(legacy, b"dltensor"))
    assert m.dl_tensor.data == frame.array.ctypes.data
    frame.release()
    assert sub.held == 1
    del legacy  # never consumed: its destructor calls the deleter
    assert frame.released and sub.held == 0
    sub.close()
    pub.close()


@pytest.mark.parametrize("max_version,name", [(None, b"dltensor"), ((0, 8), b"dltensor"),
                                              ((1, 0), b"dltensor_versioned"),
                                              ((1, 3), b"dltensor_versioned"),
                                              ((2, 0), b"dltensor_versioned")])
def test_max_version_chooses_the_capsule(bus, max_version, name):
    pub = bus.publish("py.dl.version", 64, 48, format="gray8", slots=4)
    sub = bus.subscribe(pub.name)
    publish_one(pub, 5)
    with sub.acquire(timeout=2) as frame:
        ptr = frame.array.ctypes.data
        capsule = frame.__dlpack__(max_version=max_version)
    assert capsule_name(capsule) == name
    raw = capsule_pointer(capsule, name)
    if name == b"dltensor_versioned":
        m = DLManagedTensorVersioned.from_address(raw)
        assert (m.major, m.minor) == (1, 0)
        assert m.flags & 1  # DLPACK_FLAG_BITMASK_READ_ONLY
        assert not m.flags & 2  # not IS_COPIED: the slot itself
    else:
        m = DLManagedTensor.from_address(raw)
    t = m.dl_tensor
    assert t.data == ptr and t.byte_offset == 0
    assert (t.device_type, t.device_id, t.ndim) == (1, 0, 2)
    assert (t.code, t.bits, t.lanes) == (1, 8, 1)  # kDLUInt, 8 bits
    assert (t.shape[0], t.shape[1]) == (48, 64) and (t.strides[0], t.strides[1]) == (64, 1)
    assert ctypes.string_at(ptr, 64) == bytes([5] * 64)
    # Consume it as a consumer does: rename, then call the deleter when done.
    assert capsule_rename(capsule, b"used_" + name) == 0
    deleter = m.deleter
    del capsule
    assert sub.held == 1, "a consumed capsule's destructor called the deleter"
    deleter(raw)
    assert sub.held == 0
    sub.close()
    pub.close()


def test_dlpack_arguments(bus):
    pub = bus.publish("py.dl.args", 64, 48, format="gray8", slots=4)
    sub = bus.subscribe(pub.name)
    publish_one(pub, 1)
    frame = sub.acquire(timeout=2)
    for kwargs in ({"stream": None}, {"dl_device": (1, 0)}, {"copy": False}, {"copy": None},
                   {"max_version": (1, 0), "dl_device": (1, 0), "copy": False}):
        frame.__dlpack__(**kwargs)
    with pytest.raises(ValueError, match="stream must be None"):
        frame.__dlpack__(stream=1)
    with pytest.raises(ValueError, match="stream must be None"):
        frame.__dlpack__(stream=-1)
    with pytest.raises(BufferError, match="does not copy them to device"):
        frame.__dlpack__(dl_device=(2, 0))  # kDLCUDA
    with pytest.raises(BufferError, match="never a copy"):
        frame.__dlpack__(copy=True)
    with pytest.raises(TypeError, match="max_version must be a tuple"):
        frame.__dlpack__(max_version=1)
    with pytest.raises(TypeError, match="dl_device must be a tuple"):
        frame.__dlpack__(dl_device=(1, 0, 0))
    with pytest.raises(TypeError):
        frame.__dlpack__(None)  # keywords only
    with pytest.raises(TypeError):
        frame.__dlpack__(device=(1, 0))
    gc.collect()
    assert sub.held == 1  # no refused call left an export behind
    frame.release()
    assert sub.held == 0
    with pytest.raises(BufferError, match="released"):
        frame.__dlpack__()
    sub.close()
    pub.close()


def test_writing_through_a_subscribers_tensor_faults(daemon):
    # torch 1.13 has no read-only tensors (DLPack before 1.0 has no flag):
    # the mapping refuses the write, so no subscriber can change a frame
    # others read.
    script = textwrap.dedent(f"""
        import framebus, torch
        bus = framebus.connect({daemon.socket!r})
        pub = bus.publish("py.dl.write", 64, 48, format="gray8", slots=4)
        sub = bus.subscribe("py.dl.write")
        with pub.frame() as out:
            out.array[:] = 1
        t = torch.from_dlpack(sub.acquire(timeout=2))
        print(int(t[0, 0]), flush=True)
        t[0, 0] = 2
        print("written", flush=True)
    """)
    no_core = lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # noqa: E731
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60, preexec_fn=no_core)
    assert child.stdout == "1\n", child.stderr
    assert child.returncode == -signal.SIGSEGV, child.stderr


def test_an_outframe_tensor_writes_the_slot(bus):
    pub = bus.publish("py.dl.out", 64, 48, format="bgr24", slots=4)
    sub = bus.subscribe(pub.name)
    pattern = torch.arange(48 * 64 * 3, dtype=torch.int32).reshape(48, 64, 3) % 251
    with pub.frame() as out:
        assert out.__dlpack_device__() == (1, 0)
        t = torch.from_dlpack(out)
        assert t.data_ptr() == out.array.ctypes.data and in_a_ring(t.data_ptr(), t.numel())
        t.copy_(pattern)  # torch preprocessing straight into the slot
        capsule = out.__dlpack__(max_version=(1, 0))
        m = DLManagedTensorVersioned.from_address(capsule_pointer(capsule,
                                                                  b"dltensor_versioned"))
        assert m.flags == 0  # writable
        del capsule
    with pytest.raises(BufferError, match="already published"):
        torch.from_dlpack(out)
    del t
    with sub.acquire(timeout=2) as frame:
        assert np.array_equal(frame.array, pattern.numpy().astype(np.uint8))
    sub.close()
    pub.close()


def test_a_results_frame_gives_an_empty_tensor_that_holds_it(bus):
    pub = bus.publish_results("py.dl.results")
    sub = bus.subscribe(pub.name)
    pub.send(b'{"boxes": []}')
    frame = sub.acquire(timeout=2)
    t = torch.from_dlpack(frame)
    assert tuple(t.shape) == frame.array.shape == (0,) and t.dtype == torch.uint8
    frame.release()
    assert sub.held == 1 and frame.meta == b'{"boxes": []}'
    del t
    gc.collect()
    assert sub.held == 0
    sub.close()
    pub.close()


def test_gray16_is_uint16_for_numpy_and_refused_by_this_torch(bus):
    pub = bus.publish("py.dl.gray16", 100, 36, format="gray16", slots=4)
    sub = bus.subscribe(pub.name)
    pixels = np.random.default_rng(3).integers(0, 65536, size=(36, 100), dtype=np.uint16)
    with pub.frame() as out:
        assert out.array.dtype == np.uint16
        out.array[:] = pixels
    with sub.acquire(timeout=2) as frame:
        a = frame.array
        n = np.from_dlpack(frame)
        assert a.dtype == n.dtype == np.uint16 and a.strides == n.strides == (256, 2)  # 200 bytes a row, padded to 64
        assert np.array_equal(n, pixels) and n.ctypes.data == a.ctypes.data
        # PyTorch 1.13 has no uint16 tensors: it refuses the capsule, and
        # the frame is not left held by the refusal.
        with pytest.raises((RuntimeError, TypeError, BufferError), match="(?i)uint|bits|type"):
            torch.from_dlpack(frame)
        del a, n
    assert sub.held == 0
    sub.close()
    pub.close()
