"""The command line's log handler counts a repeated line instead of printing it again."""

from __future__ import annotations

import io
import logging

from controller.logs import CollapsingHandler


def _logger(stream: io.StringIO, clock: list[float]) -> logging.Logger:
    logger = logging.getLogger(f"test.collapse.{id(stream)}")
    logger.propagate = False
    handler = CollapsingHandler(stream, every=60.0, clock=lambda: clock[0])
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_a_run_of_one_line_is_printed_once_then_counted() -> None:
    out, clock = io.StringIO(), [0.0]
    log = _logger(out, clock)
    for _ in range(4801):
        log.error("cannot reach 127.0.0.1:1: connection refused")
    log.info("something else")
    lines = out.getvalue().splitlines()
    assert lines == [
        "cannot reach 127.0.0.1:1: connection refused",
        "… the line above repeated (x4,800 in all): cannot reach 127.0.0.1:1: connection refused",
        "something else",
    ]


def test_a_long_run_reports_once_a_minute_and_on_close() -> None:
    out, clock = io.StringIO(), [0.0]
    log = _logger(out, clock)
    for second in range(150):
        clock[0] = float(second)
        log.warning("stage failed: the cluster is down")
    log.handlers[0].close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "stage failed: the cluster is down"
    assert [line.split("(")[1].split(")")[0] for line in lines[1:]] == [
        "x60 so far", "x60 so far", "x29 in all",
    ]  # fmt: skip


def test_the_same_text_at_another_level_or_logger_is_not_a_repeat() -> None:
    out, clock = io.StringIO(), [0.0]
    log = _logger(out, clock)
    log.warning("x")
    log.error("x")
    log.error("x")
    log.warning("y")
    assert out.getvalue().splitlines() == [
        "x", "x", "… the line above repeated (x1 in all): x", "y",
    ]  # fmt: skip


def test_info_events_are_never_collapsed() -> None:
    out, clock = io.StringIO(), [0.0]
    log = _logger(out, clock)
    for _ in range(3):
        log.info('{"event": "moved", "slots": 100, "keys": 0}')
    assert out.getvalue().splitlines() == ['{"event": "moved", "slots": 100, "keys": 0}'] * 3


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("slotpilot.controller", level, __file__, 1, message, None, None)
    record.created = 1_796_000_000.25  # 2026-11-30T...Z
    return record


def test_json_lines_carry_time_level_and_the_events_fields() -> None:
    import json

    from controller.logs import formatter

    line = formatter("json", io.StringIO()).format(_record('{"event": "moved", "slots": 7}'))
    data = json.loads(line)
    assert list(data)[:3] == ["ts", "level", "logger"]
    assert data["ts"].endswith("Z") and data["ts"].startswith("2026-") and "." in data["ts"]
    assert (data["level"], data["event"], data["slots"]) == ("info", "moved", 7)
    plain = json.loads(formatter("json", io.StringIO()).format(
        _record("backlog of jobs unreadable", logging.WARNING)))  # fmt: skip
    assert (plain["level"], plain["event"]) == ("warning", "backlog of jobs unreadable")


def test_text_lines_are_readable_and_auto_follows_the_terminal() -> None:
    from controller.logs import JsonFormatter, TextFormatter, formatter

    line = formatter("text", io.StringIO()).format(_record('{"event": "moved", "slots": 7}'))
    assert line.endswith(" INFO    moved slots=7") and line.startswith("2026-")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(formatter("auto", Terminal()), TextFormatter)
    assert isinstance(formatter("auto", io.StringIO()), JsonFormatter)  # a pod's stderr
