"""The lost-write checker on histories written by hand."""

from __future__ import annotations

from chaos.checker import Outcome, Write, check


def w(user: str, value: str, seq: int, outcome: Outcome = "ok") -> Write:
    return Write(user, value, seq, outcome)


def test_last_acknowledged_write_found_is_not_lost() -> None:
    history = [w("a", "1", 1), w("a", "2", 2), w("b", "x", 1)]
    verdict = check(history, {"a": "2", "b": "x"})
    assert verdict.lost == []
    assert verdict.acknowledged == 3


def test_older_value_means_a_lost_write() -> None:
    verdict = check([w("a", "1", 1), w("a", "2", 2)], {"a": "1"})
    assert len(verdict.lost) == 1
    assert "expected one of ['2']" in verdict.lost[0]


def test_a_later_indeterminate_write_may_have_landed() -> None:
    history = [w("a", "1", 1), w("a", "2", 2, "indeterminate")]
    assert check(history, {"a": "2"}).lost == []
    assert check(history, {"a": "1"}).lost == []
    verdict = check(history, {"a": "zzz"})
    assert len(verdict.lost) == 1
    assert verdict.indeterminate == 1


def test_a_failed_write_must_not_have_landed() -> None:
    history = [w("a", "1", 1), w("a", "2", 2, "failed")]
    assert len(check(history, {"a": "2"}).lost) == 1
    assert check(history, {"a": "1"}).failed == 1


def test_users_without_acknowledged_writes_are_not_judged() -> None:
    assert check([w("a", "1", 1, "indeterminate")], {"a": None}).lost == []


def test_a_missing_user_counts_as_lost() -> None:
    assert len(check([w("a", "1", 1)], {}).lost) == 1
