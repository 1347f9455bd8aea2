"""Writes a seed file of N load-test accounts (load-1 … load-N) with large balances."""
import json
import sys

users = int(sys.argv[1])
accounts = [{"user_id": f"load-{i}", "balance_usd": "1000000000"} for i in range(1, users + 1)]
print(json.dumps({"accounts": accounts}))
