"""Where tunesmith talks to a person: status and progress on stderr (stdout stays for results and pipes)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
