package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.VerifiableEvents.count;
import static spate.it.VerifiableEvents.consumedAll;
import static spate.it.VerifiableEvents.countPartitions;
import static spate.it.VerifiableEvents.events;
import static spate.it.VerifiableEvents.first;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Kafka's own system-test tools, {@code org.apache.kafka.tools.VerifiableProducer} and
 * {@code VerifiableConsumer} (kafka-tools), each a child JVM printing one JSON event per line,
 * while Spate is killed with SIGKILL twice and restarted on the same port and data directory.
 *
 * <p>The producer is made idempotent with unbounded retries (the tool itself sets retries=0,
 * which also turns idempotence off; its --producer.config file overrides that), acks=-1, at a
 * fixed throughput so that the run lasts about 15 s and both kills fall in the middle of it. The
 * consumer is in a group, commits synchronously after every poll (the tool's default) and
 * prints every record it gets (--verbose).
 */
class VerifiableKillTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static final int PARTITIONS = 3;
    private static final int MESSAGES = 3000;
    private static final int THROUGHPUT = 200; // records/s: 15 s of producing
    private static final int KILLS = 2;
    private static final long PRODUCER_EXIT_TIMEOUT_MS = 60_000;
    private static final long CONSUMER_CATCH_UP_TIMEOUT_MS = 45_000;


    /**
     * Proves, across two kill -9s of the broker in the middle of a produce/consume run:
     * (a) every value the producer reported acknowledged (producer_send_success) is in the topic
     * exactly once, at the partition and offset the acknowledgement gave, and no value at all is
     * in it twice (idempotence across crashes: a retried batch is recognised, not appended again);
     * (b) the group's consumer got every acknowledged value;
     * (c) whatever it got twice lies at or after the offset it had last committed successfully
     * for that partition (a commit the broker acknowledged is never lost: a redelivery from
     * below it would mean the broker forgot or rewound a committed offset), and once it has left,
     * the group's offsets on the broker (OffsetFetch) are at least its last successful commits.
     * Every record it got is in the log at the partition and offset it was read from.
     */
    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void acknowledgedRecordsAndCommittedOffsetsSurviveKill9(String groupProtocol, @TempDir Path tmp) throws Exception {
        String topic = "verifiable-" + groupProtocol;
        String group = "verifiable-group-" + groupProtocol;
        Clients.createTopic(broker, topic, PARTITIONS, Map.of());

        Path producerConfig = tmp.resolve("producer.properties");
        Files.writeString(producerConfig, String.join("\n",
                "enable.idempotence=true",
                "retries=2147483647",
                "delivery.timeout.ms=120000",
                "request.timeout.ms=10000",
                "reconnect.backoff.max.ms=500",
                ""));
        Path consumerConfig = tmp.resolve("consumer.properties");
        Files.writeString(consumerConfig, String.join("\n",
                "request.timeout.ms=10000",
                "reconnect.backoff.max.ms=500",
                ""));

        List<String> consumerArgs = new ArrayList<>(List.of(
                "--bootstrap-server", broker.bootstrap(), "--topic", topic, "--group-id", group,
                "--group-protocol", groupProtocol, "--verbose", "--reset-policy", "earliest",
                "--consumer.config", consumerConfig.toString()));
        try (ChildJvm consumer = ChildJvm.start("VerifiableConsumer-" + groupProtocol, List.of(),
                "org.apache.kafka.tools.VerifiableConsumer", consumerArgs)) {
            if (!consumer.awaitLine(l -> l.contains("\"partitions_assigned\"") && countPartitions(l) == PARTITIONS, 30_000)) {
                fail("the VerifiableConsumer never got all " + PARTITIONS + " partitions; its output: "
                        + consumer.lines() + "\n" + consumer.logs() + "\nstderr:\n" + consumer.stderrTail(30)
                        + "\nbroker log:\n" + broker.logTail(30));
            }

            List<String> kills = new ArrayList<>();
            try (ChildJvm producer = ChildJvm.start("VerifiableProducer-" + groupProtocol, List.of(),
                    "org.apache.kafka.tools.VerifiableProducer", List.of(
                            "--bootstrap-server", broker.bootstrap(), "--topic", topic,
                            "--max-messages", Integer.toString(MESSAGES), "--throughput", Integer.toString(THROUGHPUT),
                            "--acks", "-1", "--producer.config", producerConfig.toString()))) {
                for (int k = 1; k <= KILLS; k++) {
                    int ackedBefore = MESSAGES * k / (KILLS + 1);
                    long deadline = System.currentTimeMillis() + 60_000;
                    while (count(producer.lines(), "producer_send_success") < ackedBefore) {
                        if (System.currentTimeMillis() > deadline || !producer.isAlive()) {
                            fail("the producer did not reach " + ackedBefore + " acknowledged records before kill " + k
                                    + " (" + count(producer.lines(), "producer_send_success") + ", alive "
                                    + producer.isAlive() + "); " + producer.logs() + "\nstderr:\n" + producer.stderrTail(30)
                                    + "\nbroker log:\n" + broker.logTail(30));
                        }
                        Thread.sleep(20);
                    }
                    long pid = broker.pid();
                    long t0 = System.nanoTime();
                    broker.kill();
                    long ackedAtKill = count(producer.lines(), "producer_send_success");
                    Thread.sleep(500); // some sends and commits fail, are retried, or wait
                    broker.restart();
                    kills.add("kill " + k + " of pid " + pid + " at " + ackedAtKill + " acks, down "
                            + (System.nanoTime() - t0) / 1_000_000 + " ms until ready again");
                }
                if (!producer.waitFor(PRODUCER_EXIT_TIMEOUT_MS)) {
                    fail("the VerifiableProducer did not finish within " + PRODUCER_EXIT_TIMEOUT_MS + " ms after the kills ("
                            + count(producer.lines(), "producer_send_success") + " acks so far); " + producer.logs()
                            + "\nstderr:\n" + producer.stderrTail(30) + "\nbroker log:\n" + broker.logTail(30));
                }
                assertEquals(0, producer.exitValue(), "VerifiableProducer's exit status; " + producer.logs()
                        + "\nstderr:\n" + producer.stderrTail(30));

                // The producer's account: acknowledged (value -> partition/offset) and failed values.
                VerifiableEvents.Account account = VerifiableEvents.producerAccount(producer.lines());
                Map<String, long[]> acked = account.acked();
                Map<String, String> failed = account.failed();

                // (a) The whole topic, read back by a fresh consumer (no group).
                Map<String, List<long[]>> inLog = readTopic(topic);
                VerifiableEvents.LogCheck log = VerifiableEvents.checkLog(account, inLog);
                List<String> lost = log.lost();
                List<String> twice = log.twice();
                List<String> misplaced = log.misplaced();
                List<String> anyTwice = log.anyTwice();
                int unacked = log.unacked();
                int logRecords = log.records();

                // (b), (c) The consumer's account, in the order it printed it.
                long catchUp = System.currentTimeMillis() + CONSUMER_CATCH_UP_TIMEOUT_MS;
                while (!consumedAll(consumer.lines(), acked.keySet()) && System.currentTimeMillis() < catchUp
                        && consumer.isAlive()) {
                    Thread.sleep(500); // what is still missing then is reported below
                }
                long stopStart = System.nanoTime();
                consumer.terminate();
                boolean consumerExited = consumer.waitFor(30_000);
                String consumerExit = consumerExited
                        ? "exit status " + consumer.exitValue() + " " + (System.nanoTime() - stopStart) / 1_000_000 + " ms after SIGTERM"
                        : "still running 30 s after SIGTERM";
                VerifiableEvents.ConsumerCheck got = VerifiableEvents.checkConsumer(consumer.lines(), inLog, acked.keySet());
                Map<Integer, Long> committed = got.committed(); // partition -> highest successful commit
                Set<String> consumedValues = got.consumedValues();
                List<String> duplicates = got.duplicates();
                List<String> belowCommit = got.belowCommit();
                List<String> wrongData = got.wrongData();
                List<String> failedCommits = got.failedCommits();
                int consumedRecords = got.records();
                int rebalances = got.assignments();
                List<String> notConsumed = got.notConsumed();

                String summary = String.format("VerifiableKillTest[%s]: %s; sent %d, acked %d, send errors %d, records in log %d "
                                + "(%d not acked), consumed %d records (%d distinct values), duplicates %d, "
                                + "commits failed %d, partitions_assigned events %d",
                        groupProtocol, kills, MESSAGES, acked.size(), failed.size(), logRecords, unacked, consumedRecords,
                        consumedValues.size(), duplicates.size(), failedCommits.size(), rebalances);
                System.out.println(summary);
                String context = "\n" + summary + "\n" + producer.logs() + "\n" + consumer.logs()
                        + "\nbroker log:\n" + broker.logTail(40);

                assertTrue(lost.isEmpty(), "acknowledged values missing from the topic (" + lost.size() + "): "
                        + first(lost) + context);
                assertTrue(twice.isEmpty(), "acknowledged values in the topic more than once (" + twice.size() + "): "
                        + first(twice) + context);
                assertTrue(misplaced.isEmpty(), "acknowledged values elsewhere than acknowledged (" + misplaced.size() + "): "
                        + first(misplaced) + context);
                assertTrue(anyTwice.isEmpty(), "values in the topic more than once (" + anyTwice.size() + "): "
                        + first(anyTwice) + "; send errors " + first(new ArrayList<>(failed.entrySet())) + context);
                assertTrue(wrongData.isEmpty(), "records consumed that are not in the log there (" + wrongData.size() + "): "
                        + first(wrongData) + context);
                assertTrue(notConsumed.isEmpty(), "acknowledged values the group's consumer never got (" + notConsumed.size()
                        + "): " + first(notConsumed) + context);
                assertTrue(belowCommit.isEmpty(), "records redelivered from below a successfully committed offset ("
                        + belowCommit.size() + "): " + first(belowCommit) + context);
                assertTrue(consumerExited, "the VerifiableConsumer did not exit within 30 s of SIGTERM" + context);
                // The group (classic, or KIP-848 since its records are kept too) is read back
                // from __consumer_offsets after each kill: its member goes on without a rebalance.
                assertEquals(1, rebalances, "partitions_assigned events: the kills caused a rebalance" + context);

                // The group's offsets on the broker, once its member is gone: at least the last
                // commit the consumer saw succeed for each partition (a commit answered with
                // success may not be lost or rewound by the kills), at most the log end.
                Map<TopicPartition, Long> ends = endOffsets(topic);
                Map<TopicPartition, OffsetAndMetadata> stored;
                try (Admin admin = Clients.admin(broker)) {
                    stored = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()
                            .get(Clients.TIMEOUT_S, TimeUnit.SECONDS);
                }
                for (Map.Entry<Integer, Long> e : committed.entrySet()) {
                    TopicPartition tp = new TopicPartition(topic, e.getKey());
                    OffsetAndMetadata om = stored.get(tp);
                    assertTrue(om != null && om.offset() >= e.getValue() && om.offset() <= ends.get(tp),
                            "committed offset of " + tp + " on the broker: " + om + "; the consumer last committed "
                                    + e.getValue() + " successfully; log end " + ends.get(tp) + context);
                }
                assertTrue(consumer.lines().stream().anyMatch(l -> l.contains("\"shutdown_complete\"")),
                        "the VerifiableConsumer ended without shutdown_complete (" + consumerExit + "); stderr:\n" + consumer.stderrTail(30) + context);
            }
        }
    }

    /** Every record of the topic: value -> [partition, offset] of each record holding it. */
    private static Map<String, List<long[]>> readTopic(String topic) {
        return VerifiableEvents.readTopic(Clients.consumer(broker, true), topic, PARTITIONS, () -> "broker log:\n" + broker.logTail(30));
    }

    private static Map<TopicPartition, Long> endOffsets(String topic) {
        return VerifiableEvents.endOffsets(Clients.consumer(broker, true), topic, PARTITIONS);
    }

}
