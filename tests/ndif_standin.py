"""A stand-in for an NDIF server, on localhost, for tests: run as its own interpreter.

    python -I tests/ndif_standin.py --model FOLDER --ready FILE [--dtype float32]
        [--behaviour ok|error|silent] [--inline-limit BYTES] [--queue-seconds S]

It speaks the endpoints nnsight 0.8's `RemoteBackend` uses — a websocket at /subscribe that
first sends {"session_id": ...} and then the job's status updates, POST /request
(multipart: the request envelope as "data", the payload as "blob"), results inline on the
websocket (a binary frame) or as a URL to GET /results/<id> — and runs each request the way
NDIF does, as strictly as we can check offline:
  * nbtools cannot be imported in this interpreter (a meta-path blocker; -I drops the user's
    paths, and the project folder is not on sys.path);
  * the payload is unpickled under NDIF's deserialization whitelist (`ndif_whitelist`): a
    pickle that names any other module is refused;
  * the request's code runs with imports limited to NDIF's execution whitelist.
The loaded model folder stands for whatever model key the request names. It writes its port
to --ready when it listens, and a JSON line per request to stdout (payload bytes, result
bytes, what it refused). --behaviour error answers every request with an ERROR status;
silent accepts requests and never answers (a client time-out test); --queue-seconds keeps
every request QUEUED that long before it runs (what a client shows while it waits).
"""

from __future__ import annotations

import argparse
import base64
import builtins
import hashlib
import io
import json
import os
import socket
import struct
import sys
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ndif_whitelist  # noqa: E402  (this folder only; the project stays off sys.path)


class _NoNbtools:
    """A meta-path finder that makes `import nbtools` fail, as on a server without it."""

    def find_spec(self, name, path=None, target=None):
        if name == "nbtools" or name.startswith("nbtools."):
            raise ModuleNotFoundError(f"No module named {name!r} (not on this server)")
        return None


sys.meta_path.insert(0, _NoNbtools())

import torch  # noqa: E402
from nnsight import TransformersModel  # noqa: E402
from nnsight.intervention.serialization import CustomCloudUnpickler  # noqa: E402
from nnsight.schema.request import RequestModel  # noqa: E402
from nnsight.schema.response import ResponseModel, Status  # noqa: E402
from nnsight.tracing import tracer as nn_tracer  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


class WhitelistUnpickler(CustomCloudUnpickler):
    """nnsight's unpickler, refusing every module NDIF's deserialization whitelist lacks."""

    refused: list[str] = []

    def find_class(self, module, name):
        entries = ndif_whitelist.EXECUTION + ndif_whitelist.DESERIALIZATION_EXTRA
        if not ndif_whitelist.allowed(module, entries):
            WhitelistUnpickler.refused.append(f"{module}.{name}")
            raise ImportError(f"Module {module} is not whitelisted (unpickling {name})")
        return super().find_class(module, name)


def _guarded_import(real):
    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and not ndif_whitelist.allowed(name, ndif_whitelist.EXECUTION):
            raise ImportError(f"Module {name} is not whitelisted")
        return real(name, globals, locals, fromlist, level)
    return guarded


def run_request(lm, blob: bytes, compress: bool) -> dict:
    """Deserialize under the whitelist and run the request's code; the saved values."""
    tracer = RequestModel.deserialize(blob, lm._remoteable_persistent_objects(), compress,
                                      WhitelistUnpickler)
    real_import = builtins.__import__
    nn_tracer.inc()
    builtins.__import__ = _guarded_import(real_import)
    try:
        tracer.execute(tracer.info.code)
        saves = nn_tracer._saves()
        return {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in saves}
    finally:
        builtins.__import__ = real_import
        nn_tracer.dec()


