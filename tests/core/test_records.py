"""livecart.core.records: the ledger's cheap outcome constructor builds exactly what the dataclass does."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecart.core.records import Outcome, Reason, Status, make_outcome

_opt_text = st.none() | st.text(max_size=12)
_fields = st.tuples(_opt_text, st.text(max_size=12), _opt_text, _opt_text, _opt_text, st.integers(),
                    st.sampled_from(Status), st.none() | st.sampled_from(Reason), st.none() | st.integers(),
                    _opt_text, _opt_text, st.floats(allow_nan=False), st.none() | st.integers())


@given(_fields)
def test_make_outcome_equals_the_constructor(fields: tuple[object, ...]) -> None:
    made = make_outcome(*fields)  # type: ignore[arg-type]
    built = Outcome(*fields)  # type: ignore[arg-type]
    assert type(made) is Outcome
    assert made == built
    assert hash(made) == hash(built)
    assert made.to_dict() == built.to_dict()
    assert dataclasses.astuple(made) == fields


def test_made_outcome_is_frozen_and_works_with_dataclass_tools() -> None:
    o = make_outcome("m-1", "u-1", "o-000001", "egg", None, 2, Status.RESERVED, None, None, "douyin", "7312",
                     1.5, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.qty = 3  # type: ignore[misc]
    assert dataclasses.replace(o, qty=1).qty == 1
    assert pickle.loads(pickle.dumps(o)) == o
    assert repr(o).startswith("Outcome(comment='m-1', user='u-1', order='o-000001'")
