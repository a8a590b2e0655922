"""Packing: EOS-joined documents cut into full rows; batches fixed from the stream start."""

from __future__ import annotations

import numpy as np

from builders._packing import iter_batches, iter_rows
from tiny_models import EOS_ID, byte_tokenizer


def test_rows_join_documents_with_eos_and_drop_the_tail() -> None:
    rows = list(iter_rows(["abc", "", "de", "fghij"], byte_tokenizer(), seq_len=4))
    stream = np.concatenate([r[0] for r in rows])
    docs = np.concatenate([r[1] for r in rows])
    assert len(rows) == 3  # 4 + 3 + 6 = 13 tokens -> 3 rows of 4, one token dropped
    assert (stream == EOS_ID).sum() == 2 and stream[3] == EOS_ID and stream[6] == EOS_ID
    assert docs.tolist() == [0, 0, 0, 0, 2, 2, 2, 3, 3, 3, 3, 3]  # the blank document 1 is skipped


def test_batches_skip_only_committed_ones() -> None:
    rows = [(np.full(4, i), np.full(4, i)) for i in range(7)]
    all_batches = list(iter_batches(iter(rows), batch_size=3, max_rows=7))
    assert [b.start for b in all_batches] == [0, 12, 24] and all_batches[-1].token_ids.shape == (1, 4)
    resumed = list(iter_batches(iter(rows), batch_size=3, max_rows=7, first_token=16))
    assert [b.start for b in resumed] == [12, 24]  # same batch boundaries; the writer drops tokens < 16
    np.testing.assert_array_equal(resumed[0].token_ids, all_batches[1].token_ids)
