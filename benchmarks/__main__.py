"""`python -m benchmarks`: run every benchmark (the reviewer queue on PostgreSQL)."""

from . import queue

if __name__ == "__main__":
    queue.main()
