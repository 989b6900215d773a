"""When a request's caller stops waiting: by the Redis server's clock, never the caller's."""

from replica.expired_requests import entry_seconds, expires_at


def test_entry_ids_carry_the_redis_servers_time():
    assert entry_seconds(b"1796322374078-0") == 1796322374.078
    assert entry_seconds("1796322374078-12") == 1796322374.078
    assert entry_seconds(b"garbage") is None


def test_timeout_counts_from_when_the_request_entered():
    assert expires_at({"timeout": "10"}, entered=1000.0) == 1010.0
    # a deadline by a clock an hour behind is ignored when a timeout is given
    assert expires_at({"timeout": "10", "deadline": "-2600"}, entered=1000.0) == 1010.0


def test_a_deadline_before_the_request_entered_means_a_clock_behind_and_is_not_trusted():
    assert expires_at({"deadline": "990"}, entered=1000.0) is None
    assert expires_at({"deadline": "1000"}, entered=1000.0) is None
    assert expires_at({"deadline": "1010.5"}, entered=1000.0) == 1010.5


def test_no_limit_or_unreadable_limits_mean_serve_it():
    assert expires_at({}, entered=1000.0) is None
    assert expires_at({"timeout": "soon"}, entered=1000.0) is None
    assert expires_at({"deadline": "1010"}, entered=None) == 1010.0
    assert expires_at({"timeout": "5"}, entered=None) is None
