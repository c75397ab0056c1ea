"""Compressed-text input: an exact arithmetic coder (`arithmetic`), EqualInfoAC windows driven by a byte LM M1
(`equal_info`), its file format (`container`), M2's token data (`data`), evaluation and sampling of M2."""
