"""`python -m benchmarks`: run every benchmark: the whole review cycle on PostgreSQL, then its
statements alone, replayed without Django, then the peer, Wagtail, in its own virtualenv and
database, with the cycle's rate as a multiple of the peer's (`cycle_vs_peer`; the issue's target
is 10); then the reviewer queue on the same database, recreated, and the beat's sweeps over its
posts; then the policy checks: the lexicon matcher in memory, the whole check on the same
database; then the release of 1,000 posts through one worker to a local receiver, on the same
database; last, the ledger: a chain of 1,000,000 entries verified, then appends from 8 processes,
in its own database. Before the first and after the last, how fast the machine is (`machine`)."""

import os

from . import beat, cycle, floor, ledger, machine, peer, policy, queue, release

if __name__ == "__main__":
    machine.main()
    rate = cycle.main()
    floor.main()
    if peer_rate := peer.run_beside(os.environ["DATABASE_URL"]):
        queue.bench("cycle_vs_peer", f"{rate / peer_rate:.1f}", "x")
    queue.main()
    beat.main(recreate=False)
    policy.main()
    release.main(recreate=False)
    ledger.main()
    machine.main(end=True)
