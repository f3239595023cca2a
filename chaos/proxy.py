"""Loopback TCP proxies that can be switched off and on: a real server going down and back, as
a client sees it (connections refused, open connections cut), without stopping the server
everyone else on the machine shares.

`FlakyProxy` forwards bytes (MinIO, PostgreSQL). `KafkaProxy` also keeps Kafka's clients on
it: a Kafka client connects to the bootstrap address only to learn the brokers' advertised
addresses, then connects to those; the proxy rewrites the broker port in Metadata and
FindCoordinator responses to its own, so every connection of the client goes through it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

METADATA, FIND_COORDINATOR = 3, 10


class FlakyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @classmethod
    def to(cls, address: str) -> FlakyProxy:
        """A proxy in front of "host:port"."""
        host, port = address.rsplit(":", 1)
        return cls(host, int(port))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            self._start_pipes(client, upstream)

    def _start_pipes(self, client: socket.socket, upstream: socket.socket) -> None:
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class KafkaProxy(FlakyProxy):
    """A FlakyProxy in front of one Kafka broker that keeps its clients on the proxy (see the
    module's docstring). Requests and responses are framed (4-byte size); a response is matched
    to its request by correlation id. The advertised host must be the target's host as written
    (e.g. 127.0.0.1): its port is replaced where host and port follow each other."""

    def _start_pipes(self, client: socket.socket, upstream: socket.socket) -> None:
        pending: dict[int, int] = {}  # correlation id -> api key
        lock = threading.Lock()
        threading.Thread(target=self._requests, args=(client, upstream, pending, lock),
                         daemon=True).start()
        threading.Thread(target=self._responses, args=(upstream, client, pending, lock),
                         daemon=True).start()

    def _rewrite(self, frame: bytes) -> bytes:
        host = self.target[0].encode()
        old, new = struct.pack(">i", self.target[1]), struct.pack(">i", self.port)
        for prefix in (struct.pack(">h", len(host)) + host,  # STRING
                       bytes([len(host) + 1]) + host):  # COMPACT_STRING (flexible versions)
            frame = frame.replace(prefix + old, prefix + new)
        return frame

    @staticmethod
    def _frames(src: socket.socket) -> object:
        buf = b""
        while data := src.recv(65536):
            buf += data
            while len(buf) >= 4:
                size = struct.unpack(">i", buf[:4])[0]
                if len(buf) < 4 + size:
                    break
                frame, buf = buf[:4 + size], buf[4 + size:]
                yield frame

    def _requests(self, src: socket.socket, dst: socket.socket, pending: dict[int, int],
                  lock: threading.Lock) -> None:
        try:
            for frame in self._frames(src):  # type: ignore[attr-defined]
                api_key, _, correlation = struct.unpack(">hhi", frame[4:12])
                with lock:
                    pending[correlation] = api_key
                dst.sendall(frame)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _responses(self, src: socket.socket, dst: socket.socket, pending: dict[int, int],
                   lock: threading.Lock) -> None:
        try:
            for frame in self._frames(src):  # type: ignore[attr-defined]
                correlation = struct.unpack(">i", frame[4:8])[0]
                with lock:
                    api_key = pending.pop(correlation, None)
                if api_key in (METADATA, FIND_COORDINATOR):
                    frame = self._rewrite(frame)
                dst.sendall(frame)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
