"""`python -m benchmarks`: run every benchmark (the whole review cycle on PostgreSQL, then its
statements alone, replayed without Django, then the reviewer queue on the same database,
recreated, then the policy checks: the lexicon matcher in memory, the whole check on the same
database, then the release of 1,000 posts through one worker to a local receiver, on the same
database; last, the ledger: a chain of 1,000,000 entries verified, then appends from 8
processes, in its own database). Before the first and after the last, how fast the machine is
(`machine`). The peer, Wagtail, is measured apart: `make bench-peer` (its own virtualenv)."""

from . import cycle, floor, ledger, machine, policy, queue, release

if __name__ == "__main__":
    machine.main()
    cycle.main()
    floor.main()
    queue.main()
    policy.main()
    release.main(recreate=False)
    ledger.main()
    machine.main(end=True)
