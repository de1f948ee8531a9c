"""Which broker a URL names, and how the Sentinel form is read."""
import pytest

from runtime.broker import Broker, _sentinels
from runtime.settings import ProcessSettings


@pytest.mark.parametrize(("url", "kind", "on_redis"), [
    ("redis://127.0.0.1:6379/0", "redis", True),
    ("rediss://cache.example:6380/1", "redis", True),
    ("sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379", "sentinel", True),
    ("amqp://guest:guest@127.0.0.1:5672/saga", "amqp", False),
    ("memory://", "memory", False),
])
def test_a_broker_url_names_its_kind(url, kind, on_redis):
    broker = Broker(url, "saga" if kind == "sentinel" else None)
    assert (broker.kind, broker.on_redis) == (kind, on_redis)


def test_a_sentinel_url_is_every_sentinel_with_the_db_and_password_of_the_master():
    hosts, db, password = _sentinels("sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2")
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert (db, password) == (2, "s3cret")


def test_a_sentinel_url_without_the_master_name_is_refused_by_name():
    with pytest.raises(ValueError, match="BROKER_SENTINEL_MASTER"):
        Broker("sentinel://10.0.0.1:26379")


def test_broker_url_wins_over_redis_url_which_still_works(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://old:6379/0")
    assert ProcessSettings().broker_url == "redis://old:6379/0"
    monkeypatch.setenv("BROKER_URL", "amqp://guest:guest@rabbit:5672/")
    assert ProcessSettings().broker.kind == "amqp"


def test_a_broker_we_do_not_run_on_fails_the_settings_with_a_reason(monkeypatch):
    monkeypatch.setenv("BROKER_URL", "sqs://queue")
    with pytest.raises(ValueError, match="redis://, rediss://, sentinel:// or amqp://"):
        ProcessSettings()
