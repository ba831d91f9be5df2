"""Tiny UDP probes for the NAT lab, run inside network namespaces (pure stdlib).

Server (run in the "internet" namespace)::

    natlab_probe.py serve 203.0.113.3:3000 203.0.113.3:3001 203.0.113.4:3000

binds one UDP socket per endpoint, prints ``ready`` on stdout and answers:

* ``{"op": "whoami", ...}``: replies from the same socket with
  ``{"addr": [ip, port], "via": [ip, port], ...}`` (the sender's address as seen by the server,
  i.e. the NAT mapping; the request's other keys are echoed back);
* ``{"op": "send-from", "from": [ip, port]}``: the socket bound to ``from`` sends
  ``{"op": "unsolicited", "via": ...}`` to the requester (like STUN's CHANGE-REQUEST), to test a
  NAT's filtering against an endpoint the host never sent to.

Clients (run in a host namespace) print one JSON object on stdout:

* ``map IP:PORT [IP:PORT ...]``: one socket sends ``whoami`` to each server endpoint, reports the
  mapped addresses (``{"local": ..., "mapped": [[ip, port] | null, ...]}``);
* ``filter --via IP:PORT --from IP:PORT``: learns the mapping through ``via``, asks ``via`` to
  have ``from`` send an unsolicited packet, reports whether it arrived
  (``{"mapped": ..., "unsolicited": bool, "after_send": bool}``, ``after_send`` being whether
  ``from`` answers once the host has sent to it itself);
* ``ping IP:PORT --count N``: sends N numbered ``whoami`` requests, counts distinct answers;
* ``stun IP:PORT [--wait SECONDS]``: hand-crafted 20-byte STUN Binding request (RFC 8489),
  reports the response class and XOR-MAPPED-ADDRESS; retries until ``--wait`` runs out;
* ``stun-tcp IP:PORT [--tls-ca PEM]``: the same Binding request over TCP (TLS with a CA file);
* ``punch --port P IP:PORT``: binds port P and sends to the peer every 20 ms until it has both
  received from the peer and been acknowledged, or ``--duration`` runs out (hole punching);
* ``turn IP:PORT --user U --password P --peer IP:PORT [--unroutable IP:PORT]``: a minimal
  TURN/UDP client: allocates (long-term credentials), sends into the void to each unroutable
  peer, then relays a ``whoami`` to the peer and reports the address the peer saw;
* ``connect IP:PORT [--wait SECONDS]``: retries a TCP connect until it succeeds (readiness).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import selectors
import socket
import ssl
import struct
import sys
import time
from typing import Any

Endpoint = tuple[str, int]

STUN_MAGIC = 0x2112A442


def parse_endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _decode(data: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _send(sock: socket.socket, message: dict[str, Any], dest: Endpoint) -> None:
    sock.sendto(json.dumps(message).encode(), dest)


def serve(endpoints: list[Endpoint]) -> int:
    selector = selectors.DefaultSelector()
    by_endpoint: dict[Endpoint, socket.socket] = {}
    for endpoint in endpoints:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(endpoint)
        sock.setblocking(False)
        by_endpoint[endpoint] = sock
        selector.register(sock, selectors.EVENT_READ, endpoint)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            via: Endpoint = key.data
            sock = by_endpoint[via]
            try:
                data, (ip, port) = sock.recvfrom(65535)
            except OSError:
                continue
            message = _decode(data)
            if message is None:
                continue
            op = message.get("op")
            if op == "whoami":
                reply = dict(message, addr=[ip, port], via=list(via))
                _send(sock, reply, (ip, port))
            elif op == "send-from":
                frm = message.get("from")
                other = by_endpoint.get((str(frm[0]), int(frm[1]))) if frm else None
                if other is not None:
                    _send(other, {"op": "unsolicited", "via": frm}, (ip, port))


def _recv_json(sock: socket.socket, timeout: float) -> tuple[dict[str, Any], Endpoint] | None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data, (ip, port) = sock.recvfrom(65535)
        except TimeoutError:
            return None
        except OSError:  # e.g. ICMP port unreachable reported on the socket
            continue
        message = _decode(data)
        if message is not None:
            return message, (ip, port)


def whoami(sock: socket.socket, server: Endpoint, tries: int = 5, timeout: float = 0.3) -> Any:
    """The mapped address (``[ip, port]``) the server saw, or None."""
    for attempt in range(tries):
        _send(sock, {"op": "whoami", "n": attempt}, server)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            got = _recv_json(sock, remaining)
            if got is None:
                break
            message, source = got
            if message.get("op") == "whoami" and source == server:
                return message["addr"]
    return None


def _new_socket(bind: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, 0))
    return sock


def cmd_map(servers: list[Endpoint], bind: str) -> dict[str, Any]:
    sock = _new_socket(bind)
    mapped = [whoami(sock, server) for server in servers]
    return {"local": list(sock.getsockname()), "mapped": mapped}


def cmd_filter(via: Endpoint, frm: Endpoint, bind: str, timeout: float) -> dict[str, Any]:
    sock = _new_socket(bind)
    mapped = whoami(sock, via)
    unsolicited = False
    if mapped is not None:
        # Ask a few times (the request itself may be lost); any arrival counts.
        deadline = time.monotonic() + timeout
        while not unsolicited and time.monotonic() < deadline:
            _send(sock, {"op": "send-from", "from": list(frm)}, via)
            got = _recv_json(sock, min(0.2, max(0.0, deadline - time.monotonic())))
            unsolicited = got is not None and got[1] == frm and got[0].get("op") == "unsolicited"
    after_send = whoami(sock, frm) is not None
    return {
        "local": list(sock.getsockname()),
        "mapped": mapped,
        "unsolicited": unsolicited,
        "after_send": after_send,
    }


def cmd_ping(server: Endpoint, count: int, bind: str, interval: float, linger: float) -> Any:
    sock = _new_socket(bind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    seen: set[int] = set()
    for n in range(count):
        _send(sock, {"op": "whoami", "n": n}, server)
        time.sleep(interval)
    deadline = time.monotonic() + linger
    while (remaining := deadline - time.monotonic()) > 0:
        got = _recv_json(sock, remaining)
        if got is None:
            break
        if got[1] == server and isinstance(got[0].get("n"), int):
            seen.add(got[0]["n"])
    return {"sent": count, "received": len(seen)}


def stun_binding_request() -> tuple[bytes, bytes]:
    transaction_id = os.urandom(12)
    # type 0x0001 (Binding request), length 0, magic cookie, transaction ID: 20 bytes.
    return struct.pack("!HHI", 0x0001, 0, STUN_MAGIC) + transaction_id, transaction_id


ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_XOR_PEER_ADDRESS = 0x0012
ATTR_DATA = 0x0013
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_XOR_RELAYED_ADDRESS = 0x0016
ATTR_REQUESTED_TRANSPORT = 0x0019
ATTR_XOR_MAPPED_ADDRESS = 0x0020


def stun_attributes(data: bytes) -> dict[int, bytes]:
    """The attributes of a STUN message (first of each type)."""
    length = struct.unpack("!H", data[2:4])[0]
    attributes: dict[int, bytes] = {}
    offset, end = 20, min(len(data), 20 + length)
    while offset + 4 <= end:
        attr_type, attr_len = struct.unpack("!HH", data[offset : offset + 4])
        attributes.setdefault(attr_type, data[offset + 4 : offset + 4 + attr_len])
        offset += 4 + (attr_len + 3) // 4 * 4
    return attributes


def xor_address(value: bytes) -> list[Any] | None:
    if len(value) < 8 or value[1] != 0x01:
        return None
    port = struct.unpack("!H", value[2:4])[0] ^ (STUN_MAGIC >> 16)
    raw = struct.unpack("!I", value[4:8])[0] ^ STUN_MAGIC
    return [socket.inet_ntoa(struct.pack("!I", raw)), port]


def encode_xor_address(endpoint: Endpoint) -> bytes:
    raw = struct.unpack("!I", socket.inet_aton(endpoint[0]))[0] ^ STUN_MAGIC
    return struct.pack("!BBHI", 0, 0x01, endpoint[1] ^ (STUN_MAGIC >> 16), raw)


def stun_message(
    msg_type: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]],
    key: bytes | None = None,
) -> bytes:
    body = b""
    for attr_type, value in attributes:
        body += struct.pack("!HH", attr_type, len(value)) + value + b"\0" * (-len(value) % 4)
    if key is not None:
        # MESSAGE-INTEGRITY covers the header with the length including itself (RFC 8489 14.5).
        header = struct.pack("!HHI", msg_type, len(body) + 24, STUN_MAGIC) + transaction_id
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, 20) + mac
    return struct.pack("!HHI", msg_type, len(body), STUN_MAGIC) + transaction_id + body


def parse_stun_response(data: bytes, transaction_id: bytes) -> dict[str, Any] | None:
    if len(data) < 20:
        return None
    msg_type, _, cookie = struct.unpack("!HHI", data[:8])
    if cookie != STUN_MAGIC or data[8:20] != transaction_id or msg_type & 0xC000:
        return None
    # The class is spread over bits 4 and 8 of the message type (RFC 8489 section 5).
    klass = ((msg_type >> 7) & 0x2) | ((msg_type >> 4) & 0x1)
    method = (msg_type & 0x000F) | ((msg_type >> 1) & 0x0070) | ((msg_type >> 2) & 0x0F80)
    attributes = stun_attributes(data)
    error = attributes.get(ATTR_ERROR_CODE)
    return {
        "type": msg_type,
        "class": ["request", "indication", "success", "error"][klass],
        "method": method,
        "xor_mapped": xor_address(attributes.get(ATTR_XOR_MAPPED_ADDRESS, b"")),
        "error": error[2] * 100 + error[3] if error and len(error) >= 4 else None,
        "attributes": attributes,
    }


def cmd_stun(server: Endpoint, bind: str, wait: float) -> dict[str, Any]:
    sock = _new_socket(bind)
    deadline = time.monotonic() + wait
    request, transaction_id = stun_binding_request()
    while True:
        with contextlib.suppress(OSError):
            sock.sendto(request, server)
        sock.settimeout(0.1)
        try:
            data, source = sock.recvfrom(2048)
        except OSError:  # timeout, or ICMP port unreachable while the server starts
            data, source = b"", ("", 0)
        response = parse_stun_response(data, transaction_id) if source == server else None
        if response is not None:
            del response["attributes"]
            return dict(response, ok=True, local=list(sock.getsockname()))
        if time.monotonic() >= deadline:
            return {"ok": False, "local": list(sock.getsockname())}


def cmd_stun_tcp(server: Endpoint, tls_ca: str | None, timeout: float) -> dict[str, Any]:
    request, transaction_id = stun_binding_request()
    with socket.create_connection(server, timeout=timeout) as raw:
        stream = raw
        if tls_ca is not None:
            context = ssl.create_default_context(cafile=tls_ca)
            stream = context.wrap_socket(raw, server_hostname=server[0])
        stream.sendall(request)
        data = b""
        while len(data) < 20 or len(data) < 20 + struct.unpack("!H", data[2:4])[0]:
            chunk = stream.recv(2048)
            if not chunk:
                break
            data += chunk
        response = parse_stun_response(data, transaction_id)
        if stream is not raw:
            stream.close()
    if response is None:
        return {"ok": False}
    del response["attributes"]
    return dict(response, ok=True)


def cmd_punch(port: int, peer: Endpoint, bind: str, duration: float) -> dict[str, Any]:
    """Send to ``peer`` (and to wherever the peer was seen from) until both sides heard back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    targets = [peer]
    received_from: Endpoint | None = None
    acked = False

    def send_all() -> None:
        for target in targets:
            _send(sock, {"op": "punch", "seen": received_from is not None}, target)

    deadline = time.monotonic() + duration
    while time.monotonic() < deadline and not (received_from and acked):
        send_all()
        got = _recv_json(sock, 0.02)
        while got is not None:
            message, source = got
            if message.get("op") == "punch":
                received_from = source
                if source not in targets:  # like a peer-reflexive candidate
                    targets.append(source)
                acked = acked or bool(message.get("seen"))
            got = _recv_json(sock, 0.0)
    for _ in range(5):  # keep answering a little so that the peer gets its acknowledgement
        send_all()
        time.sleep(0.02)
    return {
        "local": list(sock.getsockname()),
        "received_from": list(received_from) if received_from else None,
        "acked": acked,
    }


