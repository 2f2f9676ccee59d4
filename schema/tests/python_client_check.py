#!/usr/bin/env python3
"""Runs the Python client sketch of docs/PROTOCOL.md against the golden vectors.

The sketch is the ```python block of PROTOCOL.md whose first line is
`# iothub_codec.py`; it is executed exactly as printed, so the code people copy
is the code tested here. Checks: every uplink vector encodes to its golden
bytes, every downlink vector decodes to the expected frame, every golden file
is covered, malformed input raises DecodeError (and nothing else), and the
session helpers behave as sections 7 and 12 say.

Run by `cargo test -p schema` (tests/golden.rs), or directly:
    python3 schema/tests/python_client_check.py
Standard library only.
"""

import pathlib
import random
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "PROTOCOL.md"
GOLDEN = HERE / "golden"

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def load_sketch():
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text("utf-8"), re.S | re.M)
    sketch = [b for b in blocks if b.startswith("# iothub_codec.py")]
    if len(sketch) != 1:
        sys.exit(f"expected one ```python block starting with '# iothub_codec.py' in {DOC}")
    examples = [b for b in blocks if b.startswith("encode_hello(")]
    namespace = {"__name__": "iothub_codec"}
    exec(compile(sketch[0], f"{DOC}:iothub_codec.py", "exec"), namespace)
    return namespace, examples


def golden_bytes(name):
    text = (GOLDEN / f"{name}.hex").read_text("utf-8")
    digits = "".join("".join(line.split("#", 1)[0].split()) for line in text.splitlines())
    return bytes.fromhex(digits)


c, examples = load_sketch()
FLOAT, INT, BOOL = c["FLOAT"], c["INT"], c["BOOL"]
T0 = 1_700_000_000_000
EXPIRES = T0 + 60_000

UPLINK = {
    "hello": lambda: c["encode_hello"](
        "fw-1.2.0",
        [(1, "temperature", "°C", FLOAT), (2, "door", "", BOOL), (300, "pulses", "", INT)],
        [(1, "relay", BOOL), (2, "led", INT)],
    ),
    "hello_minimal": lambda: c["encode_hello"]("", [], []),
    "telemetry": lambda: c["encode_telemetry"](
        42,
        T0,
        [
            (1, 0, (FLOAT, 21.5)),
            (2, 250, (BOOL, True)),
            (300, 1_000, (INT, -3)),
            (300, 3_600_000, (INT, -1_000_000)),
        ],
    ),
    "telemetry_extremes": lambda: c["encode_telemetry"](
        2**64 - 1,
        946_684_800_000,
        [(65_535, 2**32 - 1, (INT, -(2**63))), (0, 0, (INT, 2**63 - 1))],
    ),
    "command_result_delivered": lambda: c["encode_command_result"](7, ("delivered",)),
    "command_result_succeeded": lambda: c["encode_command_result"](
        7, ("succeeded", (BOOL, True))
    ),
    "command_result_succeeded_none": lambda: c["encode_command_result"](8, ("succeeded", None)),
    "command_result_failed": lambda: c["encode_command_result"](8, ("failed", "motor stalled")),
    "command_result_rejected": lambda: c["encode_command_result"](9, ("rejected", "expired")),
}

DOWNLINK = {
    "welcome": {
        "type": "welcome",
        "device_id": "dev-0001",
        "server_time_ms": T0 + 123,
        "last_stored_seq": 41,
        "limits": {
            "max_message_bytes": 65_536,
            "max_readings_per_frame": 2_048,
            "idle_timeout_ms": 60_000,
        },
    },
    "ack": {"type": "ack", "seq": 42},
    "command_set": {
        "type": "command",
        "id": 7,
        "actuator": 1,
        "action": ("set", (BOOL, True)),
        "expires_at_ms": EXPIRES,
    },
    "command_invoke": {
        "type": "command",
        "id": 8,
        "actuator": 2,
        "action": ("invoke", "blink", [(INT, 3), (FLOAT, 0.5)]),
        "expires_at_ms": EXPIRES,
    },
    "error": {"type": "error", "code": 2, "reason": "sensor 2 expects bool", "seq": 43},
    "error_no_seq": {"type": "error", "code": 6, "reason": "unknown command 99", "seq": None},
}


def refuses(data, what):
    """decode_downlink must raise DecodeError, and nothing else."""
    try:
        frame = c["decode_downlink"](data)
    except c["DecodeError"]:
        return
    except Exception as e:  # noqa: BLE001 - any other exception is the bug we look for
        failures.append(f"{what}: raised {type(e).__name__}: {e}")
        return
    failures.append(f"{what}: decoded as {frame!r}")


# -- golden vectors ---------------------------------------------------------

files = {p.stem for p in GOLDEN.glob("*.hex")}
check(files == set(UPLINK) | set(DOWNLINK),
      f"golden files and Python expectations differ: {sorted(files ^ (set(UPLINK) | set(DOWNLINK)))}")

