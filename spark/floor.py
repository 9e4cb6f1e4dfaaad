"""Spark's floor on this machine (BENCHMARKS.md, "Spark"): start a session, read the input's
lines and count them, shuffle every line once by a hash. No identity work; what any job over the
same input pays on local[2] with spark/bench.sh's settings.

    SPARK_LOCAL_IP=127.0.0.1 spark/.venv/bin/python spark/floor.py /tmp/km1m
"""
import sys, time
t0 = time.time()
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "6g")
         .config("spark.sql.shuffle.partitions", "16").config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
t1 = time.time()
df = spark.read.text(sys.argv[1] + "/revisions")
n = df.count()
t2 = time.time()
# one shuffle of every line by a key (as attributing events to persons needs)
m = df.select(F.xxhash64("value").alias("k"), F.length("value").alias("l")).groupBy("k").agg(F.sum("l")).count()
t3 = time.time()
print("session %.1f s, read+count %.1f s, one shuffle of all lines %.1f s (n=%d, groups=%d)" % (t1 - t0, t2 - t1, t3 - t2, n, m))
