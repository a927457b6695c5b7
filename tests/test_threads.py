"""Work done ahead in threads comes back in order, never more than asked for ahead."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from wheelwright.catalog.bulk.work_ahead import results_in_order


def test_results_come_in_the_items_order_with_at_most_ahead_items_started_beyond_the_one_taken():
    started, taken = [], []
    lock = threading.Lock()

    def work(item):
        with lock:
            started.append(item)
        return item * 10

    with ThreadPoolExecutor(2) as pool:
        for result in results_in_order(pool, work, range(8), ahead=2):
            with lock:
                assert len(started) <= result // 10 + 3  # this item and two ahead
            taken.append(result)
    assert taken == [item * 10 for item in range(8)]


def test_a_failed_item_raises_where_its_result_is_taken():
    def work(item):
        if item == 2:
            raise ValueError("item 2")
        return item

    taken = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="item 2"):
        for result in results_in_order(pool, work, range(5), ahead=2):
            taken.append(result)
    assert taken == [0, 1]
