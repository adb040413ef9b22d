"""Warden tasks in Python: plain functions over JSON values, registered with ``@task``.

This module implements the ``warden:task/handler`` interface of ``wit/task.wit`` (the one
contract, the same as for Rust) on top of the bindings componentize-py generates, so a task
author writes::

    from warden_task import task, Handler, TaskError, log

    @task(max_attempts=3)
    def wordcount(args):
        return {"words": len(args["text"].split())}

``app.py`` must expose ``Handler`` (import it as above). A task returns any JSON-serialisable
value; it fails by raising ``TaskError.fatal(msg)`` (never retried), ``TaskError.retryable(msg)``,
``TaskError.invalid_args(msg)``, or any other exception (retryable, with its traceback printed
to stderr, which the host keeps in the attempt's output).
"""

import json
import sys
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import context, types

_TASKS = {}


class TaskError(Exception):
    """A failure with the kind the host uses to decide about retries."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def fatal(cls, message):
        return cls("fatal", message)

    @classmethod
    def retryable(cls, message):
        return cls("retryable", message)

    @classmethod
    def invalid_args(cls, message):
        return cls("invalid_args", message)

    def to_wit(self):
        kinds = {
            "fatal": types.TaskError_Fatal,
            "retryable": types.TaskError_Retryable,
            "invalid_args": types.TaskError_InvalidArgs,
        }
        return kinds.get(self.kind, types.TaskError_Other)(self.message)


_CONCURRENCY = {
    None: types.Concurrency.DISABLED,
    "disabled": types.Concurrency.DISABLED,
    "task": types.Concurrency.TASK,
    "arguments": types.Concurrency.ARGUMENTS,
    "keys": types.Concurrency.KEYS,
}


def task(fn=None, *, name=None, description=None, max_attempts=None, timeout_ms=None,
         memory_limit_bytes=None, registration_concurrency=None, running_concurrency=None,
         key_arguments=(), pins=()):
    """Registers ``fn`` as a task (named after the function unless ``name`` is given)."""

    def register(f):
        task_name = name or f.__name__
        _TASKS[task_name] = (f, types.TaskDef(
            name=task_name,
            description=description if description is not None else (f.__doc__ or "").strip().split("\n")[0] or None,
            max_attempts=max_attempts,
            timeout_ms=timeout_ms,
            memory_limit_bytes=memory_limit_bytes,
            registration_concurrency=_CONCURRENCY[registration_concurrency],
            running_concurrency=_CONCURRENCY[running_concurrency],
            key_arguments=list(key_arguments),
            pins=list(pins),
        ))
        return f

    return register(fn) if fn is not None else register


def log(message, level="info"):
    """A log line of the attempt (kept by the host with the attempt's output)."""
    levels = {"trace": types.Level.TRACE, "debug": types.Level.DEBUG, "info": types.Level.INFO,
              "warn": types.Level.WARN, "error": types.Level.ERROR}
    context.log(levels.get(level, types.Level.INFO), str(message))


def info():
    """What the attempt knows about itself: id, task, attempt, parent, workflow."""
    return context.info()


def progress(done, total, message=None):
    """Reports progress (shown by the host while the attempt runs)."""
    context.progress(done, total, message)


def cancelled():
    """True once the host asked this attempt to stop; return soon after."""
    return context.cancelled()


class Handler(exports.Handler):
    """The ``handler`` export: describes the registered tasks and runs one attempt."""

    def describe(self):
        return [definition for (_, definition) in _TASKS.values()]

    def run(self, task_name, args):
        entry = _TASKS.get(task_name)
        if entry is None:
            raise Err(types.TaskError_Fatal(f"unknown task `{task_name}`; this component has {sorted(_TASKS)}"))
        try:
            value = json.loads(args)
        except ValueError as e:
            raise Err(types.TaskError_InvalidArgs(f"arguments are not JSON: {e}"))
        try:
            result = entry[0](value)
        except TaskError as e:
            raise Err(e.to_wit())
        except Exception as e:  # any other failure: retryable, with its traceback in stderr
            traceback.print_exc(file=sys.stderr)
            raise Err(types.TaskError_Other(f"{type(e).__name__}: {e}"))
        try:
            return json.dumps(result)
        except (TypeError, ValueError) as e:
            raise Err(types.TaskError_Fatal(f"the result is not JSON-serialisable: {e}"))
