import json, random, sys, threading, time, urllib.request
base = sys.argv[1]; seconds = float(sys.argv[2]); users = int(sys.argv[3])
stop = time.time() + seconds
counts = {}
lock = threading.Lock()
def worker():
    while time.time() < stop:
        u = f"u{random.randrange(users)}"
        amt = random.choice(["0.25", "0.5", "1", "1.75", "3"])
        req = urllib.request.Request(base + "/orders", data=json.dumps({"coin": "ABAN", "amount": amt}).encode(),
                                     headers={"X-User-Id": u, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r: code = r.status
        except urllib.error.HTTPError as e: code = e.code
        except Exception as e: code = type(e).__name__
        with lock: counts[code] = counts.get(code, 0) + 1
ts = [threading.Thread(target=worker) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print("load answers:", counts)
