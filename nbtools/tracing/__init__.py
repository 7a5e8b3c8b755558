"""The nnsight sessions: the only code that runs the model. Each one is a single request.

    constants_session(lm, job, backend)   the small weight vectors the algebra needs (once per Lab)
    measure_session(lm, job, backend)     one `Lab.measure_many` call: clean run, source run,
                                          every ablated group; returns per-site dot products
    attention_session(lm, job, backend)   one layer's attention weights

`backend` is None (run here) or the nnsight backend `nbtools.remote.backend_for` gives.

A session body may run on NDIF, whose sandbox has no nbtools: it reads only the plain data of
its `job` (tensors, ints, floats, strings, bools and lists/dicts of them, built by
`nbtools.requests`), looks its modules up from the model by dotted path, and returns a plain
dict bound to a name and saved. Results are reduced inside the session (projected onto the
target directions, gathered at the measured sites), so what comes back is a few floats per
site and component; big activations stay where the model runs.

nnsight ships a session as the unparsed source of its body and finds an inner trace by its
file and line, caching a file's source the first time it sees it: so each session lives in a
module of its own, and every statement of a session body before its inner `with` is written
on one line, with no comment or blank line between them except one blank line before each
`def` (`tests/test_tracing_source.py` checks both).
"""

from .attention import attention_session, eager_attention
from .constants import constants_session
from .measure import measure_session

__all__ = ["attention_session", "constants_session", "eager_attention", "measure_session"]
