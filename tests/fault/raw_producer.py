"""Records confluent-kafka's Producer cannot write: a header name that is not UTF-8.

Its `produce` takes header names as `str` only, but librdkafka, Go and Rust clients
write any bytes, and the broker accepts them. This goes to librdkafka itself, the copy
inside the confluent-kafka wheel, through its `rd_kafka_produceva`.
"""

from __future__ import annotations

import ctypes
import glob
import os

import confluent_kafka
import pytest

_RD_KAFKA_PRODUCER = 0
# rd_kafka_vtype_t, as rdkafka.h numbers them.
_VTYPE_TOPIC = 1
_VTYPE_PARTITION = 3
_VTYPE_VALUE = 4
_VTYPE_KEY = 5
_VTYPE_MSGFLAGS = 7
_VTYPE_HEADER = 9
# librdkafka copies the value on produce; without it, it would point into our buffer
# until the record is delivered.
_RD_KAFKA_MSG_F_COPY = 0x2


class _Memory(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _Header(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("val", ctypes.c_void_p), ("size", ctypes.c_ssize_t)]


class _Value(ctypes.Union):
    # rd_kafka_vu_t's union, padded to its declared 64 bytes.
    _fields_ = [
        ("cstr", ctypes.c_char_p),
        ("i", ctypes.c_int),
        ("i32", ctypes.c_int32),
        ("mem", _Memory),
        ("header", _Header),
        ("_pad", ctypes.c_char * 64),
    ]


class _Field(ctypes.Structure):
    _fields_ = [("vtype", ctypes.c_int), ("u", _Value)]


def _librdkafka() -> ctypes.CDLL:
    libs = os.path.dirname(confluent_kafka.__file__) + ".libs"
    paths = glob.glob(os.path.join(libs, "librdkafka*.so*"))
    if len(paths) != 1:
        pytest.skip(f"no single librdkafka in {libs} (confluent-kafka not from its wheel)")
    lib = ctypes.CDLL(paths[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_conf_set.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_produceva.restype = ctypes.c_void_p
    lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Field), ctypes.c_size_t]
    lib.rd_kafka_error_string.restype = ctypes.c_char_p
    lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_error_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_outq_len.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


def produce_with_raw_header(
    bootstrap_servers: str,
    topic: str,
    records: list[tuple[bytes, bytes, tuple[bytes, bytes] | None]],
    *,
    partition: int,
    timeout_s: float = 30.0,
) -> None:
    """Produce (key, value, header or None) records, in order, to one partition; a
    header's name is written as the bytes given. Raises if librdkafka refuses one or
    still holds one after `timeout_s` (there is no delivery report here: the caller
    checks what came of them)."""
    lib = _librdkafka()
    error = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for name, value in ((b"bootstrap.servers", bootstrap_servers.encode()), (b"acks", b"all")):
        if lib.rd_kafka_conf_set(conf, name, value, error, len(error)) != 0:
            lib.rd_kafka_conf_destroy(conf)
            raise RuntimeError(error.value.decode())
    # On success the producer owns the configuration; on failure it is still ours.
    producer = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, error, len(error))
    if not producer:
        lib.rd_kafka_conf_destroy(conf)
        raise RuntimeError(error.value.decode())
    buffers = []  # alive until rd_kafka_produceva has returned, which copies them all
    try:
        for key, value, header in records:
            fields = [
                _field(_VTYPE_TOPIC, cstr=topic.encode()),
                _field(_VTYPE_PARTITION, i32=partition),
                _field(_VTYPE_MSGFLAGS, i=_RD_KAFKA_MSG_F_COPY),
            ]
            for vtype, data in ((_VTYPE_KEY, key), (_VTYPE_VALUE, value)):
                buffer = ctypes.create_string_buffer(data, len(data))
                buffers.append(buffer)
                fields.append(
                    _field(vtype, mem=_Memory(ctypes.cast(buffer, ctypes.c_void_p), len(data)))
                )
            if header is not None:
                name, data = header
                name_buffer = ctypes.create_string_buffer(name)
                data_buffer = ctypes.create_string_buffer(data, len(data))
                buffers += [name_buffer, data_buffer]
                fields.append(
                    _field(
                        _VTYPE_HEADER,
                        header=_Header(
                            ctypes.cast(name_buffer, ctypes.c_char_p),
                            ctypes.cast(data_buffer, ctypes.c_void_p),
                            len(data),
                        ),
                    )
                )
            failure = lib.rd_kafka_produceva(producer, (_Field * len(fields))(*fields), len(fields))
            if failure:
                message = lib.rd_kafka_error_string(failure).decode()
                lib.rd_kafka_error_destroy(failure)
                raise RuntimeError(f"librdkafka refused the record: {message}")
        lib.rd_kafka_flush(producer, int(timeout_s * 1000))
        if lib.rd_kafka_outq_len(producer):
            raise RuntimeError(f"records not delivered within {timeout_s:g} s")
    finally:
        lib.rd_kafka_destroy(producer)


def _field(vtype: int, **value: object) -> _Field:
    field = _Field()
    field.vtype = vtype
    for name, data in value.items():
        setattr(field.u, name, data)
    return field
