"""`python -m benchmarks`: run every benchmark (the reviewer queue on PostgreSQL, then the
policy checks: the lexicon matcher in memory, the whole check on the same database, then the
release of 1,000 posts through one worker to a local receiver, on the same database)."""

from . import policy, queue, release

if __name__ == "__main__":
    queue.main()
    policy.main()
    release.main(recreate=False)
