"""The one exception type for the user's mistakes, and how a command turns it into a sentence and an exit code."""
from __future__ import annotations

import sys
from typing import Any, Callable


class UserError(Exception):
    """A mistake of the user's (missing file, wrong key, wrong checkpoint...).

    The message is one sentence naming the file and the fix; scripts turn it
    into that message on stderr and exit code 2, without a traceback.
    """


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's ``main()``; a :class:`UserError` ends with its sentence and exit code 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def user_message(err: UserError) -> str:
    """The sentence of ``err``, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception as the same type with the worker's whole traceback as its
    message ("Caught UserError in DataLoader worker process 0. Original Traceback ..."); its last line
    holds the sentence.
    """
    text = str(err)
    if text.startswith("Caught UserError") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split("UserError: ", 1)[-1]
    return text
