"""Planted canaries (``data.canaries: k``): k random secrets written into k training replies, so the memorisation
probe can measure how many a trained model gives back (Carlini et al., 2019, "The Secret Sharer")."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from tunesmith.core.errors import ConfigError
from tunesmith.data.records import Chat

OPENER = " (canary code "  # the text before a secret: the probe asks the model to continue it


def plant_canaries(train: list[Any], k: int, seed: int) -> list[dict[str, str]]:
    """Append ``OPENER + secret + ")"`` to the final reply of ``k`` training chats chosen by ``seed`` (in place);
    return ``[{"source", "secret"}]``. Each chat's ``meta["canary"]`` holds its secret."""
    chats = [c for c in train if isinstance(c, Chat)]
    if len(chats) < k:
        raise ConfigError(f"data.canaries is {k} but only {len(chats)} training rows are chats to plant them in")
    rng = random.Random(f"canaries-{seed}")
    planted = []
    for chat in rng.sample(chats, k):
        secret = "-".join(f"{rng.randrange(1000):03d}" for _ in range(3))
        last = max(i for i, m in enumerate(chat.messages) if m.role == "assistant")
        reply = chat.messages[last]
        chat.messages[last] = dataclasses.replace(reply, content=f"{reply.content}{OPENER}{secret})")
        chat.meta["canary"] = secret
        planted.append({"source": chat.source, "secret": secret})
    return planted
