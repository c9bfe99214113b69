"""A stand-in Katib trial for executor tests (no TensorFlow): same arguments as katib.trial.

Its mae is a deterministic function of the hyperparameters. --mode picks the behaviour:
ok (print per-epoch mae=..., then rmse=...), crash (exit 3 before any metric), keras (prints
Keras-style `mae: x`, which Katib's StdOut collector does not read), crash-above=N (crash when
dense1 > N). --sleep S waits S seconds before any metric, --linger S after them; start/end times go to stdout for the concurrency check.
"""

import argparse
import math
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--patient")
p.add_argument("--learning-rate", type=float)
p.add_argument("--dense1", type=int)
p.add_argument("--dense2", type=int)
p.add_argument("--epochs", type=int)
p.add_argument("--mode", default="ok")
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--linger", type=float, default=0.0)
a = p.parse_args()
print(f"start {time.time():.6f}", flush=True)
time.sleep(a.sleep)
mae = 15 + abs(math.log10(a.learning_rate) + 2.5) * 5 + abs(a.dense1 - 128) / 32 + abs(a.dense2 - 64) / 32 \
    + abs(a.epochs - 40) / 10
if a.mode == "crash" or (a.mode.startswith("crash-above=") and a.dense1 > int(a.mode.split("=")[1])):
    print("Traceback: simulated crash", file=sys.stderr)
    sys.exit(3)
if a.mode == "keras":
    print(f"10/10 - 0s - loss: 400.0 - mae: {mae:.4f}")
else:
    # three "epochs": the middle one is the best, the last is reported latest
    for k, v in enumerate((mae + 2, mae, mae + 1)):
        print(f"epoch {k + 1}: mae={v:.6f}")
    print(f"rmse={mae * 1.4:.6f}", flush=True)
time.sleep(a.linger)
print(f"end {time.time():.6f}", flush=True)
