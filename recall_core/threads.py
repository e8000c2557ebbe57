"""Torch's intra-op thread count is process-wide: one counted setting shared by every user.

Short memory-bound torch ops (merge chunks) and tiny training steps (the demo) run faster and more
predictably on one thread on a small or busy machine: a second intra-op thread's barrier spins for a
descheduled thread (measured: 4-10x the CPU time). Several threads of one process (two dashboard
sessions) may ask at once, so the users are counted and the last one out restores the setting.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

_lock = threading.Lock()
_users = 0
_saved = 1


@contextmanager
def one_torch_thread():
    """Run the block with one torch intra-op thread; restore the previous count when the last user leaves."""
    import torch

    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_saved)
