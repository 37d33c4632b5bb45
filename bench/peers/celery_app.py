"""The Celery application celery_bench.py starts a worker for. Its broker
is the private Redis server that celery_bench.py runs ($BENCH_REDIS_URL)."""
import os
import subprocess

from celery import Celery

app = Celery("loombench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    # Celery's "Optimizing" guide: short tasks gain from a larger prefetch
    # window; results we do not need are not stored (completion is counted
    # in a file instead of a result backend round trip per task).
    worker_prefetch_multiplier=64,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def run_true(done):
    subprocess.run(["true"], check=True)
    fd = os.open(done, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"x\n")
    os.close(fd)


@app.task
def run_stamp(stamp, trace, name):
    subprocess.run([stamp, trace, name], check=True)
