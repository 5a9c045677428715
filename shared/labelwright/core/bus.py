"""RabbitMQ adapter (pika): topology, confirmed persistent publishing, reconnect with backoff.

Task queues are quorum queues with a delivery limit: a task that keeps failing (or keeps
killing its worker) is dead-lettered to ``<ns>.dead`` after ``max_deliveries`` tries.
"""

from __future__ import annotations

import logging
import threading

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pydantic import BaseModel
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from .settings import Settings
from .topology import STAGES, Topology

log = logging.getLogger(__name__)
JSON = "application/json"


def connect(settings: Settings, name: str, wait_seconds: float = 120.0) -> pika.BlockingConnection:
    """Open a connection, retrying with exponential backoff while the broker is unreachable."""

    @retry(retry=retry_if_exception_type(AMQPError), wait=wait_exponential(multiplier=0.5, max=10),
           stop=stop_after_delay(wait_seconds), before_sleep=before_sleep_log(log, logging.WARNING), reraise=True)
    def attempt() -> pika.BlockingConnection:
        params = pika.URLParameters(settings.amqp_url)
        params.client_properties = {"connection_name": name}
        return pika.BlockingConnection(params)

    return attempt()


def declare(channel: BlockingChannel, settings: Settings) -> Topology:
    """Declare exchanges and queues (idempotent) for ``settings.namespace``."""
    topo = Topology(settings.namespace)
    channel.exchange_declare(topo.exchange, "direct", durable=True)
    channel.exchange_declare(topo.dead_letter_exchange, "fanout", durable=True)
    channel.queue_declare(topo.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(topo.dead_letter_queue, topo.dead_letter_exchange)
    channel.queue_declare(topo.events_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(topo.events_queue, topo.exchange, topo.events_routing_key)
    for stage in STAGES:
        channel.queue_declare(topo.task_queue(stage), durable=True, arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": topo.dead_letter_exchange,
            "x-delivery-limit": settings.max_deliveries - 1,
        })
        channel.queue_bind(topo.task_queue(stage), topo.exchange, topo.task_routing_key(stage))
    return topo


def properties(message: BaseModel) -> pika.BasicProperties:
    return pika.BasicProperties(content_type=JSON, delivery_mode=pika.DeliveryMode.Persistent,
                                type=type(message).__name__)


class Publisher:
    """A thread-safe publisher with its own connection; every publish is broker-confirmed."""

    def __init__(self, settings: Settings, name: str = "labelwright-publisher") -> None:
        self.settings, self.name = settings, name
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.topology = Topology(settings.namespace)

    def _open(self) -> BlockingChannel:
        if self._channel is None or self._channel.is_closed:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
            self._connection = connect(self.settings, self.name)
            self._channel = self._connection.channel()
            declare(self._channel, self.settings)
            self._channel.confirm_delivery()
        return self._channel

    def publish(self, routing_key: str, message: BaseModel) -> None:
        """Publish persistently and wait for the broker's confirm; reconnect once on failure."""
        body = message.model_dump_json().encode()
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._open().basic_publish(self.topology.exchange, routing_key, body,
                                               properties(message), mandatory=True)
                    return
                except AMQPError:
                    self._channel = None
                    if attempt == 2:
                        raise

    def heartbeat(self) -> None:
        """Let the connection answer heartbeats while the publisher idles."""
        with self._lock:
            if self._connection is not None and self._connection.is_open:
                try:
                    self._connection.process_data_events(0)
                except AMQPError:
                    self._channel = None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
            self._connection = self._channel = None
