"""A Jepsen-style check of nickname writes: was any acknowledged write lost?

Every write sets a unique value. Each user's writes are issued one after another by
one client, so for each user the history is a sequence. A write is *acknowledged*
(200), *failed* (a definite error: nothing was applied) or *indeterminate* (timed out
or cut off: it may or may not have been applied). After the run, the user's final
value must be the last acknowledged write, or a write issued after it that was not
refused (an indeterminate one may have landed). Anything else is a lost write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "failed", "indeterminate"]


@dataclass(frozen=True, slots=True)
class Write:
    user: str
    value: str
    seq: int  # order of issue within the user's history
    outcome: Outcome


@dataclass
class Verdict:
    acknowledged: int = 0
    indeterminate: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)  # "user: expected X, found Y"


def check(history: list[Write], final: dict[str, str | None]) -> Verdict:
    """Compare each user's final value with what its history allows."""
    verdict = Verdict()
    by_user: dict[str, list[Write]] = {}
    for write in history:
        by_user.setdefault(write.user, []).append(write)
        if write.outcome == "ok":
            verdict.acknowledged += 1
        elif write.outcome == "indeterminate":
            verdict.indeterminate += 1
        else:
            verdict.failed += 1
    for user, writes in by_user.items():
        writes.sort(key=lambda w: w.seq)
        acked = [w for w in writes if w.outcome == "ok"]
        if not acked:
            continue
        last = acked[-1]
        allowed = {last.value} | {
            w.value for w in writes if w.seq > last.seq and w.outcome == "indeterminate"
        }
        found = final.get(user)
        if found not in allowed:
            verdict.lost.append(f"{user}: expected one of {sorted(allowed)}, found {found!r}")
    return verdict
