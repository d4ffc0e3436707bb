"""Storage-lease helpers shared by the storage proof tests: a consumer's holding on one
provider kept in memory, and an independent model of what a storage lease pays."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nuclux.chain import Ledger
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.core.challenge import StorageProof, answer_from_shares, challenged_share, is_sampled
from nuclux.core.merkle import leaf_count, lease_root, root_of_bytes
from tests.chain.world import PARAMS

# Storage tests run many transactions per epoch (each embedded block is a second later than
# the last once chain time is ahead of the wall clock): longer epochs keep them inside one.
STORAGE_PARAMS = dataclasses.replace(
    PARAMS, epoch_length=300, dispute_window=1200, accept_window=600, demand_window=300
)


@dataclass
class Holding:
    """The shares a consumer keeps on one provider under one storage lease."""

    lease_id: int
    shares: list[bytes] = field(default_factory=list)
    revision: int = 0

    @property
    def entries(self) -> list[tuple[bytes, int]]:
        return [(root_of_bytes(s), leaf_count(len(s))) for s in self.shares]

    def next_revision(self) -> Revision:
        return Revision(
            self.lease_id,
            self.revision + 1,
            sum(len(s) for s in self.shares),
            len(self.shares),
            lease_root(self.entries),
        )

    async def commit(
        self, consumer: Ledger, provider: Ledger, submitter: Ledger | None = None
    ) -> SignedRevision:
        """Both sides sign the next revision; ``submitter`` (if any) puts it on chain."""
        rev = self.next_revision()
        signed = SignedRevision(rev, consumer.sign_revision(rev), provider.sign_revision(rev))
        if submitter is not None:
            await submitter.submit_revision(signed)
        self.revision = rev.revision
        return signed

    def challenged(self, seed: int) -> int:
        return challenged_share(seed, self.lease_id, len(self.shares))

    def proof(self, seed: int, share_index: int | None = None) -> StorageProof:
        """The answer to a challenge with ``seed`` (on ``share_index`` for a demand)."""
        index = self.challenged(seed) if share_index is None else share_index % len(self.shares)
        return answer_from_shares(self.entries, index, seed, self.lease_id, self.shares[index])


def expected_paid_epochs(
    lease_id: int,
    start: int,
    end: int,
    now: int,
    seeds: Mapping[int, int],
    proven: Iterable[int],
    missed: Iterable[int] = (),
    one_in: int = PARAMS.sample_one_in,
    limit: int | None = None,
) -> tuple[int, int, int]:
    """The pay rule, computed independently of the contract: (paid epochs, open run, first
    undecided epoch) for a lease of epochs [start, end) at epoch ``now``. ``seeds`` maps
    epochs to recorded seeds; ``missed`` holds the sampled epochs whose proof deadline has
    passed unproven, and the epochs whose seed was lost (absent from ``seeds``). ``limit``
    stops the walk early, as `advance`'s batch size does."""
    proven, missed = set(proven), set(missed)
    paid = run = 0
    e = start
    upto = min(end, now) if limit is None else min(end, now, limit)
    while e < upto:
        seed = seeds.get(e)
        if seed is None:
            if e in missed:  # lost seed
                run = 0
                e += 1
                continue
            break
        if not is_sampled(seed, lease_id, one_in, last_epoch=e + 1 == end):
            run += 1
        elif e in proven:
            paid += run + 1
            run = 0
        elif e in missed:
            run = 0
        else:
            break
        e += 1
    return paid, run, e
