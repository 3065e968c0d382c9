package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Transaction versions 1 and 2 (KIP-890 part 2) side by side: the Java client 4.x reads the
 * {@code transaction.version} feature from ApiVersions. At version 2 (Spate's default, as
 * Kafka 4.x's) the client sends no AddPartitionsToTxn or AddOffsetsToTxn (the partition leader
 * and the group coordinator add them) and every EndTxn bumps the producer epoch; at version 1
 * (`--transaction-version 1`) it adds partitions itself and keeps its epoch. Both commit and
 * abort the same transactions with the same result.
 */
class TransactionVersionTest {
    @RegisterExtension
    static final SpateBroker v2 = new SpateBroker();

    @RegisterExtension
    static final SpateBroker v1 = new SpateBroker("--transaction-version", "1");

    private static final int PARTITIONS = 3;
    private static final int TRANSACTIONS = 6;

    /** What one run of {@link #run} saw. */
    private record Run(short finalEpoch, double addPartitionsRequests, double addOffsetsRequests, double endTxnRequests) {}

    /**
     * Six transactions of one producer across 3 partitions, each with a group's offsets sent
     * along; the odd ones aborted. Checks that read_committed sees exactly the committed
     * records in order and that the group's committed offset is the last committed
     * transaction's; returns the producer's epoch at the end and the request counts.
     */
    private static Run run(SpateBroker broker, String topic) throws Exception {
        Clients.createTopic(broker, topic, PARTITIONS, Map.of());
        Clients.createTopic(broker, topic + "-input", 1, Map.of());
        String group = topic + "-group";
        String id = topic + "-tx";
        TopicPartition offsetsOf = new TopicPartition(topic + "-input", 0);
        List<List<String>> committed = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            committed.add(new ArrayList<>());
        }
        Properties pp = Clients.producer(broker, true);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
        long lastCommittedOffset = -1;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            producer.initTransactions();
            for (int t = 0; t < TRANSACTIONS; t++) {
                boolean commit = t % 2 == 0;
                producer.beginTransaction();
                List<List<String>> sent = new ArrayList<>();
                for (int p = 0; p < PARTITIONS; p++) {
                    sent.add(new ArrayList<>());
                    for (int i = 0; i < 3; i++) {
                        String v = "t" + t + "-p" + p + "-" + i;
                        producer.send(new ProducerRecord<>(topic, p, "k", v));
                        sent.get(p).add(v);
                    }
                }
                producer.sendOffsetsToTransaction(Map.of(offsetsOf, new OffsetAndMetadata(100L * (t + 1))),
                        new ConsumerGroupMetadata(group));
                if (commit) {
                    producer.commitTransaction();
                    for (int p = 0; p < PARTITIONS; p++) {
                        committed.get(p).addAll(sent.get(p));
                    }
                    lastCommittedOffset = 100L * (t + 1);
                } else {
                    producer.abortTransaction();
                }
            }
        }
        String log = "broker log " + broker.logFile() + ":\n" + broker.logTail(40);
        try (Admin admin = Clients.admin(broker)) {
            // The markers follow the answer to EndTxn: wait for the last one to complete.
            long deadline = System.currentTimeMillis() + 30_000;
            TransactionDescription d;
            while ((d = admin.describeTransactions(List.of(id)).description(id).get(TIMEOUT_S, TimeUnit.SECONDS))
                    .state() != TransactionState.COMPLETE_ABORT) {
                if (System.currentTimeMillis() > deadline) {
                    fail("the last transaction of " + id + " is " + d.state() + " 30 s after its abort\n" + log);
                }
                Thread.sleep(100);
            }
            long offset = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS)
                    .get(offsetsOf).offset();
            assertEquals(lastCommittedOffset, offset, "the group's offset is the last committed transaction's\n" + log);
            Properties rc = Clients.consumer(broker, true);
            rc.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
            List<List<ConsumerRecord<String, String>>> read = Clients.readAll(rc, topic, PARTITIONS, () -> log);
            for (int p = 0; p < PARTITIONS; p++) {
                assertEquals(committed.get(p), read.get(p).stream().map(ConsumerRecord::value).toList(),
                        "read_committed, partition " + p + "\n" + log);
            }
            String m = broker.metrics();
            return new Run((short) d.producerEpoch(),
                    SpateBroker.metricSum(m, "spate_requests_total", "api=\"AddPartitionsToTxn\""),
                    SpateBroker.metricSum(m, "spate_requests_total", "api=\"AddOffsetsToTxn\""),
                    SpateBroker.metricSum(m, "spate_requests_total", "api=\"EndTxn\""));
        }
    }

    @Test
    void version2BumpsTheEpochPerTransactionAndTheBrokersAddThePartitions() throws Exception {
        Run r = run(v2, "tv2");
        assertEquals((short) TRANSACTIONS, r.finalEpoch(), "the producer epoch after " + TRANSACTIONS
                + " transactions of version 2 (one bump per EndTxn, from 0)");
        assertEquals(0.0, r.addPartitionsRequests(), "AddPartitionsToTxn requests from a client of version 2");
        assertEquals(0.0, r.addOffsetsRequests(), "AddOffsetsToTxn requests from a client of version 2");
        assertEquals((double) TRANSACTIONS, r.endTxnRequests(), "EndTxn requests");
    }

    @Test
    void version1KeepsTheEpochAndTheClientAddsThePartitions() throws Exception {
        Run r = run(v1, "tv1");
        assertEquals((short) 0, r.finalEpoch(), "the producer epoch after " + TRANSACTIONS + " transactions of version 1");
        assertTrue(r.addPartitionsRequests() >= TRANSACTIONS, "AddPartitionsToTxn requests: " + r.addPartitionsRequests());
        assertEquals((double) TRANSACTIONS, r.addOffsetsRequests(), "AddOffsetsToTxn requests");
        assertEquals((double) TRANSACTIONS, r.endTxnRequests(), "EndTxn requests");
    }
    /**
     * Version 2 under pipelining: small batches (linger.ms 0, batch.size 256) pipelined five at a
     * time into one partition, across many short transactions. Each transaction's first batch
     * waits while its leader adds the partition, and the batches behind it must not pass it
     * (they did once: OUT_OF_ORDER_SEQUENCE_NUMBER, found by kafka-producer-perf-test).
     */
    @Test
    void version2KeepsPipelinedBatchesInOrder() throws Exception {
        String topic = "tv2-pipelined";
        Clients.createTopic(v2, topic, 1, Map.of());
        Properties pp = Clients.producer(v2, true);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, topic + "-tx");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 0);
        pp.put(ProducerConfig.BATCH_SIZE_CONFIG, 256);
        pp.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, 5);
        List<String> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            producer.initTransactions();
            for (int t = 0; t < 40; t++) {
                producer.beginTransaction();
                for (int i = 0; i < 40; i++) {
                    String v = "t" + t + "-" + i + "-" + "x".repeat(100);
                    producer.send(new ProducerRecord<>(topic, 0, "k", v));
                    sent.add(v);
                }
                producer.commitTransaction();
            }
        }
        Properties rc = Clients.consumer(v2, true);
        rc.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        String log = "broker log " + v2.logFile() + ":\n" + v2.logTail(40);
        List<List<ConsumerRecord<String, String>>> read = Clients.readAll(rc, topic, 1, () -> log);
        assertEquals(sent, read.get(0).stream().map(ConsumerRecord::value).toList(), "read_committed\n" + log);
    }
}