for name, encode in UPLINK.items():
    got, want = encode(), golden_bytes(name)
    check(got == want, f"{name}: encoded {got.hex()}, golden {want.hex()}")

for name, want in DOWNLINK.items():
    data = golden_bytes(name)
    try:
        got = c["decode_downlink"](data)
    except Exception as e:  # noqa: BLE001
        failures.append(f"{name}: decode raised {type(e).__name__}: {e}")
        continue
    check(got == want, f"{name}: decoded {got!r}, expected {want!r}")
    for n in range(len(data)):
        refuses(data[:n], f"{name}: prefix of {n} bytes")
    refuses(data + b"\x00", f"{name}: trailing byte")

# -- malformed input ----------------------------------------------------------

refuses(b"\x04", "unknown downlink tag")
refuses(b"\x03\x06\x00\x02", "Option byte 2")
refuses(b"\x03\x06\x01\xff\x00", "invalid UTF-8")
refuses(b"\x02\x07\x01\x00\x02\x02\x00", "bool byte 2")
refuses(b"\x02\x07\x01\x02\x00\x00", "unknown CommandAction tag")
refuses(b"\x02\x07\x01\x00\x03\x00", "unknown Value tag")
refuses(b"\x02\x01\x80\x80\x80\x00\x00\x02\x00\x00", "u16 varint of 4 bytes")
refuses(b"\x02\x01\xff\xff\x04\x00\x02\x00\x00", "u16 varint over 65535")
refuses(b"\x01" + b"\xff" * 9 + b"\x02", "u64 varint over 2^64-1")
refuses(b"\x01" + b"\x80" * 10 + b"\x00", "u64 varint of 11 bytes")
nine_args = b"\x02\x01\x01\x01\x01a\x09" + b"\x02\x00" * 9 + b"\x00"
refuses(nine_args, "Invoke with 9 arguments")
check(c["decode_downlink"](b"\x01\xaa\x00") == {"type": "ack", "seq": 42},
      "a padded varint within its length must decode, as the hub's decoder does")

rng = random.Random(1)
for i in range(5000):
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    try:
        c["decode_downlink"](data)
    except c["DecodeError"]:
        pass
    except Exception as e:  # noqa: BLE001
        failures.append(f"random input {data.hex()}: raised {type(e).__name__}: {e}")
        break

for bad in [lambda: c["varint"](-1), lambda: c["varint"](2**64),
            lambda: c["varint"](65_536, c["U16"]), lambda: c["zigzag"](2**63)]:
    try:
        bad()
        failures.append("an out-of-range integer was encoded")
    except ValueError:
        pass

# -- session helpers ----------------------------------------------------------

stop = {4000, 4001, 4002, 4005}
for code in [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 4000, 4001, 4002, 4003,
             4004, 4005, 4999]:
    check(c["should_reconnect"](code) == (code not in stop), f"should_reconnect({code})")

for attempt in [0, 1, 5, 6, 100, 10_000]:
    limit = min(30.0, 0.5 * 2**min(attempt, 16))
    delays = [c["backoff_delay"](attempt) for _ in range(200)]
    check(all(0 <= d <= limit for d in delays), f"backoff_delay({attempt}) outside [0, {limit}]")

outbox = c["Outbox"]()
first = [outbox.add(T0, [(1, i, (FLOAT, 21.5))]) for i in range(3)]  # seq 1, 2, 3
outbox.on_ack(1)
check(list(outbox.frames) == [2, 3], "Ack 1 leaves frames 2 and 3")
outbox.on_error({"type": "error", "code": 2, "reason": "", "seq": 2})
check(list(outbox.frames) == [3], "an Error with seq 2 drops frame 2")
check(outbox.on_welcome({"last_stored_seq": 0}) == [first[2]], "Welcome resends frame 3 as is")
check(outbox.on_welcome({"last_stored_seq": 3}) == [], "Welcome 3 covers frame 3")
check(outbox.next_seq == 4, "the counter continues")

fresh = c["Outbox"]()  # a device that lost its counter
check(fresh.on_welcome(DOWNLINK["welcome"]) == [], "an empty outbox resends nothing")
frame = fresh.add(T0, [(1, 0, (FLOAT, 21.5)), (2, 250, (BOOL, True)),
                       (300, 1_000, (INT, -3)), (300, 3_600_000, (INT, -1_000_000))])
check(frame == golden_bytes("telemetry"), "after Welcome 41 a fresh outbox continues at 42")

# The "examples of section 6 in this API" block must run.
check(len(examples) == 1, "expected one examples block starting with encode_hello(")
for block in examples:
    try:
        exec(block, dict(c))
    except Exception as e:  # noqa: BLE001
        failures.append(f"examples block raised {type(e).__name__}: {e}")

if failures:
    print("FAILED:", *failures, sep="\n  ")
    sys.exit(1)
print(f"ok: {len(UPLINK)} uplink and {len(DOWNLINK)} downlink vectors, helpers checked")
