"""One lock around every nnsight session of the process.

nnsight keeps a traced model's intervention state on the model and runs a trace body in
greenlets bound to the calling thread: two traces of one model at once on two threads (the
Explorer's worker and a notebook cell) interleave and fail. Every session holds this lock.
"""

import threading

TRACE_LOCK = threading.RLock()
