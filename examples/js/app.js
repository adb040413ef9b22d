// The `reverse` task: reverses a text by code points ("hello" -> "olleh", "añb" -> "bña").
// Called without a text it fails: `Array.from(undefined)` throws a TypeError whose stack is in
// the attempt's output (`warden logs ID`). `run` is synchronous (see warden_task.js).

import { TaskError, log } from './warden_task.js';

export const tasks = {
  reverse: {
    description: 'Reverses a text',
    maxAttempts: 3,
    run(args) {
      if (args.text !== undefined && typeof args.text !== 'string') {
        throw TaskError.invalidArgs('text must be a string');
      }
      const chars = Array.from(args.text); // no text: a TypeError, retried, its stack in the output
      log(`reversing ${chars.length} characters`);
      return { reversed: chars.reverse().join(''), length: chars.length };
    },
  },
};
