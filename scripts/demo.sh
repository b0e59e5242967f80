#!/usr/bin/env bash
# The demo: a lab of three hosts, Redis on lab1 with 100,000 keys, live-migrated to lab2,
# every key checked there, and the migration report printed.
set -euo pipefail
cd "$(dirname "$0")/.."
M=(.venv/bin/migrator -i inventory/lab.yaml)
PY=.venv/bin/python

.venv/bin/migrator lab up
LAB=${MIGRATOR_LAB_DIR:-/var/lib/migrator-lab}
SSH=(ssh -i "$LAB/id_ed25519" -o "UserKnownHostsFile=$LAB/known_hosts" -o StrictHostKeyChecking=yes
     -o BatchMode=yes -l root)
addr() { "$PY" -c 'import sys; from migrator.inventory import load; print(load("inventory/lab.yaml").host(sys.argv[1]).address)' "$1"; }
A=$(addr lab1); B=$(addr lab2)

echo "== starting Redis 'demo-redis' on lab1 ($A)"
for h in "$A" "$B" "$(addr lab3)"; do "${SSH[@]}" "$h" docker rm -f demo-redis >/dev/null 2>&1 || true; done
"${SSH[@]}" "$A" docker run -d --name demo-redis -p 6379:6379 lab/redis >/dev/null

echo "== writing 100,000 keys"
"$PY" - "$A" <<'PYEOF'
import sys, time, redis
r = redis.Redis(sys.argv[1], 6379)
for _ in range(100):
    try:
        r.ping(); break
    except redis.ConnectionError:
        time.sleep(0.1)
p = r.pipeline(transaction=False)
for i in range(100_000):
    p.set(f"key:{i}", f"value:{i}")
p.execute()
print("lab1 holds", r.dbsize(), "keys (in memory only: no RDB, no AOF)")
PYEOF

echo "== migrating demo-redis lab1 -> lab2"
"${M[@]}" migrate demo-redis --from lab1 --to lab2

echo "== checking every key on lab2 ($B)"
"$PY" - "$B" <<'PYEOF'
import sys, redis
r = redis.Redis(sys.argv[1], 6379)
p = r.pipeline(transaction=False)
for i in range(100_000):
    p.get(f"key:{i}")
bad = [i for i, v in enumerate(p.execute()) if v != f"value:{i}".encode()]
if bad:
    sys.exit(f"{len(bad)} keys missing or wrong on lab2")
print("all 100,000 keys are on lab2")
PYEOF
echo "== done. Try: .venv/bin/migrator -i inventory/lab.yaml migrate demo-redis --from lab2 --to lab3"
echo "   Remove the lab with: .venv/bin/migrator lab down"
