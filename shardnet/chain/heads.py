"""New blocks pushed by the node: `eth_subscribe("newHeads")` over a websocket, with polling as the fallback.

`HeadSubscription` runs one daemon thread that holds a websocket to the node and calls `on_head(number)` for
every block the node announces. It carries no events itself: each call only wakes the role's `EventWatcher`,
which reads the logs by block range from its durable cursor. So nothing is lost or repeated when the socket
drops: after every (re)subscription `on_head(None)` is called once, and the watcher's next poll backfills
every block since its cursor. While the node offers no websocket (another port, a proxy that strips the
upgrade, a node down) the thread retries with back-off and the watcher keeps polling at its interval.

    heads = HeadSubscription(ws_url_for(rpc_url), on_head=lambda _n: wake.set())
    heads.start()  # ... heads.stop()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.sync.client import ClientConnection, connect

log = logging.getLogger(__name__)

#: `ws_url` settings that turn the subscription off (the watcher then only polls).
WS_OFF = frozenset({"", "off", "none", "poll"})

#: Called with each new block's number; with None after a (re)subscription, when blocks may have been missed.
OnHead = Callable[[int | None], object]


def ws_url_for(rpc_url: str, ws_url: str | None = None) -> str | None:
    """The websocket URL to subscribe on: `ws_url` if given (None if it says off), else the JSON-RPC URL with
    ws:// or wss:// (anvil and hardhat serve both on one port; geth needs its --ws port given)."""
    if ws_url is not None:
        return None if ws_url.strip().lower() in WS_OFF else ws_url
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    return None if scheme is None else urlunsplit((scheme, *parts[1:]))


class HeadSubscription:
    """A websocket `newHeads` subscription in a thread; see the module docstring.

    `connected` is True while the subscription is live; `subscriptions` counts the successful ones (a
    reconnect adds one); `heads` counts the blocks announced.
    """

    def __init__(
        self,
        ws_url: str,
        on_head: OnHead,
        *,
        name: str = "chain",
        open_timeout_s: float = 3.0,
        first_retry_s: float = 0.2,
        max_retry_s: float = 10.0,
    ) -> None:
        self.ws_url = ws_url
        self.on_head = on_head
        self.name = name
        self.open_timeout_s = open_timeout_s
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.connected = False
        self.subscriptions = 0
        self.heads = 0
        self._stop = threading.Event()
        self._ws: ClientConnection | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HeadSubscription:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-heads", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.drop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def drop(self) -> None:
        """Close the current socket (the thread reconnects unless stopped): what a node restart does."""
        ws = self._ws
        if ws is not None:
            ws.close()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the subscription is live; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connected

    def _run(self) -> None:
        delay = self.first_retry_s
        warned = False
        while not self._stop.is_set():
            try:
                self._follow()
                delay = self.first_retry_s  # it was live: the next try comes soon
            except Exception as exc:  # refused, reset, not a websocket, a node without eth_subscribe
                if self._stop.is_set():
                    break
                if not warned:
                    log.warning(
                        "%s: no websocket subscription at %s (%s); polling the chain until it comes back",
                        self.name,
                        self.ws_url,
                        exc,
                    )
                    warned = True
                else:
                    log.debug("%s: websocket %s still unavailable: %s", self.name, self.ws_url, exc)
            self.connected = False
            self._ws = None
            self._stop.wait(delay)
            delay = min(self.max_retry_s, delay * 2)

    def _follow(self) -> None:
        with connect(self.ws_url, open_timeout=self.open_timeout_s, close_timeout=1, max_size=2**20) as ws:
            self._ws = ws
            if self._stop.is_set():
                return
            ws.send(
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
            )
            reply = json.loads(ws.recv(timeout=self.open_timeout_s))
            if "result" not in reply:
                raise ValueError(f"eth_subscribe refused: {reply.get('error', reply)}")
            self.connected = True
            self.subscriptions += 1
            log.info("%s: subscribed to new blocks at %s", self.name, self.ws_url)
            self.on_head(None)  # blocks mined while it was not subscribed: the watcher backfills them
            for message in ws:
                note = json.loads(message)
                if note.get("method") != "eth_subscription":
                    continue
                head = note["params"]["result"]
                self.heads += 1
                self.on_head(int(head["number"], 16) if isinstance(head, dict) and "number" in head else None)
