"""The synthetic repos `envs.coding.generator` injects bugs into: name -> {relative path: source}.

Each repo has library modules and, for each module `pkg/m.py`, its tests in `tests/test_m.py` (the
generator hides the mutated module's test file and grades with it). Sources are kept as written and
canonicalised (ast round trip) by the generator.
"""
from __future__ import annotations

REPOS: dict[str, dict[str, str]] = {
    "textkit": {
        "textkit/__init__.py": "",
        "textkit/strings.py": '''
def slugify(text):
    """Lower-case words joined by '-': slugify("Hello  World!") == "hello-world"."""
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words)


def is_palindrome(text):
    """True if the letters read the same both ways, ignoring case and non-letters."""
    letters = [c.lower() for c in text if c.isalpha()]
    return letters == letters[::-1]


def truncate(text, width):
    """Cut to at most `width` characters, ending with '...' when cut (width >= 3)."""
    if len(text) <= width:
        return text
    return text[:width - 3] + "..."


def count_vowels(text):
    return sum(1 for c in text.lower() if c in "aeiou")
''',
        "textkit/numbers.py": '''
def clamp(x, low, high):
    """x limited to [low, high]."""
    if x < low:
        return low
    if x > high:
        return high
    return x


def mean(xs):
    return sum(xs) / len(xs)


def median(xs):
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    if n % 2 == 1:
        return s[mid]
    return (s[mid - 1] + s[mid]) / 2


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def gcd(a, b):
    while b != 0:
        a, b = b, a % b
    return a
''',
        "tests/test_strings.py": '''
from textkit.strings import slugify, is_palindrome, truncate, count_vowels


def test_slugify_basic():
    assert slugify("Hello  World!") == "hello-world"


def test_slugify_empty():
    assert slugify("") == ""


def test_palindrome_true():
    assert is_palindrome("A man, a plan, a canal: Panama")


def test_palindrome_false():
    assert not is_palindrome("abca")


def test_truncate_short():
    assert truncate("abc", 5) == "abc"


def test_truncate_long():
    assert truncate("abcdefgh", 6) == "abc..."


def test_truncate_exact():
    assert truncate("abcdef", 6) == "abcdef"


def test_count_vowels():
    assert count_vowels("Education") == 5
''',
        "tests/test_numbers.py": '''
from textkit.numbers import clamp, mean, median, is_prime, gcd


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_clamp_low():
    assert clamp(-3, 0, 10) == 0


def test_clamp_high():
    assert clamp(12, 0, 10) == 10


def test_mean():
    assert mean([1, 2, 3, 6]) == 3


def test_median_odd():
    assert median([5, 1, 3]) == 3


def test_median_even():
    assert median([4, 1, 3, 2]) == 2.5


def test_primes():
    assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]


def test_prime_square():
    assert not is_prime(49)


def test_gcd():
    assert gcd(12, 18) == 6


def test_gcd_zero():
    assert gcd(7, 0) == 7
''',
    },
    "datakit": {
        "datakit/__init__.py": "",
        "datakit/intervals.py": '''
def merge_intervals(intervals):
    """Merge overlapping [start, end] intervals: [[1, 3], [2, 5], [7, 8]] -> [[1, 5], [7, 8]]."""
    out = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def overlaps(a, b):
    """Closed intervals a and b share at least one point."""
    return a[0] <= b[1] and b[0] <= a[1]


def total_length(intervals):
    return sum(end - start for start, end in merge_intervals(intervals))
''',
        "datakit/search.py": '''
def binary_search(xs, target):
    """Index of target in sorted xs, or -1."""
    lo, hi = 0, len(xs) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if xs[mid] == target:
            return mid
        if xs[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


def argmax(xs):
    best = 0
    for i in range(1, len(xs)):
        if xs[i] > xs[best]:
            best = i
    return best


def chunk(xs, size):
    """Split xs into lists of `size` (the last may be shorter)."""
    return [xs[i:i + size] for i in range(0, len(xs), size)]


def running_sum(xs):
    out, total = [], 0
    for x in xs:
        total = total + x
        out.append(total)
    return out
''',
        "tests/test_intervals.py": '''
from datakit.intervals import merge_intervals, overlaps, total_length


def test_merge():
    assert merge_intervals([[1, 3], [2, 5], [7, 8]]) == [[1, 5], [7, 8]]


def test_merge_touching():
    assert merge_intervals([[1, 2], [2, 4]]) == [[1, 4]]


def test_merge_disjoint():
    assert merge_intervals([[5, 6], [1, 2]]) == [[1, 2], [5, 6]]


def test_overlaps_yes():
    assert overlaps([1, 4], [3, 6])


def test_overlaps_no():
    assert not overlaps([1, 2], [3, 4])


def test_total_length():
    assert total_length([[0, 2], [1, 5], [10, 11]]) == 6
''',
        "tests/test_search.py": '''
from datakit.search import binary_search, argmax, chunk, running_sum


def test_search_found():
    assert binary_search([1, 3, 5, 7, 9], 7) == 3


def test_search_first():
    assert binary_search([1, 3, 5, 7, 9], 1) == 0


def test_search_missing():
    assert binary_search([1, 3, 5], 4) == -1


def test_argmax():
    assert argmax([3, 9, 2, 9]) == 1


def test_chunk():
    assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_running_sum():
    assert running_sum([1, 2, 3]) == [1, 3, 6]
''',
    },
}
