"""Run decoding in a child process with a time limit, so no file can hang or kill a worker.

FFmpeg and decord are C code: a hostile file can make them loop forever or crash the process, and
neither can be interrupted from Python. `IsolatedDecoder` forks a child process once and sends it
one call per file; the parent waits at most ``timeout_s``. Past that, or when the child dies, the
child is killed and replaced on the next call, and the caller gets a `DecodeTimeout` or
`DecoderCrashed` to record as the file's skip reason.

The child is created with ``os.fork`` (DataLoader workers are daemonic and may not start
`multiprocessing.Process` children) and talks through a `multiprocessing.Pipe`. It sends back
plain Python and NumPy objects (callers convert tensors), which pickle without shared memory.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any


class DecodeTimeout(Exception):
    """The call did not finish within the time limit; the child was killed."""


class DecoderCrashed(Exception):
    """The child process died during the call (e.g. a segfault in native code)."""


class IsolatedDecoder:
    """Calls functions in a forked child process, with a wall-clock limit per call.

    Args:
        timeout_s: the limit for one call.

    Examples:
        >>> decoder = IsolatedDecoder(timeout_s=5.0)
        >>> decoder.call(pow, 2, 10)
        1024
        >>> decoder.close()
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pid: int | None = None
        self._conn: Connection | None = None
        self._owner = os.getpid()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs ``fn(*args)`` in the child and returns its result or raises its exception.

        ``fn`` and the arguments are pickled, so ``fn`` must be a module-level function.

        Raises:
            DecodeTimeout: the call took longer than ``timeout_s``.
            DecoderCrashed: the child died.
            Exception: whatever ``fn`` raised (re-raised here).
        """
        conn = self._ensure_child()
        try:
            conn.send((fn, args))
            if not conn.poll(self.timeout_s):
                self._kill()
                raise DecodeTimeout(f"no result after {self.timeout_s:g} s; the decoder was killed")
            ok, value = conn.recv()
        except (EOFError, OSError, BrokenPipeError) as err:
            status = self._kill()
            raise DecoderCrashed(f"the decoder process died ({status or err})") from None
        if ok:
            return value
        raise value

    def close(self) -> None:
        """Stops the child (it also exits on its own when this process goes away)."""
        self._kill()

    def _ensure_child(self) -> Connection:
        if self._owner != os.getpid():  # copied into a forked process: the child belongs to the parent
            self._pid, self._conn, self._owner = None, None, os.getpid()
        if self._conn is None:
            parent_end, child_end = Pipe()
            pid = os.fork()
            if pid == 0:  # the child never returns from here
                parent_end.close()
                _serve(child_end)
            child_end.close()
            self._pid, self._conn = pid, parent_end
        return self._conn

    def _kill(self) -> str:
        """Kills and reaps the child; returns how it ended, e.g. "killed by signal 11"."""
        status = ""
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, code = os.waitpid(self._pid, 0)
            if os.WIFSIGNALED(code) and os.WTERMSIG(code) != signal.SIGKILL:
                status = f"killed by signal {os.WTERMSIG(code)}"
            elif os.WIFEXITED(code):
                status = f"exit code {os.WEXITSTATUS(code)}"
        if self._conn is not None:
            self._conn.close()
        self._pid, self._conn = None, None
        return status

    def __del__(self) -> None:
        if self._owner == os.getpid():
            self._kill()


def _serve(conn: Connection) -> None:
    """The child's loop: run each call and send back ``(ok, result or exception)``."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)  # the parent's workers are the parallelism
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    code = 0
    try:
        while True:
            try:
                fn, args = conn.recv()
            except (EOFError, OSError):
                break
            try:
                reply = (True, fn(*args))
            except Exception as err:  # sent back and re-raised by the parent
                reply = (False, _picklable(err))
            conn.send(reply)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _picklable(err: Exception) -> Exception:
    import pickle

    try:
        pickle.dumps(err)
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
