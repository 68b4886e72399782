"""Pure batch work in a helper process: the same results as here, and here when the helper cannot start."""

from __future__ import annotations

from transforms.helper import BatchHelper, batches, pipelined
from transforms.tokens import TokenCounter, count_with, get_encoding

TEXTS = ["", "hello world", "HTTP 관련 내용을 알려줘.", "  leading spaces and <|endoftext|> look-alike\t\r\n",
         "Sync 채널 설정: 타임아웃은 30초, 재시도 3회.\n\n```json\n{\"timeout\": 30}\n```"] * 4


def test_batches_after_the_first_are_worked_in_the_helper_with_the_same_results():
    expected = TokenCounter("o200k_base").texts(TEXTS)
    with BatchHelper(count_with, "o200k_base", warm_up=get_encoding, warm_up_args=("o200k_base",)) as helper:
        assert helper.submit(TEXTS).result() == expected  # the first batch: here
        assert helper.submit(TEXTS).result() == expected  # the second starts the helper
        helper.ready.result(timeout=60)
        helped = helper.submit(TEXTS)
        assert helper.pool is not None and helped.result() == expected  # in the helper


def test_a_helper_that_cannot_start_leaves_the_work_here():
    with BatchHelper(len, warm_up=get_encoding, warm_up_args=("no_such_encoding",)) as helper:
        helper.submit("ab")
        helper.submit("abc")
        assert helper.ready.exception(timeout=60) is not None
        assert helper.submit("abcd").result() == 4


def test_pipelined_keeps_order_and_submits_ahead():
    submitted = []

    def submit(batch):
        submitted.append(batch)
        return BatchHelper(sum).submit(batch)

    results = []
    for batch, total in pipelined(batches(range(10), 3), submit, ahead=2):
        results.append((batch, total))
        assert len(submitted) == min(len(results) + 2, 4)
    assert results == [([0, 1, 2], 3), ([3, 4, 5], 12), ([6, 7, 8], 21), ([9], 9)]


def _wait_for(path: str) -> str:
    """Work that finishes once `path` exists (bounded: a test never hangs on it)."""
    import os
    import time

    for _ in range(6000):
        if os.path.exists(path):
            return path
        time.sleep(0.01)
    raise TimeoutError(path)


def test_backlog_counts_the_batches_the_helper_process_has_not_finished(tmp_path):
    gates = [str(tmp_path / f"gate-{i}") for i in range(4)]
    with BatchHelper(_wait_for) as helper:
        (tmp_path / "gate-0").touch()
        (tmp_path / "gate-1").touch()
        assert helper.submit(gates[0]).result() == gates[0]  # the first batch: here, never a backlog
        assert helper.backlog() == 0
        helper.submit(gates[1]).result()  # starts the helper
        helper.ready.result(timeout=60)
        waiting = [helper.submit(gate) for gate in gates[2:]]
        assert helper.backlog() == 2
        (tmp_path / "gate-2").touch()
        assert waiting[0].result(timeout=60) == gates[2] and helper.backlog() == 1
        (tmp_path / "gate-3").touch()
        assert waiting[1].result(timeout=60) == gates[3] and helper.backlog() == 0
