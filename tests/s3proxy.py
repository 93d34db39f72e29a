"""A TCP proxy in front of the local S3 server that can hold one upload: the request that names a given
key is not forwarded until ``release()``; if its client dies first, the request is dropped, as a
connection cut mid-upload is. Everything else passes through unchanged (a real server behind, real
client in front: a test points AWS_ENDPOINT_URL of a driver it starts at ``endpoint``)."""

from __future__ import annotations

import socket
import threading
import time


class HoldingProxy:
    def __init__(self, upstream: tuple[str, int], hold: bytes):
        self.upstream, self.hold = upstream, hold
        self.holding = threading.Event()    # a request naming ``hold`` arrived and waits
        self.released = threading.Event()
        self.dropped = threading.Event()    # its client went away before the release
        self._held_once = False
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _should_hold(self, data: bytes) -> bool:
        with self._lock:
            if self._held_once or self.hold not in data.split(b"\r\n", 1)[0]:
                return False
            self._held_once = True
            return True

    def _wait(self, src: socket.socket) -> bool:
        """Wait for the release; False when the client is gone first."""
        src.settimeout(0.05)
        while not self.released.is_set():
            try:
                if not src.recv(1 << 16, socket.MSG_PEEK):
                    return False
                time.sleep(0.05)   # more of the request waits in the socket: keep it there
            except socket.timeout:
                continue
            except OSError:
                return False
        src.settimeout(None)
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, outgoing: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if outgoing and self._should_hold(data):
                    self.holding.set()
                    if not self._wait(src):
                        self.dropped.set()   # the client died while held: nothing of it reaches the server
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