def _transaction(
    sock: socket.socket, server: Endpoint, build: Any, tries: int = 4
) -> dict[str, Any] | None:
    """Send ``build(transaction_id)`` until a response arrives (lost packets are retried)."""
    transaction_id = os.urandom(12)
    request = build(transaction_id)
    for _ in range(tries):
        sock.sendto(request, server)
        deadline = time.monotonic() + 0.5
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data, source = sock.recvfrom(4096)
            except OSError:
                break
            response = parse_stun_response(data, transaction_id) if source == server else None
            if response is not None:
                return response
    return None


def cmd_turn(
    server: Endpoint, user: str, password: str, peer: Endpoint, unroutable: list[Endpoint]
) -> dict[str, Any]:
    """A minimal TURN/UDP client (RFC 8656): allocate, then relay a ``whoami`` to ``peer``.

    Before that it permits and sends to each ``unroutable`` peer, which must not break the
    allocation (it would if the server's host returned an error on sendto()).
    """
    sock = _new_socket("0.0.0.0")
    transport = [(ATTR_REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
    first = _transaction(sock, server, lambda tid: stun_message(0x0003, tid, transport))
    if first is None or first["error"] != 401:
        return {"ok": False, "step": "allocate (expected 401)", "response": repr(first)}
    realm = first["attributes"][ATTR_REALM]
    nonce = first["attributes"][ATTR_NONCE]
    key = hashlib.md5(f"{user}:{realm.decode()}:{password}".encode()).digest()
    auth = [(ATTR_USERNAME, user.encode()), (ATTR_REALM, realm), (ATTR_NONCE, nonce)]

    def request(method: int, attributes: list[tuple[int, bytes]]) -> dict[str, Any] | None:
        return _transaction(
            sock, server, lambda tid: stun_message(method, tid, attributes + auth, key)
        )

    allocation = request(0x0003, transport)
    if allocation is None or allocation["class"] != "success":
        return {"ok": False, "step": "allocate", "error": allocation and allocation["error"]}
    relayed = xor_address(allocation["attributes"][ATTR_XOR_RELAYED_ADDRESS])
    for target in [*unroutable, peer]:
        permission = request(0x0008, [(ATTR_XOR_PEER_ADDRESS, encode_xor_address(target))])
        if permission is None or permission["class"] != "success":
            error = permission and permission["error"]
            return {"ok": False, "step": f"permission {target}", "error": error}

    def send(target: Endpoint, payload: bytes) -> None:
        attributes = [
            (ATTR_XOR_PEER_ADDRESS, encode_xor_address(target)),
            (ATTR_DATA, payload),
        ]
        sock.sendto(stun_message(0x0016, os.urandom(12), attributes), server)

    for target in unroutable:
        for _ in range(3):
            send(target, b"into the void")
    time.sleep(0.2)
    echoed = None
    for attempt in range(4):
        send(peer, json.dumps({"op": "whoami", "n": attempt}).encode())
        deadline = time.monotonic() + 0.5
        while echoed is None and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data, _ = sock.recvfrom(4096)
            except OSError:
                break
            if len(data) >= 20 and struct.unpack("!H", data[:2])[0] == 0x0017:  # Data ind.
                message = _decode(stun_attributes(data).get(ATTR_DATA, b""))
                if message is not None and message.get("op") == "whoami":
                    echoed = message["addr"]
        if echoed is not None:
            break
    return {
        "ok": echoed is not None,
        "relayed": relayed,
        "mapped": xor_address(allocation["attributes"].get(ATTR_XOR_MAPPED_ADDRESS, b"")),
        "echoed": echoed,
    }


def cmd_connect(server: Endpoint, wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection(server, timeout=0.5):
                return {"ok": True}
        except OSError:
            if time.monotonic() >= deadline:
                return {"ok": False}
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bind", default="0.0.0.0", help="local address of client sockets")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("endpoints", nargs="+", type=parse_endpoint)
    p = sub.add_parser("map")
    p.add_argument("servers", nargs="+", type=parse_endpoint)
    p = sub.add_parser("filter")
    p.add_argument("--via", type=parse_endpoint, required=True)
    p.add_argument("--from", dest="frm", type=parse_endpoint, required=True)
    p.add_argument("--timeout", type=float, default=0.6)
    p = sub.add_parser("ping")
    p.add_argument("server", type=parse_endpoint)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.001)
    p.add_argument("--linger", type=float, default=0.5)
    p = sub.add_parser("stun")
    p.add_argument("server", type=parse_endpoint)
    p.add_argument("--wait", type=float, default=2.0)
    p = sub.add_parser("stun-tcp")
    p.add_argument("server", type=parse_endpoint)
    p.add_argument("--tls-ca")
    p.add_argument("--timeout", type=float, default=5.0)
    p = sub.add_parser("punch")
    p.add_argument("peer", type=parse_endpoint)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--duration", type=float, default=3.0)
    p = sub.add_parser("turn")
    p.add_argument("server", type=parse_endpoint)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--peer", type=parse_endpoint, required=True)
    p.add_argument("--unroutable", type=parse_endpoint, action="append", default=[])
    p = sub.add_parser("connect")
    p.add_argument("server", type=parse_endpoint)
    p.add_argument("--wait", type=float, default=2.0)
    args = parser.parse_args(argv)

    result: Any
    if args.cmd == "serve":
        return serve(args.endpoints)
    if args.cmd == "map":
        result = cmd_map(args.servers, args.bind)
    elif args.cmd == "filter":
        result = cmd_filter(args.via, args.frm, args.bind, args.timeout)
    elif args.cmd == "ping":
        result = cmd_ping(args.server, args.count, args.bind, args.interval, args.linger)
    elif args.cmd == "stun-tcp":
        result = cmd_stun_tcp(args.server, args.tls_ca, args.timeout)
    elif args.cmd == "punch":
        result = cmd_punch(args.port, args.peer, args.bind, args.duration)
    elif args.cmd == "turn":
        result = cmd_turn(args.server, args.user, args.password, args.peer, args.unroutable)
    elif args.cmd == "connect":
        result = cmd_connect(args.server, args.wait)
    else:
        result = cmd_stun(args.server, args.bind, args.wait)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
