"""Any byte-level model (a token LM through its exact next-byte distributions, a HAT or byte LM, an ensemble) as a
decode session for the one sampler (`hat.sampling.sample_session`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hat.byteprob.bytelevel import ByteLevelModel, ByteStreamLike
from hat.byteprob.exact import EOT_OUTCOME


class ByteLevelSession:
    """Rows of byte-level streams; the logits are the streams' log-probabilities over 257 outcomes (bytes, then
    end-of-text). Rows are computed one after the other (the streams keep their own caches)."""

    end_of_text = EOT_OUTCOME

    def __init__(self, model: ByteLevelModel) -> None:
        self.model = model
        self.streams: list[ByteStreamLike] = []

    def start(self, contexts: Sequence[bytes]) -> np.ndarray:
        """See `hat.sampling.Session`."""
        self.streams = [self.model.stream(bytes(context)) for context in contexts]
        return self._logprobs()

    def append(self, values: Sequence[int], active: Sequence[bool]) -> np.ndarray:
        """See `hat.sampling.Session`; finished rows are not advanced."""
        for stream, value, on in zip(self.streams, values, active):
            if on:
                stream.push(int(value))
        return self._logprobs()

    def _logprobs(self) -> np.ndarray:
        return np.stack([stream.logprobs() for stream in self.streams]).astype(np.float32)
