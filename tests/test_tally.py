"""``Tally``: the first event of each kind told apart, every event counted, kinds bounded."""

from __future__ import annotations

import threading

from sltrader_plugins import Tally


def test_the_first_of_each_kind_is_told_and_every_event_counted():
    tally = Tally()
    assert [tally.add("a"), tally.add("a"), tally.add("b"), tally.add()] == [
        True,
        False,
        True,
        True,
    ]
    assert tally.counts() == {"a": 2, "b": 1, None: 1}
    assert tally.count("a") == 2 and tally.count("never") == 0
    assert "never" not in tally.counts()  # asking does not make a kind


def test_kinds_past_the_bound_are_counted_together_and_never_first():
    tally = Tally(max_kinds=2, overflow="others")
    assert tally.add("a") and tally.add("b")
    assert not tally.add("c") and not tally.add("d")
    assert tally.add("a") is False  # a known kind still counts as itself
    assert tally.counts() == {"a": 2, "b": 1, "others": 2}


def test_many_threads_get_exactly_one_first_per_kind():
    tally = Tally()
    firsts: list[str] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(2000):
            kind = f"k{i % 50}"
            if tally.add(kind):
                with lock:
                    firsts.append(kind)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(firsts) == sorted(f"k{i}" for i in range(50))
    assert sum(tally.counts().values()) == 8 * 2000
