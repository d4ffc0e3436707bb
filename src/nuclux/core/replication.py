"""Majority over replicated job results: which result to accept, whom to pay, whom to decline.

Theory of operation
-------------------
A replicated job runs the same spec (deterministic profile, one seed, one nonce) on distinct
providers; honest replicas return results with the same hash (``nuclux.core.job``). The buyer
accepts a result hash when a *strict majority* of the answers it collected carry it: more
than half of them, so two different hashes can never both be accepted. Providers whose hash
is the accepted one are paid; the others were outvoted and are declined (they lose that job's
payment, not stake: a majority is not provable on chain).

Without a majority the buyer asks one more provider at a time, up to a bound, and decides
again over every answer so far. When the bound is reached with no majority, nobody was
outvoted, so everyone who answered is paid and the job fails (``Verdict.accepted is None``).

Only answers count: a provider that failed to answer (gone, busy, broken reply) is replaced
and is neither paid nor declined here. This module is pure: answers in, a verdict out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from nuclux.errors import UsageError


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision over the answers so far.

    ``accepted`` is the majority's result hash, or None. ``pay`` and ``decline`` split the
    providers who answered (both empty while more answers are needed); ``counts`` is how many
    answers carried each hash, most common first."""

    accepted: bytes | None
    pay: tuple[str, ...]
    decline: tuple[str, ...]
    counts: tuple[tuple[bytes, int], ...]
    final: bool

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(h for h, _ in self.counts)


def majority(answers: Mapping[str, bytes]) -> bytes | None:
    """The result hash carried by more than half of ``answers`` (provider -> hash), if any."""
    if not answers:
        return None
    digest, count = Counter(answers.values()).most_common(1)[0]
    return digest if 2 * count > len(answers) else None


def decide(answers: Mapping[str, bytes], *, replicas: int, max_extra: int) -> Verdict:
    """The verdict over ``answers`` of a job asked of ``replicas`` providers, which may ask up
    to ``max_extra`` more one at a time when there is no majority.

    Final when a strict majority exists (pay it, decline the rest) or when no more providers
    may be asked (pay everyone). Otherwise not final: ask another provider (``more_needed``).
    """
    if replicas < 1 or max_extra < 0:
        raise UsageError("replicas >= 1 and max_extra >= 0")
    if len(answers) > replicas + max_extra:
        raise UsageError(f"{len(answers)} answers, more than the {replicas + max_extra} allowed")
    counts = tuple(sorted(Counter(answers.values()).items(), key=lambda item: (-item[1], item[0])))
    winner = majority(answers) if len(answers) >= replicas else None
    if winner is not None:
        pay = tuple(sorted(p for p, h in answers.items() if h == winner))
        decline = tuple(sorted(p for p, h in answers.items() if h != winner))
        return Verdict(winner, pay, decline, counts, True)
    if len(answers) >= replicas + max_extra:
        return Verdict(None, tuple(sorted(answers)), (), counts, True)
    return Verdict(None, (), (), counts, False)


def more_needed(answers: Mapping[str, bytes], *, replicas: int, max_extra: int) -> int:
    """How many more providers to ask now: the missing replicas first, then one at a time
    while there is no majority and the bound allows; 0 once the verdict is final."""
    if len(answers) < replicas:
        return replicas - len(answers)
    return 0 if decide(answers, replicas=replicas, max_extra=max_extra).final else 1
