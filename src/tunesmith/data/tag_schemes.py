"""Chunk tag schemes: read IOB1, BIO (IOB2) or BIOES tags as written, check them, and convert them to BIO.

- IOB1 (CoNLL-2003 as distributed): a chunk starts with ``I-X``; ``B-X`` only marks a chunk that directly follows
  another chunk of the same type.
- BIO / IOB2: every chunk starts with ``B-X``; ``I-X`` continues a chunk of type X.
- BIOES / IOBES: ``S-X`` is a one-token chunk, ``B-X ... E-X`` a longer one, ``I-X`` inside it.

Written by hand because seqeval only reads schemes (its ``Entities`` in strict mode), it does not convert them.
A tag outside the scheme, or a sequence the scheme forbids, raises ``SchemeError`` with the token position.
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEMES = ("IOB1", "BIO", "BIOES")
_PREFIXES = {"IOB1": "BI", "BIO": "BI", "BIOES": "BIES"}


class SchemeError(ValueError):
    pass


def _split(tag: str, scheme: str, position: int) -> tuple[str, str]:
    """(prefix, type) of a tag; ``("O", "")`` for outside."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if not dash or len(prefix) != 1 or prefix not in _PREFIXES[scheme] or not kind:
        expected = ", ".join(f"{p}-TYPE" for p in _PREFIXES[scheme])
        raise SchemeError(f"tag {tag!r} at token {position} is not a {scheme} tag (expected O, {expected})")
    return prefix, kind


def to_bio(tags: Sequence[str], scheme: str) -> list[str]:
    """``tags`` written in ``scheme`` as BIO tags (the same chunks); ``SchemeError`` if they break the scheme."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    out: list[str] = []
    previous = ("O", "")
    for position, tag in enumerate(tags):
        prefix, kind = _split(tag, scheme, position)
        inside = previous[0] != "O" and previous[1] == kind  # the previous token is in a chunk of this type
        if scheme == "BIOES" and previous[0] in "BI" and not (prefix in "IE" and inside):
            raise SchemeError(f"chunk {previous[1]!r} before token {position} does not end with E-")
        if prefix == "O":
            out.append("O")
        elif scheme == "IOB1":
            out.append(f"I-{kind}" if prefix == "I" and inside else f"B-{kind}")
        elif scheme == "BIO":
            if prefix == "I" and not inside:
                raise SchemeError(
                    f"tag {tag!r} at token {position} continues no chunk; in BIO a chunk starts with B- "
                    "(if the file is IOB1, as CoNLL-2003 is, set data.tag_scheme: IOB1)"
                )
            out.append(tag)
        else:  # BIOES
            if prefix in "IE" and not (inside and previous[0] in "BI"):
                raise SchemeError(
                    f"tag {tag!r} at token {position} continues no chunk; in BIOES a chunk starts with B-"
                )
            out.append({"B": "B", "S": "B", "I": "I", "E": "I"}[prefix] + f"-{kind}")
        previous = (prefix, kind)
    if scheme == "BIOES" and previous[0] in "BI":
        raise SchemeError(f"chunk {previous[1]!r} at the end does not end with E-")
    return out