# --- the minimal websocket framing the client needs (server → client, unmasked) ----------
def ws_frame(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, lm, behaviour, inline_limit, queue_seconds=0.0):
        super().__init__(address, Handler)
        self.lm, self.behaviour, self.inline_limit = lm, behaviour, inline_limit
        self.queue_seconds = queue_seconds
        self.sockets: dict[str, tuple[socket.socket, threading.Lock]] = {}
        self.results: dict[str, bytes] = {}
        self.run_lock = threading.Lock()

    def push(self, session: str, response: ResponseModel, binary: bool = False) -> None:
        sock, lock = self.sockets[session]
        data = response.pickle() if binary else response.model_dump_json().encode()
        with lock:
            sock.sendall(ws_frame(data, 0x2 if binary else 0x1))

    def work(self, job_id: str, request: RequestModel, blob: bytes) -> None:
        session = request.session_id
        log = {"id": job_id, "payload_bytes": len(blob), "compressed": request.compress}
        if self.behaviour == "silent":
            return
        self.push(session, ResponseModel(id=job_id, status=Status.QUEUED))
        if self.behaviour == "error":
            self.push(session, ResponseModel(id=job_id, status=Status.ERROR,
                                             description="the stand-in refuses every request"))
            return
        time.sleep(self.queue_seconds)
        self.push(session, ResponseModel(id=job_id, status=Status.RUNNING))
        WhitelistUnpickler.refused = []
        try:
            with self.run_lock, torch.no_grad():
                result = run_request(self.lm, blob, request.compress)
        except Exception as err:  # what NDIF reports back: the error, as text
            log.update(error=f"{type(err).__name__}: {err}", refused=WhitelistUnpickler.refused)
            print(json.dumps(log), flush=True)
            self.push(session, ResponseModel(id=job_id, status=Status.ERROR,
                                             description=f"{type(err).__name__}: {err}"))
            return
        buffer = io.BytesIO()
        torch.save(result, buffer)
        data = buffer.getvalue()
        log["result_bytes"] = len(data)
        log["result_tensor_bytes"] = sum(_tensor_bytes(v) for v in result.values())
        if request.compress:
            import zstandard
            data = zstandard.ZstdCompressor(level=6).compress(data)
        print(json.dumps(log), flush=True)
        if len(data) <= self.inline_limit:
            self.push(session, ResponseModel(id=job_id, status=Status.COMPLETED, data=data),
                      binary=True)
        else:
            self.results[job_id] = data
            url = f"http://127.0.0.1:{self.server_address[1]}/results/{job_id}"
            self.push(session, ResponseModel(id=job_id, status=Status.COMPLETED, data=url))


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/subscribe") and "websocket" in self.headers.get("Upgrade", "").lower():
            return self._subscribe()
        if self.path.startswith("/results/"):
            data = self.server.results.get(self.path.rsplit("/", 1)[1])
            if data is None:
                return self._send(404, b"no such result")
            return self._send(200, data, "application/octet-stream")
        return self._send(404, b"not found")

    def do_POST(self):
        if self.path != "/request":
            return self._send(404, b"not found")
        body = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                 for p in message.iter_parts()}
        request = RequestModel.model_validate_json(parts["data"])
        job_id = uuid.uuid4().hex[:12]
        reply = ResponseModel(id=job_id, status=Status.RECEIVED).model_dump_json().encode()
        self._send(200, reply, "application/json")
        threading.Thread(target=self.server.work, args=(job_id, request, parts["blob"]),
                         daemon=True).start()

    def _send(self, code: int, data: bytes, kind: str = "text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _subscribe(self):
        accept = base64.b64encode(hashlib.sha1(
            (self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()
        ).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        session = uuid.uuid4().hex[:12]
        sock = self.connection
        self.server.sockets[session] = (sock, threading.Lock())
        sock.sendall(ws_frame(json.dumps({"session_id": session}).encode(), 0x1))
        try:
            while sock.recv(4096):  # until the client closes (it sends nothing else we need)
                pass
        except OSError:
            pass
        finally:
            self.server.sockets.pop(session, None)
            self.close_connection = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--behaviour", default="ok", choices=["ok", "error", "silent"])
    parser.add_argument("--inline-limit", type=int, default=1 << 20)
    parser.add_argument("--queue-seconds", type=float, default=0.0)
    args = parser.parse_args()
    # NDIF runs eager attention (it returns the attention weights)
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype),
                                              attn_implementation="eager").eval()
    lm = TransformersModel(hf, tokenizer=AutoTokenizer.from_pretrained(args.model))
    server = Server(("127.0.0.1", 0), lm, args.behaviour, args.inline_limit, args.queue_seconds)
    with open(args.ready + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.ready + ".tmp", args.ready)
    server.serve_forever()


if __name__ == "__main__":
    main()
