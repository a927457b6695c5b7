"""Work done ahead in threads, its results taken in order (a bulk replay's parsing and folding)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def results_in_order(pool: Executor, work: Callable[[Item], Result], items: Iterable[Item],
                     ahead: int) -> Iterator[Result]:
    """``work(item)`` for each of ``items``, in their order; while the caller handles one result, ``pool``
    works on up to ``ahead`` of the next items. A work item's error is raised where its result is taken;
    the caller's ``with pool`` waits for the items under way if it stops early."""
    pending: deque[Future[Result]] = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
