"""HAT over bytes (`model.kind: hat`, the default): a byte encoder pools each word, a word-level backbone, a byte
decoder writes the next word."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from hat.checkpoint import LoadedModel
from hat.config import Config, check_stack
from hat.data.layout import ContextRules
from hat.kinds.base import require
from hat.kinds.byte_data import ByteModelKind
from hat.models import flops_per_byte, pooling_head_dim
from hat.sampling import Session
from hat.sessions import HatSession, UncachedSession
from hat.text import SpecialTokenError, SpecialTokens


class HatKind(ByteModelKind):
    """HAT over bytes (the default)."""

    name = model_kind = "hat"
    unit = "word"
    description = "HAT over bytes"
    export_format = "released"

    def validate(self, config: Config) -> None:
        model = config.model
        check_stack("encoder", model.encoder)
        check_stack("decoder", model.decoder)
        require(
            not model.tie_embeddings,
            "model.tie_embeddings is for flat models (byte_lm, token_lm): HAT's byte embedding and head have "
            "different widths",
        )
        pool_head_dim = pooling_head_dim(model)
        require(
            pool_head_dim % 2 == 0 and pool_head_dim > 0,
            f"the pooling's head dim ({pool_head_dim} = model.encoder.hidden_size // model.pooling.num_heads unless "
            "model.pooling.head_dim is set) must be even for its rotary embedding: set model.pooling.head_dim",
        )
        cross = model.decoder_cross_attention
        require(
            cross is None or cross.num_heads % cross.num_kv_heads == 0,
            "model.decoder_cross_attention.num_heads must be a multiple of num_kv_heads",
        )
        try:
            special = SpecialTokens(model.special_tokens).special_bytes
        except SpecialTokenError as error:
            require(False, f"model.special_tokens: {error}")
        require(
            all(value < model.vocab_size for value in special),
            f"model.special_tokens maps to byte values outside model.vocab_size ({model.vocab_size})",
        )
        require(
            model.encoder.hidden_size == model.decoder.hidden_size,
            "model.decoder.hidden_size must equal model.encoder.hidden_size: the decoder reads the encoder's byte "
            "states",
        )

    def units_per_backbone_slot(self, config: Config) -> float:
        # The backbone runs every word slot, used or not, so the step costs max_words slots per sequence.
        return config.data.seq_bytes / config.data.max_words

    def units(self, data: bytes, config: Config, source: Path | None = None) -> list[Hashable]:
        rules = ContextRules.of(config.model)
        return rules.split(rules.special_tokens.encode(data), config.model.max_word_bytes)

    def unit_vocabulary(self, config: Config) -> int | None:
        return None  # HAT's words are an open set

    def flops_per_text_byte(self, config: Config, bytes_per_unit: float) -> float:
        return flops_per_byte(config.model, config.data.seq_bytes, bytes_per_unit)

    def session(self, loaded: LoadedModel, use_cache: bool = True) -> Session:
        return HatSession(loaded) if use_cache else UncachedSession(loaded)

    def end_of_text_id(self, config: Config) -> int | None:
        return None  # the released layout stores its special tokens itself
