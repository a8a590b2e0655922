"""Packing: EOS-joined documents cut into full rows, rows into units, units into batches from the unit start."""

from __future__ import annotations

import numpy as np

from builders._packing import iter_rows, unit_batches, unit_rows
from store import plan_units
from tiny_models import EOS_ID, byte_tokenizer


def test_rows_join_documents_with_eos_and_drop_the_tail() -> None:
    rows = list(iter_rows(["abc", "", "de", "fghij"], byte_tokenizer(), seq_len=4))
    stream = np.concatenate([r[0] for r in rows])
    docs = np.concatenate([r[1] for r in rows])
    assert len(rows) == 3  # 4 + 3 + 6 = 13 tokens -> 3 rows of 4, one token dropped
    assert (stream == EOS_ID).sum() == 2 and stream[3] == EOS_ID and stream[6] == EOS_ID
    assert docs.tolist() == [0, 0, 0, 0, 2, 2, 2, 3, 3, 3, 3, 3]  # the blank document 1 is skipped


def test_units_take_their_rows_and_the_text_may_end_in_one() -> None:
    rows = [(np.full(4, i), np.full(4, 10 + i)) for i in range(7)]  # 28 tokens of text
    units = list(unit_rows(iter(rows), plan_units(40, 12), seq_len=4))
    assert [(unit.start, unit.end) for unit, _, _ in units] == [(0, 12), (12, 24), (24, 28)]  # unit 3 never starts
    unit, token_ids, doc_index = units[1]
    assert token_ids.tolist() == [3] * 4 + [4] * 4 + [5] * 4 and doc_index[0] == 13


def test_batches_start_at_the_unit_start_whatever_the_resume_point() -> None:
    token_ids = np.arange(24)
    batches = list(unit_batches(token_ids, 100, seq_len=4, batch_size=4))
    assert [b.start for b in batches] == [100, 116] and batches[-1].token_ids.shape == (2, 4)
    resumed = list(unit_batches(token_ids[16:], 116, seq_len=4, batch_size=4))  # a checkpoint ended batch 0
    np.testing.assert_array_equal(resumed[0].token_ids, batches[1].token_ids)
