"""Several small objects of one lease stored together (``ShardStore.put_many``).

Each object still gets its own temp file, written whole and fsynced, then renamed into
``blobs/`` like any object; what the batch shares is the rest: one hand-off to an I/O thread
for all the files, one index transaction (one commit, one fsync per blob directory) for all the
rows. So every object of the batch becomes visible at once, or none does. Sizes are charged to
the lease's in-memory quota in full for the duration (no credit for objects being replaced):
a batch into a nearly full lease may be refused where single PUTs would fit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nuclux.node.store_index import Index, unlink_quietly
from nuclux.node.store_txn import NewObject


def write_temp_files(
    ix: Index, items: Sequence[tuple[bytes, bytes | memoryview]]
) -> list[NewObject]:
    """Write each ``(object id, data)`` to its own fsynced temp file; the objects to commit.
    On an error the files written so far are removed."""
    out: list[NewObject] = []
    try:
        for oid, data in items:
            fd, name = tempfile.mkstemp(dir=ix.root / "tmp", prefix="b-")
            out.append((oid, hashlib.sha256(data).digest(), len(data), Path(name), None))
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        remove_temp_files(out)
        raise
    return out


def remove_temp_files(objects: list[NewObject]) -> None:
    for _, _, _, tmp, _ in objects:
        unlink_quietly(tmp)
