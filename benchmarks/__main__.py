"""`python -m benchmarks`: run every benchmark (the reviewer queue on PostgreSQL, then the
policy checks: the lexicon matcher in memory, the whole check on the same database)."""

from . import policy, queue

if __name__ == "__main__":
    queue.main()
    policy.main()
