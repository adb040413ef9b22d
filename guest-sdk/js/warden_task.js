// Warden tasks in JavaScript: plain synchronous functions over JSON values.
//
// This module implements the `warden:task/handler` interface of `wit/task.wit` (the one
// contract, the same as for Rust and Python) for componentize-js. It is the component's entry
// point: it imports the author's `app.js`, which exports its tasks:
//
//     import { TaskError, log } from './warden_task.js';
//
//     export const tasks = {
//       reverse: {
//         description: 'Reverses a text',
//         maxAttempts: 3,
//         run(args) {
//           if (typeof args.text !== 'string') throw TaskError.invalidArgs('text must be a string');
//           return { reversed: [...args.text].reverse().join('') };
//         },
//       },
//     };
//
// `run` must be synchronous: it returns any JSON-serialisable value (a Promise is refused:
// the component answers before it could settle). It fails by throwing `TaskError.fatal(msg)`
// (never retried), `TaskError.retryable(msg)`, `TaskError.invalidArgs(msg)`, or any other
// exception (retryable, with its stack printed to stderr, which the host keeps in the
// attempt's output). Options besides `run`: description, maxAttempts, timeoutMs,
// memoryLimitBytes, registrationConcurrency, runningConcurrency ('disabled' | 'task' |
// 'arguments' | 'keys'), keyArguments, pins.

import * as context from 'warden:task/context@0.1.0';
import { tasks } from './app.js';

/** A failure with the kind the host uses to decide about retries. */
export class TaskError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'TaskError';
    this.kind = kind;
  }
  /** The task can never succeed with these arguments: no retry. */
  static fatal(message) {
    return new TaskError('fatal', message);
  }
  /** A passing failure: retried while attempts remain. */
  static retryable(message) {
    return new TaskError('retryable', message);
  }
  /** The arguments do not fit the task: no retry. */
  static invalidArgs(message) {
    return new TaskError('invalid-args', message);
  }
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** A log line of the attempt (kept by the host with the attempt's output). */
export function log(message, level = 'info') {
  context.log(LEVELS.includes(level) ? level : 'info', String(message));
}

/** What the attempt knows about itself: id, task, attempt, parent, workflow. */
export function info() {
  return context.info();
}

/** Reports progress (shown by the host while the attempt runs). */
export function progress(done, total, message) {
  context.progress(BigInt(done), BigInt(total), message);
}

/** True once the host asked this attempt to stop; return soon after. */
export function cancelled() {
  return context.cancelled();
}

// A thrown `{ payload }` is the `err` case of the WIT result.
const fail = (tag, message) => ({ payload: { tag, val: String(message) } });

const CONCURRENCY = ['disabled', 'task', 'arguments', 'keys'];
const concurrency = (value, task, option) => {
  if (value === undefined || value === null) return 'disabled';
  if (!CONCURRENCY.includes(value)) throw new Error(`task ${task}: ${option} must be one of ${CONCURRENCY.join(', ')}`);
  return value;
};
const u64 = (value) => (value === undefined || value === null ? undefined : BigInt(value));

/** The `handler` export: describes the tasks of `app.js` and runs one attempt. */
export const handler = {
  describe() {
    return Object.entries(tasks).map(([name, t]) => ({
      name,
      description: t.description ?? undefined,
      maxAttempts: t.maxAttempts ?? undefined,
      timeoutMs: u64(t.timeoutMs),
      memoryLimitBytes: u64(t.memoryLimitBytes),
      registrationConcurrency: concurrency(t.registrationConcurrency, name, 'registrationConcurrency'),
      runningConcurrency: concurrency(t.runningConcurrency, name, 'runningConcurrency'),
      keyArguments: t.keyArguments ?? [],
      pins: t.pins ?? [],
    }));
  },

  run(name, args) {
    const t = Object.hasOwn(tasks, name) ? tasks[name] : undefined;
    if (!t || typeof t.run !== 'function') {
      throw fail('fatal', `unknown task \`${name}\`; this component has ${Object.keys(tasks).sort().join(', ')}`);
    }
    let value;
    try {
      value = JSON.parse(args);
    } catch (e) {
      throw fail('invalid-args', `arguments are not JSON: ${e.message}`);
    }
    let result;
    try {
      result = t.run(value);
    } catch (e) {
      if (e instanceof TaskError) throw fail(e.kind, e.message);
      // Any other failure: retryable, with its stack in the attempt's output.
      console.error(e instanceof Error ? e.stack ? `${e.name}: ${e.message}\n${e.stack}` : String(e) : `uncaught: ${String(e)}`);
      throw fail('other', e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    }
    if (result && typeof result.then === 'function') {
      throw fail('fatal', `task ${name}: run returned a Promise; run must be synchronous`);
    }
    let text;
    try {
      text = JSON.stringify(result);
    } catch (e) {
      throw fail('fatal', `the result is not JSON-serialisable: ${e.message}`);
    }
    return text === undefined ? 'null' : text;
  },
};
