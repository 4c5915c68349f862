#!/usr/bin/env python3
"""`moetier chat` driven through a pseudo-terminal, as a person would: a message and its reply
streaming in, Ctrl-C stopping the answer (not the program), /stats, /reset, /think on a model
without thinking mode, an unknown command, and /quit."""
import os
import pty
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402


class Pty:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(argv[0], argv)
        self.out = b""

    def read_for(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.out += chunk

    def read_until(self, needle, seconds=120):
        end = time.time() + seconds
        start = len(self.out)
        while time.time() < end:
            if needle.encode() in self.out[start:]:
                return True
            self.read_for(0.1)
        return needle.encode() in self.out[start:]

    def send(self, text):
        os.write(self.fd, text.encode())

    def alive(self):
        pid, _ = os.waitpid(self.pid, os.WNOHANG)
        return pid == 0

    def wait(self, seconds=30):
        end = time.time() + seconds
        while time.time() < end:
            self.read_for(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        return None


def main():
    a = C.parse_args()
    ck = C.Checker()
    model = os.path.join(a.workdir, "tiny_v3")
    if not os.path.exists(os.path.join(model, "config.json")):
        C.run_cli(a.moetier, ["make-model", "--preset", "tiny", "--out", model])
    p = Pty([a.moetier, "chat", "--model", model, "-n", "3000", "--temperature", "0"])
    ck.check("chat starts and prompts", p.read_until("> ", 120), p.out.decode(errors="replace")[-300:])

    p.send("Hello\r")
    before = len(p.out)
    p.read_for(1.0)
    streamed = p.out[before:].replace(b"Hello", b"").strip()
    ck.check("the reply streams in while it is written", len(streamed) > 0, repr(p.out[before:][:200]))
    p.send("\x03")  # Ctrl-C through the terminal: SIGINT to the chat
    stopped = p.read_until("[stopped]", 30)
    p.read_for(0.5)
    ck.check("Ctrl-C stops the answer and returns to the prompt",
             stopped and b"> " in p.out[p.out.rfind(b"[stopped]"):], p.out.decode(errors="replace")[-300:])
    ck.check("Ctrl-C does not end the program", p.alive())

    p.send("/stats\r")
    ck.check("/stats reports the last answer and the context", p.read_until("context:", 30),
             p.out.decode(errors="replace")[-300:])
    p.send("/reset\r")
    ck.check("/reset starts a new conversation", p.read_until("(new conversation)", 30))
    p.send("/think on\r")
    ck.check("/think on a V3 model says why not", p.read_until("needs a V3.1/V3.2 chat template", 30))
    p.send("/frobnicate\r")
    ck.check("an unknown command is named", p.read_until("unknown command /frobnicate", 30))
    p.send("\x03")  # Ctrl-C at the prompt: a fresh prompt, still running
    p.read_for(0.5)
    ck.check("Ctrl-C at the prompt keeps the program", p.alive())
    p.send("/quit\r")
    ck.check("/quit exits 0", p.wait(30) == 0)
    ck.finish()


if __name__ == "__main__":
    main()
