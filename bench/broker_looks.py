"""What the load driver asks of the broker, whichever it is: whether anything is still in flight
(so that an order that never ends is seen as lost, and the CPU is read once the work is done),
and how many operations the broker has served (Redis commands, or the AMQP packets RabbitMQ
received and sent: a packet is one socket read or write, several frames when they come
together)."""
import subprocess

from bench import cpu
from contracts.names import Queue
from runtime.broker import AmqpDepths, Broker
from runtime.reply_stream import STREAM as REPLIES

# the hand-rolled chain and the bare one use Celery's default queue too
QUEUES = (*Queue.ALL, "celery")


class Looks:
    def __init__(self, url: str, sentinel_master: str | None = None,
                 rabbit_node: str | None = None) -> None:
        self.broker = Broker(url, sentinel_master)
        self.rabbit_node = rabbit_node  # rabbitmqctl's -n, for the frame counts
        if self.broker.on_redis:
            self.client = self.broker.redis(socket_timeout=10)
        else:
            self.amqp = AmqpDepths(url)

    @property
    def unit(self) -> str:
        return "redis_commands" if self.broker.on_redis else "amqp_packets"

    def busy(self) -> int:
        """Messages queued or taken but not acked, across the saga's queues, and the steps'
        replies the saga worker has not applied yet. On RabbitMQ, queued only: a passive
        declare does not count what a consumer holds unacked."""
        if not self.broker.on_redis:
            return sum(self.amqp.depths(QUEUES).values())
        pipe = self.client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
        pipe.hlen("unacked")
        pipe.xlen(REPLIES)
        return int(sum(pipe.execute()))

    def calls(self) -> dict[str, int]:
        """The broker's operations so far: Redis commands by command (INFO commandstats), or
        the packets RabbitMQ has received and sent on every connection open now."""
        if self.broker.on_redis:
            return cpu.redis_calls(self.client)
        node = ["-n", self.rabbit_node] if self.rabbit_node else []
        out = subprocess.run(["rabbitmqctl", *node, "-q", "--no-table-headers",
                              "list_connections", "recv_cnt", "send_cnt"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        received = sent = 0
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                received, sent = received + int(parts[0]), sent + int(parts[1])
        return {"packets_to_rabbitmq": received, "packets_from_rabbitmq": sent}
