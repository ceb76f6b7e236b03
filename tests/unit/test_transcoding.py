"""Payload models are stored as JSON objects; the fast path for flat models must write exactly
what pydantic would, and every model must read back equal to what was written."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ledger.events import PAYLOAD_MODELS
from ledger.store import PayloadModelAsDict


@given(st.data())
def test_every_payload_model_encodes_as_pydantic_would_and_reads_back(data: Any) -> None:
    for model in PAYLOAD_MODELS:
        instance: BaseModel = data.draw(st.builds(model))
        transcoding = PayloadModelAsDict(model)
        encoded = transcoding.encode(instance)
        assert encoded == instance.model_dump(mode="json")
        assert transcoding.decode(encoded) == instance


def test_flat_models_take_the_fast_path() -> None:
    flat = {model.__name__ for model in PAYLOAD_MODELS if PayloadModelAsDict(model).flat}
    assert "BatchTake" in flat
    assert "BatchIdentity" not in flat  # holds a date: pydantic renders it
    assert "BatchCount" not in flat  # its variance is computed
