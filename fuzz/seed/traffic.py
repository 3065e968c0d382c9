#!/usr/bin/env python3
"""Real client traffic for seeding the fuzz corpora (see ../README.md, "Seeds").

    python traffic.py BOOTSTRAP

Drives a broker (through capture_proxy.py) with kcat, confluent-kafka and kafka-python: topic
admin, produce in every codec, consume, classic and KIP-848 consumer groups with commits,
offsets by time, config and group description, deletions. Bounded: every step has a timeout and
the whole run takes about a minute.
"""

import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

BOOT = sys.argv[1]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def kcat(*args, data=None):
    try:
        subprocess.run(["kcat", "-b", BOOT, *args], input=data, timeout=20, capture_output=True)
    except subprocess.TimeoutExpired:
        pass


def main():
    admin = AdminClient({"bootstrap.servers": BOOT})
    topics = [NewTopic("seed-a", 2, 1, config={"segment.bytes": "16384"}),
              NewTopic("seed-c", 1, 1, config={"cleanup.policy": "compact", "segment.bytes": "16384"})]
    for f in admin.create_topics(topics).values():
        try:
            f.result(15)
        except Exception as e:  # already there on a rerun
            print("create:", e)
    for codec in CODECS:
        p = Producer({"bootstrap.servers": BOOT, "compression.type": codec, "linger.ms": 5,
                      "enable.idempotence": False, "acks": "all"})
        for i in range(300):
            p.produce("seed-a", key=f"k{i % 17}".encode(), value=(f"{codec}-{i}-" * (i % 9)).encode(),
                      headers=[("h", b"v")] if i % 5 == 0 else None, partition=i % 2)
            p.produce("seed-c", key=f"key{i % 13}".encode(), value=None if i % 11 == 0 else f"v{i}".encode())
        p.flush(20)
    # kafka-python: its own producer, admin and group consumer code paths.
    try:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
        kp = KafkaProducer(bootstrap_servers=BOOT, acks="all", linger_ms=5)
        for i in range(50):
            kp.send("seed-a", key=b"kp", value=b"kafka-python %d" % i)
        kp.flush(20)
        kp.close()
        kc = KafkaConsumer("seed-a", bootstrap_servers=BOOT, group_id="seed-kp", auto_offset_reset="earliest",
                           consumer_timeout_ms=6000)
        for _ in kc:
            pass
        kc.commit()
        kc.close()
        ka = KafkaAdminClient(bootstrap_servers=BOOT)
        ka.list_groups()
        ka.describe_groups(["seed-kp"])
        ka.list_group_offsets("seed-kp")
        ka.list_topics()
        ka.describe_configs([__import__("kafka.admin", fromlist=["ConfigResource"]).ConfigResource("TOPIC", "seed-a")])
        ka.close()
    except Exception as e:
        print("kafka-python:", e)
    # confluent-kafka: classic and KIP-848 groups with commits, offsets by time.
    for proto in ["classic", "consumer"]:
        conf = {"bootstrap.servers": BOOT, "group.id": f"seed-{proto}", "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "group.protocol": proto}
        if proto == "classic":
            conf["session.timeout.ms"] = 6000
        c = Consumer(conf)
        c.subscribe(["seed-a", "seed-c"])
        deadline = time.time() + 15
        n = 0
        while time.time() < deadline and n < 500:
            m = c.poll(0.5)
            if m is not None and not m.error():
                n += 1
                if n % 100 == 0:
                    c.commit(m, asynchronous=False)
        try:
            c.commit(asynchronous=False)
        except Exception as e:  # nothing new to commit
            print("commit:", e)
        c.offsets_for_times([TopicPartition("seed-a", 0, int(time.time() * 1000) - 60000)], 10)
        c.committed([TopicPartition("seed-a", 0), TopicPartition("seed-a", 1)], 10)
        c.close()
    for f in admin.describe_configs([ConfigResource(ResourceType.TOPIC, "seed-a")]).values():
        f.result(10)
    admin.list_consumer_groups().result(10)
    try:
        admin.describe_consumer_groups(["seed-classic", "seed-consumer"])["seed-classic"].result(10)
    except Exception as e:
        print("describe groups:", e)
    # kcat: metadata, produce in each codec, consume, a balanced consumer group, query by time.
    kcat("-L")
    kcat("-L", "-J")
    for codec in CODECS:
        kcat("-P", "-t", "seed-k", "-z", codec, "-K:", data=b"".join(b"k%d:kcat %s %d\n" % (i, codec.encode(), i) for i in range(40)))
    kcat("-C", "-t", "seed-k", "-e", "-o", "beginning")
    kcat("-C", "-t", "seed-k", "-e", "-o", "s@0")
    kcat("-G", "seed-kcat", "seed-k", "-e", "-o", "beginning")
    kcat("-Q", "-t", f"seed-k:0:{int(time.time() * 1000) - 60000}")
    # Deletions last.
    try:
        admin.delete_consumer_groups(["seed-kp"])["seed-kp"].result(10)
    except Exception as e:
        print("delete group:", e)
    admin.delete_topics(["seed-k"])["seed-k"].result(15)


if __name__ == "__main__":
    main()
