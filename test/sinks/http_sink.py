#!/usr/bin/env python3
"""HTTP sink for journey's sender tests: listens on 127.0.0.1 only.

  http_sink.py LOGFILE [PORT]      (PORT 0 or absent: pick one)

Prints the port on the first line of stdout once listening.  Every request
is appended to LOGFILE as one JSON line {t, method, path, headers, body}
before it is answered, so tests can assert on what arrived and when.  The
path chooses the answer:

  /ok                       200 {"id": "wh-<Idempotency-Key>"}
  /twilio/.../Messages.json 201 {"sid": "SM<Idempotency-Key>"}
  /resend                   200 {"id": "re-<Idempotency-Key>"}
  /status/<code>            <code>; ?retry_after=<s> adds Retry-After
  /fail_first/<n>/<code>    <code> for the first n requests of each
                            Idempotency-Key, then 200 (?retry_after=<s>)
  /hang                     never answers (the client times out)
  /drop                     closes the connection without an answer
  /slow/<ms>                200 after <ms> milliseconds
  /invalid_utf8             500 with invalid UTF-8 bytes and control chars
  /long_id                  200 {"id": <5,000 characters>}
  /echo_auth                500 echoing the Authorization header raw, URL-
                            encoded and JSON-escaped (a server that quotes
                            the request back)
  /twilio_error/<code>      400 {"code": <code>, ...}, as Twilio refuses a send
"""
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log_lock = threading.Lock()
counts = {}
logfile = open(sys.argv[1], "a", buffering=1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def raw(self, code, data):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode("utf-8", "replace")
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        key = self.headers.get("Idempotency-Key", "")
        with log_lock:
            logfile.write(json.dumps({"t": time.time(), "method": self.command,
                                      "path": url.path, "headers": dict(self.headers.items()),
                                      "body": body}) + "\n")
        parts = url.path.strip("/").split("/")
        extra = {}
        if "retry_after" in query:
            extra["Retry-After"] = query["retry_after"][0]
        if parts[0] == "ok":
            self.answer(200, {"id": "wh-" + key})
        elif parts[0] == "twilio":
            self.answer(201, {"sid": "SM" + key, "status": "queued"})
        elif parts[0] == "resend":
            self.answer(200, {"id": "re-" + key})
        elif parts[0] == "status":
            self.answer(int(parts[1]), {"message": "scripted status " + parts[1]}, extra)
        elif parts[0] == "fail_first":
            with log_lock:
                counts[key] = counts.get(key, 0) + 1
                n = counts[key]
            if n <= int(parts[1]):
                self.answer(int(parts[2]), {"message": "scripted failure %d" % n}, extra)
            else:
                self.answer(200, {"id": "wh-" + key})
        elif parts[0] == "twilio_error":
            self.answer(400, {"code": int(parts[1]), "message": "scripted Twilio error",
                              "more_info": "https://www.twilio.com/docs/errors/" + parts[1],
                              "status": 400})
        elif parts[0] == "hang":
            time.sleep(3600)
        elif parts[0] == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif parts[0] == "invalid_utf8":
            self.raw(500, b'{"message": "bad \xff\xfe bytes \xc3\x28 and \x1b[31m\r\nX-Evil: 1"}')
        elif parts[0] == "long_id":
            self.raw(200, b'{"id": "' + "\u00e9".encode() * 10 + b"x" * 5000 + b'"}')
        elif parts[0] == "echo_auth":
            auth = self.headers.get("Authorization", "")
            self.answer(500, {"message": "you sent " + auth + " / " +
                              urllib.parse.quote(auth, safe="") + " / " + json.dumps(auth)})
        elif parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000.0)
            self.answer(200, {"id": "wh-" + key})
        else:
            self.answer(404, {"message": "no such path"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


server = Server(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
