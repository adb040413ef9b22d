"""The `wordcount` task: counts the words of a text and names the most frequent ones.

Called with {"text": "the cat and the hat"} it returns
{"words": 5, "distinct": 4, "top": [["the", 2], ["cat", 1], ["and", 1]]}. Called without a
text it fails: the KeyError's traceback is in the attempt's output (`warden logs ID`).
"""

from collections import Counter

from warden_task import Handler, TaskError, log, task  # noqa: F401 (Handler is the component's export)


@task(max_attempts=3)
def wordcount(args):
    """Counts the words of a text."""
    text = args["text"]  # no text: a KeyError, retried, its traceback in the output
    if not isinstance(text, str):
        raise TaskError.invalid_args("text must be a string")
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    counts = Counter(w for w in words if w)
    log(f"{len(words)} words, {len(counts)} distinct")
    # Sorted by hand: Counter.most_common(n) imports heapq when called, and a component holds
    # only the modules imported while componentize-py built it.
    top = sorted(counts.items(), key=lambda wn: -wn[1])[: int(args.get("top", 3))]
    return {"words": len(words), "distinct": len(counts), "top": [[w, n] for w, n in top]}
