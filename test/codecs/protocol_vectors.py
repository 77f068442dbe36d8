"""An independent encoder for the docs/protocol.md test vectors: Python's struct and hmac and
a bitwise CRC32C, sharing no code with codecs/. Run by protocol-vectors.test.ts; exits 1 and
names the vector on any mismatch. Also what an EA or client author in another language can
start from."""
import hashlib
import hmac
import re
import struct
import sys

doc = open(sys.argv[1], encoding="utf-8").read()
shown = {
    name: bytes.fromhex(hexes.replace("\n", " ").replace(" ", ""))
    for name, hexes in re.findall(r"<!-- vector (\w+) -->\n```text\n([0-9a-f \n]+)```", doc)
}


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def frame(msg_type: int, payload: bytes) -> bytes:
    head = struct.pack("<HBBI", 0x5354, 1, msg_type, len(payload))
    return head + struct.pack("<I", crc32c(head + payload)) + payload


def s(text: str) -> bytes:
    b = text.encode("utf-8")
    return struct.pack("<H", len(b)) + b


assert crc32c(b"123456789") == 0xE3069283
nonce = bytes(range(32))
proof = hmac.new(b"s3cret-s3cret", nonce + b"demo", hashlib.sha256).digest()
tick = struct.pack("<qdddQqId", 1577923200, 1.1212, 1.12172, 0, 0, 1577923200065, 6, 0.0)
want = {
    "CHALLENGE": frame(1, nonce + bytes([1, 1])),
    "HELLO_PROOF": proof,
    "HELLO": frame(
        2,
        s("demo") + struct.pack("<HIqqH", 60, 4755, 1577923200000, 1577916000000, 1) + s("EURUSD") + proof,
    ),
    "HELLO_ACK": frame(
        3,
        struct.pack("<QQIIIIHH", 1, 65537, 1000, 15000, 1 << 20, 16384, 1024, 1)
        + s("EURUSD")
        + struct.pack("<qI", 1577923199000, 2),
    ),
    "SYMBOLS": frame(4, struct.pack("<HHB", 1, 1, 5) + s("EURUSD")),
    "TICKS": frame(5, struct.pack("<HQI", 1, 1, 1) + tick),
    "TICKS_52": frame(5, struct.pack("<HQI", 1, 1, 1) + tick[:52]),
    "HEARTBEAT": frame(6, struct.pack("<qq", 1577923201000, 1577916001000)),
    "ACK": frame(7, struct.pack("<QQ", 1, 65538)),
    "RESEND": frame(8, struct.pack("<Q", 42)),
    "ERROR": frame(9, struct.pack("<H", 14) + s("bad proof")),
    "BYE": frame(10, s("shutdown")),
}
bad = [name for name in sorted(set(want) | set(shown)) if shown.get(name) != want.get(name)]
if bad:
    print("vectors that differ from the independent encoder:", ", ".join(bad))
    sys.exit(1)
print(f"{len(want)} vectors agree")
