"""Cold start of each Lambda binary, without Docker: runs the bootstrap
against a minimal Lambda Runtime API on 127.0.0.1 and times, from process
start, (a) its first `GET …/invocation/next` (our own init: config, SDK
clients, runtime) and (b) its response to the first event (init plus one
invocation, which reaches DynamoDB/SQS on the emulator).

    sam build --parameter-overrides Architecture=x86_64 --build-dir .aws-sam/build-x86_64
    python3 bench/cold-start.py ENDPOINT TABLE QUEUE_URL [RUNS=20] [ARTIFACTS=.aws-sam/build-x86_64]

ENDPOINT: a ministack (or LocalStack) endpoint with that table and queue.
Binaries: ARTIFACTS/<Function>/bootstrap, what `sam build` made (x86_64, to
run on this machine; the same profile as the arm64 default).
"""

import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# Fixture event and invocation deadline (s). The reconciler sweeps until a
# few seconds before its deadline: one close to it makes the first response
# its first run rather than a minute of sweeps.
FUNCTIONS = {
    "PlaceOrderFunction": ("events/apigw-get-account.json", 30),
    "SettleFunction": ("events/sqs-settle.json", 30),
    "ReconcilerFunction": ("events/schedule-reconcile.json", 6),
}


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    event = b"{}"
    deadline_s = 30
    marks = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        RuntimeApi.marks.setdefault("next", time.perf_counter())
        if "response" in RuntimeApi.marks:
            time.sleep(5)  # the runtime waits for the next event; the run is over
        body = RuntimeApi.event
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-start-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int((time.time() + RuntimeApi.deadline_s) * 1000)))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:x")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        RuntimeApi.marks.setdefault("response" if "/response" in self.path else "error", time.perf_counter())
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    endpoint, table, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    artifacts = Path(sys.argv[5] if len(sys.argv) > 5 else ".aws-sam/build-x86_64")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    # The killed runtime's half-answered long poll is expected; stay quiet.
    server.handle_error = lambda request, address: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
        AWS_LAMBDA_FUNCTION_NAME="cold-start",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        TABLE_NAME=table,
        SETTLE_QUEUE_URL=queue,
        EXCHANGE_URL="http://127.0.0.1:9",
        RUST_LOG="warn",
    )
    for name, (fixture, deadline_s) in FUNCTIONS.items():
        RuntimeApi.deadline_s = deadline_s
        binary = artifacts / name / "bootstrap"
        RuntimeApi.event = Path(fixture).read_bytes()
        inits, firsts = [], []
        for _ in range(runs):
            RuntimeApi.marks = {}
            start = time.perf_counter()
            process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while "response" not in RuntimeApi.marks and "error" not in RuntimeApi.marks:
                if time.perf_counter() - start > 30:
                    break
                time.sleep(0.0005)
            process.kill()
            process.wait()
            if "next" in RuntimeApi.marks:
                inits.append((RuntimeApi.marks["next"] - start) * 1000)
            done = RuntimeApi.marks.get("response") or RuntimeApi.marks.get("error")
            if done:
                firsts.append((done - start) * 1000)
        print(
            json.dumps(
                {
                    "function": name,
                    "runs": runs,
                    "init_ms_median": round(statistics.median(inits), 2),
                    "first_response_ms_median": round(statistics.median(firsts), 2),
                    "first_response_ms_max": round(max(firsts), 2),
                }
            )
        )


if __name__ == "__main__":
    main()
