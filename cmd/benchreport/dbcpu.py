#!/usr/bin/env python3
"""CPU seconds used so far by the postgres backends connected to database sys.argv[1]."""
import os, sys
db = sys.argv[1]; hz = os.sysconf("SC_CLK_TCK"); total = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
        if not cmd.startswith("postgres:") or f" {db} " not in cmd:
            continue
        s = open(f"/proc/{p}/stat").read(); f = s[s.rindex(")") + 2:].split()
        total += int(f[11]) + int(f[12])
    except OSError:
        pass
print(f"{total / hz:.3f}")
