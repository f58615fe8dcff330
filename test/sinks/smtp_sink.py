#!/usr/bin/env python3
"""SMTP sink for journey's sender tests: listens on 127.0.0.1 only.

  smtp_sink.py LOGFILE [PORT]      (PORT 0 or absent: pick one)

Prints the port once listening.  Speaks EHLO/HELO, AUTH PLAIN and LOGIN,
MAIL FROM, RCPT TO, DATA, RSET, NOOP and QUIT.  Each accepted message is
appended to LOGFILE as a JSON line {t, auth, mail_from, rcpt, data}.  The
recipient's local part scripts failures: "temp..." gets 451 at RCPT,
"perm..." gets 550 at RCPT.  Every line a client sends, commands and
message data alike, is appended raw to LOGFILE.raw (one JSON string per
line), so a test sees exactly what went over the wire.  It never offers
STARTTLS (and answers 502 to it): a server without TLS.
"""
import base64
import json
import socketserver
import sys
import threading
import time

log_lock = threading.Lock()
logfile = open(sys.argv[1], "a", buffering=1)
rawlog = open(sys.argv[1] + ".raw", "a", buffering=1)


class Handler(socketserver.StreamRequestHandler):
    def send(self, line):
        self.wfile.write((line + "\r\n").encode())

    def readline(self):
        raw = self.rfile.readline()
        if raw:
            with log_lock:
                rawlog.write(json.dumps(raw.decode("latin-1")) + "\n")
        return raw

    def handle(self):
        self.send("220 127.0.0.1 journey test sink")
        auth = None
        mail_from = None
        rcpt = []
        while True:
            raw = self.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.send("250-127.0.0.1")
                self.send("250-8BITMIME")
                self.send("250 AUTH PLAIN LOGIN")
            elif verb == "AUTH":
                parts = line.split()
                if parts[1].upper() == "PLAIN":
                    if len(parts) > 2:
                        token = parts[2]
                    else:
                        self.send("334 ")
                        token = self.readline().decode().strip()
                    _, user, pw = base64.b64decode(token).decode().split("\0")
                else:
                    self.send("334 VXNlcm5hbWU6")
                    user = base64.b64decode(self.readline().strip()).decode()
                    self.send("334 UGFzc3dvcmQ6")
                    pw = base64.b64decode(self.readline().strip()).decode()
                auth = user + ":" + pw
                if pw == "wrong":
                    self.send("535 5.7.8 authentication failed")
                else:
                    self.send("235 2.7.0 authenticated")
            elif verb == "MAIL":
                mail_from = line[10:].strip()
                rcpt = []
                self.send("250 OK")
            elif verb == "RCPT":
                addr = line[8:].strip()
                local = addr.strip("<>").split("@")[0]
                if local.startswith("temp"):
                    self.send("451 4.3.0 try again later")
                elif local.startswith("perm"):
                    self.send("550 5.1.1 no such user")
                else:
                    rcpt.append(addr)
                    self.send("250 OK")
            elif verb == "DATA":
                self.send("354 end with <CRLF>.<CRLF>")
                data = []
                while True:
                    l = self.readline()
                    if not l or l == b".\r\n":
                        break
                    if l.startswith(b".."):
                        l = l[1:]
                    data.append(l)
                with log_lock:
                    logfile.write(json.dumps({"t": time.time(), "auth": auth, "mail_from": mail_from,
                                              "rcpt": rcpt,
                                              "data": b"".join(data).decode("utf-8", "replace")}) + "\n")
                self.send("250 OK queued")
            elif verb == "RSET":
                mail_from, rcpt = None, []
                self.send("250 OK")
            elif verb == "NOOP":
                self.send("250 OK")
            elif verb == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 command not implemented")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
