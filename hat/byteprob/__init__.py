"""Exact byte-level probabilities from token-level models, and byte-level ensembles of any hat models."""

from hat.byteprob.exact import EOT_OUTCOME, NUM_OUTCOMES, ByteStream, TokenTable, next_byte_logprobs, text_logprobs
from hat.byteprob.models import RandomTokenModel, TokenModel, log_softmax

__all__ = [
    "EOT_OUTCOME",
    "NUM_OUTCOMES",
    "ByteStream",
    "RandomTokenModel",
    "TokenModel",
    "TokenTable",
    "log_softmax",
    "next_byte_logprobs",
    "text_logprobs",
]
