"""Per-network rate limits shared by every worker: a token bucket in Redis, or in this process.

A rate is "N/period": N calls per period, with bursts of up to N ("50/15m", "100/1m", "5/s",
"1000/24h"). REVIEWFLOW["RATE_LIMITS"] maps a network to its rate; "default" applies to networks
not listed; None (or a missing default) means no limit. `acquire(network)` takes one token and
returns 0, or takes nothing and returns the seconds until one frees.

With a Redis URL (REVIEWFLOW["REDIS_URL"], by default the Celery broker's when it is Redis) the
bucket is one hash per network, updated atomically by a Lua script on the Redis clock, so all
workers on all machines share it. Without one, or while Redis does not answer, each process keeps
its own buckets (a limit per process, not per deployment: logged once).
"""

import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


@dataclass(frozen=True)
class Rate:
    capacity: int  # the burst: tokens the bucket holds when full
    per_second: float  # refill

    @classmethod
    def parse(cls, text):
        match = _RATE.match(str(text))
        if not match or int(match.group(1)) < 1:
            raise ValueError(
                f"A rate limit is 'N/period' such as '50/15m', '100/1m' or '5/s', not {text!r}"
            )
        calls, count, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
        if count < 1:
            raise ValueError(f"The period of a rate limit cannot be zero: {text!r}")
        return cls(capacity=calls, per_second=calls / (count * _UNITS[unit]))


def rate_for(network):
    limits = settings.REVIEWFLOW.get("RATE_LIMITS") or {}
    text = limits[network] if network in limits else limits.get("default")
    return Rate.parse(text) if text else None


def acquire(network, now=None):
    """Take one token for a call to `network`: 0.0, or the seconds to wait for one."""
    rate = rate_for(network)
    if rate is None:
        return 0.0
    url = settings.REVIEWFLOW.get("REDIS_URL") or ""
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            return _redis_bucket(url).take(_key(network), rate, now)
        except Exception as error:  # Redis restarting: keep publishing, limited per process
            _warn_fallback(url, error)
    return _local.take(_key(network), rate, now)


def reset(network=None):
    """Forget the buckets (tests): one network's, or all of this process's local ones."""
    url = settings.REVIEWFLOW.get("REDIS_URL") or ""
    if network is not None and url.startswith(("redis://", "rediss://", "unix://")):
        _redis_bucket(url).client.delete(_key(network))
    _local.clear(None if network is None else _key(network))


def _key(network):
    return f"{settings.REVIEWFLOW.get('RATE_LIMIT_KEY_PREFIX', 'reviewflow:ratelimit:')}{network}"


# --- Redis ------------------------------------------------------------------------------------

# KEYS[1]: the bucket. ARGV: capacity, tokens per second, now (seconds; empty: the Redis clock).
# Returns the wait in seconds as a string ("0" when a token was taken): Lua numbers would be
# truncated to integers on the way back.
TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if not tokens then
  tokens = capacity
  at = now
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 60000)
return tostring(wait)
"""


class RedisBucket:
    def __init__(self, url):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.script = self.client.register_script(TAKE)

    def take(self, key, rate, now=None):
        wait = self.script(
            keys=[key], args=[rate.capacity, repr(rate.per_second), "" if now is None else now]
        )
        return max(0.0, float(wait))


@cache
def _redis_bucket(url):
    return RedisBucket(url)


_warned = set()


def _warn_fallback(url, error):
    if url not in _warned:
        _warned.add(url)
        log.warning("Rate limits kept per process: Redis at %s does not answer (%s)", url, error)


# --- In process -------------------------------------------------------------------------------


class LocalBuckets:
    def __init__(self):
        self._lock = threading.Lock()
        self._buckets = {}  # key -> [tokens, at]

    def take(self, key, rate, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (rate.capacity, now))
            if now > at:
                tokens, at = min(rate.capacity, tokens + (now - at) * rate.per_second), now
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, at)
                return 0.0
            self._buckets[key] = (tokens, at)
            return (1 - tokens) / rate.per_second

    def clear(self, key=None):
        with self._lock:
            if key is None:
                self._buckets.clear()
            else:
                self._buckets.pop(key, None)


_local = LocalBuckets()
