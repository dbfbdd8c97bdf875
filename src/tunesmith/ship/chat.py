"""`tunesmith chat`: talk to a trained run in the terminal, tokens streamed as they are generated.

Commands: ``/reset`` forgets the conversation, ``/exit`` (or end of input) leaves. With ``compare`` every message
goes to the base model and the tuned model; each keeps its own history and both replies are shown, labelled.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.inference import Sampling, chat_prompt, generate, load_pool

HELP = "type a message; /reset forgets the conversation, /exit leaves"


def chat_loop(
    run: TrainedRun,
    sampling: Sampling,
    system: str | None = None,
    compare: bool = False,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> None:
    pool = load_pool([run], include_base=compare)
    name = run.dir.root.resolve().name
    models = [(f"{name}:base", "base"), (name, "tuned")] if compare else [(name, None)]
    start = [{"role": "system", "content": system}] if system else []
    histories = {model_id: list(start) for model_id, _ in models}
    out.write(f"chatting with {name}{' and its base model' if compare else ''}; {HELP}\n")
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            out.write("\n")
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            histories = {model_id: list(start) for model_id, _ in models}
            out.write("(conversation reset)\n")
            continue
        if not line:
            continue
        for model_id, label in models:
            served = pool.get(model_id)
            assert served is not None
            history = histories[model_id]
            history.append({"role": "user", "content": line})
            out.write(f"{label or 'assistant'}> ")
            out.flush()

            def show(text: str) -> None:
                out.write(text)
                out.flush()

            with pool.lock:
                result = generate(served, chat_prompt(served, history), sampling, on_text=show)
            history.append({"role": "assistant", "content": result.text})
            out.write("\n" if result.finish_reason == "stop" else " [cut at the token limit]\n")
            out.flush()
