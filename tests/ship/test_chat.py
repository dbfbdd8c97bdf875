"""`tunesmith chat`: a real terminal session driven through stdin: streamed replies, history, /reset, --compare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROMPT = "Sentiment of: a gorgeous , witty , seductive movie ."


def _chat(run_dir: Path, lines: list[str], *options: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("tunesmith")
    return subprocess.run(
        [str(exe), "chat", str(run_dir), *options],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


def test_chat_answers_keeps_history_and_resets(tuned_run_dir: Path) -> None:
    result = _chat(tuned_run_dir, [PROMPT, "/reset", PROMPT, "/exit", "never read"], "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr
    replies = [line.removeprefix("you> ") for line in result.stdout.splitlines() if "assistant> " in line]
    assert len(replies) == 2 and replies[0] == replies[1]  # after /reset the same question gets the same answer
    assert replies[0].removeprefix("assistant> ") in ("positive", "negative")
    assert "(conversation reset)" in result.stdout


def test_chat_compare_shows_base_and_tuned(tuned_run_dir: Path) -> None:
    result = _chat(tuned_run_dir, [PROMPT], "--compare", "--max-new-tokens", "6", "--system", "Answer in one word.")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "base> " in out and "tuned> " in out and out.index("base> ") < out.index("tuned> ")
    tuned = next(line for line in out.splitlines() if "tuned> " in line).split("tuned> ", 1)[1]
    assert tuned in ("positive", "negative")
