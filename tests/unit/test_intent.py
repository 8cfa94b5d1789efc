"""The intent record: round trip, malformed input, atomic 0600 file, and the loop's
resume decision (pure)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from controller.intent import (
    IntentError,
    IntentFile,
    IntentRecord,
    PendingChange,
    intent_path,
    shift_clock,
)
from controller.policy import ShardPolicyState, resume_decision

SCALE_IN = PendingChange("scale_in", 4, 3, 1_700_000_000.5, ("127.0.0.1:7006", "127.0.0.1:7007"))


def test_round_trip_is_compact_json() -> None:
    record = IntentRecord(1_700_000_000.0, None, SCALE_IN, "host:42")
    text = record.to_json()
    assert "\n" not in text and len(text) < 400  # fits a Kubernetes annotation
    data = json.loads(text)
    assert data["change"]["draining"] == ["127.0.0.1:7006", "127.0.0.1:7007"]
    assert data["version"] == 1 and data["last_down_at"] is None
    assert IntentRecord.from_json(text) == record
    assert IntentRecord.from_json(IntentRecord().to_json()) == IntentRecord()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "malformed intent record"),
        ("[]", "not a JSON object"),
        ('{"version": 2}', "version 2"),
        ('{"version": 1, "change": {"kind": "explode"}}', "change.kind 'explode' unknown"),
        ('{"version": 1, "change": {"kind": "scale_in"}}', "malformed intent record"),
        ('{"version": 1, "last_up_at": "soon"}', "malformed intent record"),
    ],
)
def test_malformed_records_say_why(text: str, message: str) -> None:
    with pytest.raises(IntentError, match=message):
        IntentRecord.from_json(text)


def test_file_is_atomic_and_private(tmp_path: Path) -> None:
    store = IntentFile(intent_path(str(tmp_path / "state"), "127.0.0.1:7000"))
    assert store.path.name == "intent-127.0.0.1_7000.json"
    assert store.load() == IntentRecord()  # no file yet: nothing pending
    record = IntentRecord(None, 5.0, SCALE_IN)
    store.save(record)
    assert store.load() == record
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.save(IntentRecord(None, 5.0, None))
    assert store.load().change is None
    assert [p.name for p in store.path.parent.iterdir()] == [store.path.name]  # no temp left
    store.path.write_bytes(b"\xff\xfe")
    with pytest.raises(IntentError, match=str(store.path)):
        store.load()


def test_resume_decision_finishes_the_change() -> None:
    d = resume_decision(SCALE_IN, 4, (), ShardPolicyState(), (10.0, 600.0), 100.0)
    assert (d.current, d.desired) == (4, 3)
    assert "resuming interrupted scale_in 4 -> 3" in d.reason and "127.0.0.1:7006" in d.reason
    gated = resume_decision(SCALE_IN, 4, ("open_slots",), ShardPolicyState(), (10, 600), 100.0)
    assert gated.desired == 4 and gated.blocked_by == ("open_slots",)
    failed = ShardPolicyState(failures=2, last_failure_at=95.0)  # waits 20 s
    backing = resume_decision(SCALE_IN, 4, (), failed, (10.0, 600.0), 100.0)
    assert backing.desired == 4 and backing.blocked_by == ("backoff",)
    assert resume_decision(SCALE_IN, 4, (), failed, (10.0, 600.0), 115.0).desired == 3


def test_shift_clock_and_configured_store(tmp_path: Path) -> None:
    assert shift_clock(90.0, 100.0, 1_000_000.0) == 999_990.0  # monotonic -> wall
    assert shift_clock(999_990.0, 1_000_030.0, 5.0) == -35.0  # wall -> a new boot's clock
    assert shift_clock(None, 1.0, 2.0) is None
    assert IntentFile.configured(None, None, "127.0.0.1:7000") is None
    named = IntentFile.configured(str(tmp_path / "x.json"), str(tmp_path), "h:1")
    assert named is not None and named.path == tmp_path / "x.json"
    default = IntentFile.configured(None, str(tmp_path), "h:1")
    assert default is not None and default.path == tmp_path / "intent-h_1.json"


def test_cooldown_survives_a_restart(tmp_path: Path) -> None:
    """A scale-in 40 s before the controller stopped, a restart 30 s later: the new process
    (another monotonic clock) still waits out the 600 s scale-down cooldown."""
    from controller.config import SlotpilotConfig
    from controller.loop import Controller
    from controller.platform import LocalPlatform
    from controller.policy import ShardObservation, decide_shards

    cfg = SlotpilotConfig.model_validate(
        {"cluster": {"seeds": ["127.0.0.1:7000"]}, "shards": {"state_dir": str(tmp_path)}}
    )
    before = Controller(cfg, LocalPlatform({}), clock=lambda: 100.0, wall=lambda: 1_000_000.0)
    before.shard_state = ShardPolicyState(last_down_at=60.0)
    before._save_intent(None)
    before.stop()
    after = Controller(cfg, LocalPlatform({}), clock=lambda: 5.0, wall=lambda: 1_000_030.0)
    try:
        assert after.shard_state.last_down_at == -65.0  # 70 s ago on the new clock
        d, _ = decide_shards(cfg.shards.policy(), after.shard_state, ShardObservation(4, 0.1), 5.0)
        assert d.blocked_by == ("cooldown",) and "530s left" in d.reason
    finally:
        after.stop()


def test_a_resumed_change_is_finished_within_the_policys_bounds_as_they_are_now() -> None:
    """SCALE_IN goes 4 -> 3; with min_shards raised to 4 meanwhile it finishes at 4 (the
    resharding converges from whatever the change left), and says why."""
    d = resume_decision(SCALE_IN, 4, (), ShardPolicyState(), (10.0, 600.0), 100.0, (4, 8))
    assert d.desired == 4 and "the policy allows 4-8 shards" in d.reason
    up = PendingChange("scale_out", 3, 6, 1_700_000_000.0)
    d = resume_decision(up, 4, (), ShardPolicyState(), (10.0, 600.0), 100.0, (2, 5))
    assert d.desired == 5
    inside = resume_decision(SCALE_IN, 4, (), ShardPolicyState(), (10.0, 600.0), 100.0, (2, 5))
    assert inside.desired == 3 and "policy allows" not in inside.reason
