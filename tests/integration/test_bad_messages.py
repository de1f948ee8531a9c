"""A real payment worker fed everything docs/celery-notes.md says kills or silently drops messages:
it survives, and each one lands in its dead-letter store with the payload and the error."""
import json
import subprocess
import sys

import psutil
import pytest
import redis
from kombu import Connection

from tests.support.paths import ROOT
from tests.support.replies import saga_replies
from tests.support.replies import sender as make_sender
from tests.support.waiting import wait_for


@pytest.fixture
def payment_worker(service_worker, tmp_path):
    return service_worker("payment", f"sqlite:///{tmp_path}/p.db")


def dead_letters(env):
    out = subprocess.run([sys.executable, "-m", "services.payment", "dead-letters", "list"],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_junk_never_stops_the_worker_and_nothing_is_lost(payment_worker):
    env, supervisor = payment_worker
    client = redis.Redis.from_url(env["REDIS_URL"])
    for junk in (b"\xff\xfe not even utf-8", b"not json at all", b'"a json string"',
                 b'{"body": 1}'):
        client.lpush("payment", junk)
    with Connection(env["REDIS_URL"]) as conn:  # a valid envelope whose body cannot be decoded
        conn.Producer().publish(b"\x00{broken", routing_key="payment",
                                content_type="application/json", content_encoding="utf-8",
                                headers={"task": "payment.authorize", "id": "undecodable-1"})
    sender = make_sender(env["REDIS_URL"])
    sender.send_task("payment.no_such_task", args=({"order_id": "o-unknown"},), queue="payment")
    sender.send_task("payment.authorize", args=(1, 2, 3), queue="payment")  # wrong arguments
    sender.send_task("payment.authorize", args=({"order": {"order_id": "o-schema"}},))

    letters = wait_for(lambda: len(dead_letters(env)) >= 8 and dead_letters(env),
                       timeout=30, what="eight dead letters")
    errors = " | ".join(d["error"] for d in letters)
    assert sum(d["task"] == "<junk on queue payment>" for d in letters) == 4
    assert "undecodable body" in errors and "unknown task" in errors
    assert "TypeError" in errors and "validation error" in errors
    assert any(d["order_id"] == "o-schema" for d in letters)
    junk_id = next(d["id"] for d in letters if d["task"].startswith("<junk"))
    redrive = subprocess.run([sys.executable, "-m", "services.payment", "dead-letters", "retry",
                              str(junk_id)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert redrive.returncode == 1 and "not a message of ours" in redrive.stdout
    worker = psutil.Process(supervisor.pid("payment"))
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    assert supervisor.restarts.get("payment", 0) == 0

    # and it still does real work: a refund's reply reaches the saga queue
    sender.send_task("payment.refund", args=({"order_id": "o-after"},))
    seen: dict = {}
    wait_for(lambda: "o-after" in saga_replies(client, seen), timeout=20,
             what="the refund's reply")


def test_a_message_whose_deliveries_keep_dying_is_dead_lettered_as_poison(payment_worker):
    env, _ = payment_worker
    client = redis.Redis.from_url(env["REDIS_URL"])
    message = {"order_id": "o-poison"}
    # five earlier deliveries of this very message died mid-run (as a kill -9 leaves them)
    client.set("saga:deliveries:o-poison:payment.refund:0", 5)
    sender = make_sender(env["REDIS_URL"])
    sender.send_task("payment.refund", args=(message,), task_id="o-poison:payment.refund")
    [letter] = wait_for(lambda: [d for d in dead_letters(env) if d["order_id"] == "o-poison"],
                        timeout=20, what="the poison dead letter")
    assert "delivered 6 times" in letter["error"]

    # an operator re-drives it once the cause is fixed: it runs, and the letter is marked
    replies: dict = {}
    saga_replies(client, replies)
    cli = [sys.executable, "-m", "services.payment", "dead-letters"]
    subprocess.run([*cli, "retry", str(letter["id"])], env=env, cwd=ROOT, check=True)
    wait_for(lambda: [r for r in saga_replies(client, replies).get("o-poison", [])
                      if r["status"] == "succeeded"], timeout=20, what="the re-driven refund")
    assert [d for d in dead_letters(env) if d["order_id"] == "o-poison"] == []  # not pending


def test_sending_the_same_step_again_and_again_is_never_poison(payment_worker):
    env, _ = payment_worker
    client = redis.Redis.from_url(env["REDIS_URL"])
    sender = make_sender(env["REDIS_URL"])
    replies: dict = {}
    for _ in range(7):  # as the sweeper re-sends a stalled saga's chain, with the same task id
        sender.send_task("payment.refund", args=({"order_id": "o-again"},),
                         task_id="o-again:payment.refund")
        wait_for(lambda: len(saga_replies(client, replies).get("o-again", [])) >= 1, timeout=20)
        replies.clear()
    assert [d for d in dead_letters(env) if d["order_id"] == "o-again"] == []
