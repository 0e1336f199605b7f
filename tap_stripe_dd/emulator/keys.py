"""Deterministic randomness and Stripe-like ids that decode back to the object's index."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

MASK64 = (1 << 64) - 1
# ASCII order, so that fixed-width base62 strings sort like the numbers they encode.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DIGIT = {char: value for value, char in enumerate(ALPHABET)}
PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two digits per divmod: ids are hot
B64_TO_ALNUM = bytes.maketrans(b"+/", b"xQ")  # a slight bias; these are not secrets
INDEX_WIDTH = 6  # 62**6 ≈ 5.7e10, less an offset below 51 * 62**5 ≈ 4.6e10
CHECK_WIDTH = 8


def mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def hash64(*parts: object) -> int:
    """A stable 64-bit hash of some values (Python's hash() is salted per process)."""
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def base62(number: int, width: int) -> str:
    """Fixed-width base62 of a non-negative number below 62**width."""
    digits = []
    for _ in range(width // 2):
        number, pair = divmod(number, 3844)
        digits.append(PAIRS[pair])
    if width % 2:
        digits.append(ALPHABET[number % 62])
    return "".join(reversed(digits))


def alphanumeric(number: int, length: int) -> str:
    """`length` characters of [0-9A-Za-z] from the low 6*length bits of a number; via base64,
    as that is C code (base62 digit by digit is the slowest part of building an object)."""
    raw = (number & ((1 << 6 * length) - 1)).to_bytes((6 * length + 7) // 8, "little")
    return base64.b64encode(raw)[:length].translate(B64_TO_ALNUM).decode()


def unbase62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + DIGIT[char]
    return number


class Rng:
    """Draws for one object: seeding random.Random costs 5 µs, far more than building the object."""

    __slots__ = ("_key", "_pool", "_refills")

    def __init__(self, key: int) -> None:
        self._key = key
        self._refills = 0
        self._pool = 0
        self._refill()

    def _refill(self) -> None:
        self._refills += 1
        seed = (self._key * 1_000_003 + self._refills).to_bytes(16, "little", signed=False)
        self._pool = int.from_bytes(hashlib.blake2b(seed, digest_size=64).digest(), "little")

    def below(self, n: int) -> int:
        """Uniform in [0, n): peels one mixed-radix digit off the pool of random bits."""
        if self._pool < n << 64:
            self._refill()
        self._pool, value = divmod(self._pool, n)
        return value

    def between(self, low: int, high: int) -> int:
        """Uniform in [low, high]."""
        return low + self.below(high - low + 1)

    def chance(self, percent: float) -> bool:
        return self.below(10_000) < percent * 100

    def pick(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def token(self, length: int) -> str:
        """Random alphanumeric text, e.g. a card fingerprint."""
        return alphanumeric(self.below(1 << 6 * length), length)

    def digits(self, length: int) -> str:
        return str(self.below(10**length)).zfill(length)


class WeightedTable(Generic[T]):
    """Values with integer weights, expanded once so that a draw is one index."""

    def __init__(self, weights: dict[T, int]) -> None:
        self.values = [value for value, weight in weights.items() for _ in range(weight)]

    def draw(self, rng: Rng) -> T:
        return rng.pick(self.values)


class IdCodec:
    """Ids of one resource in one data set: `ch_` + index + data-set tag + check characters.

    The index (plus a per-data-set offset, so ids do not all start `0000`) is fixed-width base62
    at the front, so ids sort like indexes and a cursor id decodes to its position without a
    lookup; the check characters make ids of another seed, account or resource (and typos)
    unknown instead of aliasing an object here.
    """

    def __init__(self, prefix: str, dataset_key: int, body_length: int) -> None:
        self.prefix = prefix + "_"
        self.length = len(self.prefix) + body_length
        self._salt = hash64(dataset_key, prefix)
        self._offset = 62 ** (INDEX_WIDTH - 1) * (1 + dataset_key % 50)
        self._check_width = min(CHECK_WIDTH, body_length - INDEX_WIDTH)
        self._tag = alphanumeric(self._salt, body_length - INDEX_WIDTH - self._check_width)

    def encode(self, index: int) -> str:
        high, low = divmod(index + self._offset, 3844)  # base62(…, 6), unrolled: ids are hot
        high, middle = divmod(high, 3844)
        check = alphanumeric(mix64(self._salt ^ index), self._check_width)
        return f"{self.prefix}{PAIRS[high]}{PAIRS[middle]}{PAIRS[low]}{self._tag}{check}"

    def decode(self, object_id: str) -> int | None:
        """The index an id stands for, or None if it is not an id of this resource and data set."""
        if len(object_id) != self.length or not object_id.startswith(self.prefix):
            return None
        body = object_id[len(self.prefix) :]
        if not (body.isascii() and body.isalnum()):  # base62 digits only
            return None
        index = unbase62(body[:INDEX_WIDTH]) - self._offset
        return index if index >= 0 and object_id == self.encode(index) else None
