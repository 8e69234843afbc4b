"""The dashboard's pure models: keyed connection diffs, filters, rates, events."""

from __future__ import annotations

from tests.tui.fakes import CONNECTIONS, EVENTS, NOW, closed_event
from tui.model import (
    CONNECTION_FILTER_FIELDS,
    EVENT_FILTER_FIELDS,
    ConnectionsModel,
    EventsModel,
    RateHistory,
    event_fields,
    parse_filter,
)


def test_connections_update_is_a_keyed_diff_with_lazy_cells():
    model = ConnectionsModel()
    assert model.update(CONNECTIONS, NOW) == (3, 0)
    assert model.rows["10cd.1"][:4] == ("10cd.1", "app", "203.0.113.7:50412", "app.example.com")
    moved = [dict(CONNECTIONS[0], bytes_in=2048), CONNECTIONS[2], dict(CONNECTIONS[1], id="10cd.9")]
    assert model.update(moved, NOW + 60) == (1, 1)
    assert set(model.rows) == {"10cd.1", "10ce.7", "10cd.9"} and len(model.rows) == 3
    assert model.rows["10cd.1"][4] == "2.0KB" and model.rows["10cd.1"][6] == "1m42s"
    assert "10cd.2" not in model.rows


def test_views_filter_and_sort():
    model = ConnectionsModel()
    model.update(CONNECTIONS, NOW)
    everything = parse_filter("", CONNECTION_FILTER_FIELDS, ("endpoint", "sni", "client"))
    assert everything is None
    assert model.view(None, "age", False) == ["10ce.7", "10cd.1", "10cd.2"]  # youngest first
    assert model.view(None, "age", True) == ["10cd.2", "10cd.1", "10ce.7"]
    assert model.view(None, "bytes_out", True)[0] == "10cd.2"
    assert model.view(None, "endpoint", False)[0] == "10ce.7"  # no endpoint sorts first
    shop = parse_filter("ep:SHOP", CONNECTION_FILTER_FIELDS, ("endpoint", "sni", "client"))
    assert model.view(shop, "age", False) == ["10cd.2"]
    both = parse_filter("app 203.0", CONNECTION_FILTER_FIELDS, ("endpoint", "sni", "client"))
    assert model.view(both, "age", False) == ["10cd.1"]
    unknown_prefix = parse_filter("colour:red", CONNECTION_FILTER_FIELDS, ("endpoint",))
    assert model.view(unknown_prefix, "age", False) == []


def test_rates_between_snapshots_never_go_negative():
    rates = RateHistory()
    rates.add(100.0, {"connections_total": 10, "bytes_in": 100, "bytes_out": 900})
    assert list(rates.connections) == []
    rates.add(102.0, {"connections_total": 30, "bytes_in": 1100, "bytes_out": 1900})
    assert rates.connection_rate == 10.0 and rates.byte_rate == 1000.0
    rates.add(
        103.0, {"connections_total": 2, "bytes_in": 0, "bytes_out": 0}
    )  # the gateway restarted
    assert rates.connection_rate == 0.0 and rates.byte_rate == 0.0
    rates.add(103.0, {"connections_total": 5})  # same instant: no point
    assert len(rates.connections) == 2


def test_events_are_deduplicated_capped_and_filterable():
    model = EventsModel(capacity=5)
    assert model.add(EVENTS) == 7
    assert len(model.events) == 5 and next(iter(model.events)) == EVENTS[2]["event_id"]
    assert model.add(EVENTS[-2:]) == 0  # a reconnect's backlog repeats them
    fields = model.fields[EVENTS[2]["event_id"]]
    assert fields["type"] == "error" and fields["kind"] == "worker_exited"
    closed = parse_filter("type:closed", EVENT_FILTER_FIELDS, ("summary",))
    assert len(model.view(closed)) == 2
    assert model.view(parse_filter("reason:unknown_sni", EVENT_FILTER_FIELDS, ())) == [
        EVENTS[4]["event_id"]
    ]


def test_event_fields_of_a_closed_connection():
    fields = event_fields(closed_event(3, "shop-a", "killed", "eu.shop.example.com"))
    assert (
        fields["time"] == "07:59:03"
        and fields["endpoint"] == "shop-a"
        and fields["reason"] == "killed"
    )
    assert fields["summary"].startswith("killed  203.0.113.7:50003 sni=eu.shop.example.com")


def test_sparkline_is_zero_based_and_right_aligned():
    from tui.widgets.status import sparkline

    assert sparkline([5, 5, 5], 5) == "  ███"
    assert sparkline([0, 4, 8], 3) == " ▄█"
    assert sparkline([1, 2, 3, 4], 2) == "▆█"
    assert sparkline([], 3) == "   " and sparkline([0, 0], 2) == "  "
