"""Flight SQL commands and results as protobuf bytes, encoded and decoded by hand (the
few messages the tests send; pyarrow.flight carries them, as every driver's client
does). Field numbers are those of arrow's FlightSql.proto."""

PACKAGE = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, value):
    """One field: bytes and str are length-delimited, bool and int are varints."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(name, *fields):
    """`fields` as (number, value) pairs (a list value repeats the field), packed in
    google.protobuf.Any (type_url = 1, value = 2), as Flight SQL sends its commands."""
    body = b""
    for number, value in fields:
        for v in value if isinstance(value, list) else [value]:
            body += field(number, v)
    return field(1, PACKAGE + name) + field(2, body)


def decode(data):
    """The fields of a message: number -> list of values (bytes or int)."""
    out, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wire} is not used by these messages")
        out.setdefault(number, []).append(value)
    return out


def unpack(data, name):
    """The body of an Any holding message `name`."""
    fields = decode(data)
    assert fields[1][0].decode() == PACKAGE + name, fields[1][0]
    return decode(fields[2][0]) if 2 in fields else {}


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i
