package spate.it;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Supplier;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Reading what Kafka's VerifiableProducer and VerifiableConsumer print (one JSON event per line)
 * and holding it against the topic as read back,
 * for the tests that run them as child JVMs ({@link VerifiableKillTest},
 * {@link ReplicatedRollingRestartTest}).
 */
final class VerifiableEvents {
    private static final ObjectMapper JSON = new ObjectMapper();

    private VerifiableEvents() {}

    /** The producer's account: acknowledged values (value -> [partition, offset]) and failed ones (value -> why). */
    record Account(Map<String, long[]> acked, Map<String, String> failed) {}

    /** The producer's account from its stdout lines; a value acknowledged twice fails the test. */
    static Account producerAccount(List<String> lines) {
        Map<String, long[]> acked = new HashMap<>();
        Map<String, String> failed = new TreeMap<>();
        for (JsonNode e : events(lines)) {
            String name = e.path("name").asText();
            if (name.equals("producer_send_success")) {
                long[] prev = acked.put(e.get("value").asText(), new long[] {e.get("partition").asLong(), e.get("offset").asLong()});
                assertTrue(prev == null, "value " + e.get("value") + " acknowledged twice");
            } else if (name.equals("producer_send_error")) {
                failed.put(e.get("value").asText(), e.path("exception").asText() + ": " + e.path("message").asText());
            }
        }
        return new Account(acked, failed);
    }

    /**
     * The topic as read back ({@link #readTopic}), held against the producer's account:
     * acknowledged values missing, in it more than once, or elsewhere than acknowledged; any value
     * in it more than once; values in it the producer was never answered for (neither acknowledged
     * nor failed); how many of its records were not acknowledged, and how many it holds.
     */
    record LogCheck(List<String> lost, List<String> twice, List<String> misplaced, List<String> anyTwice,
            List<String> unanswered, int unacked, int records) {}

    static LogCheck checkLog(Account account, Map<String, List<long[]>> inLog) {
        Map<String, long[]> acked = account.acked();
        List<String> lost = new ArrayList<>();
        List<String> twice = new ArrayList<>();
        List<String> misplaced = new ArrayList<>();
        for (Map.Entry<String, long[]> e : acked.entrySet()) {
            List<long[]> at = inLog.get(e.getKey());
            if (at == null) {
                lost.add(e.getKey());
            } else if (at.size() > 1) {
                twice.add(e.getKey() + "@" + where(at));
            } else if (at.get(0)[0] != e.getValue()[0] || at.get(0)[1] != e.getValue()[1]) {
                misplaced.add(e.getKey() + " acked at " + where(List.of(e.getValue())) + ", in log at " + where(at));
            }
        }
        List<String> anyTwice = new ArrayList<>();
        List<String> unanswered = new ArrayList<>();
        int unacked = 0;
        for (Map.Entry<String, List<long[]>> e : inLog.entrySet()) {
            if (e.getValue().size() > 1) {
                anyTwice.add(e.getKey() + "@" + where(e.getValue()));
            }
            if (!acked.containsKey(e.getKey())) {
                unacked++;
                if (!account.failed().containsKey(e.getKey())) {
                    unanswered.add(e.getKey() + "@" + where(e.getValue()));
                }
            }
        }
        int records = inLog.values().stream().mapToInt(List::size).sum();
        return new LogCheck(lost, twice, misplaced, anyTwice, unanswered, unacked, records);
    }

    /**
     * The VerifiableConsumer's account, in the order it printed it, held against the log:
     * partition -> its highest successful commit, the values it got, records it got twice, those
     * of them below a commit it had made, records not in the log where it read them, failed
     * commits, how many records it got, its partitions_assigned events, and the acknowledged
     * values it never got.
     */
    record ConsumerCheck(Map<Integer, Long> committed, Set<String> consumedValues, List<String> duplicates,
            List<String> belowCommit, List<String> wrongData, List<String> failedCommits, int records, int assignments,
            List<String> notConsumed) {}

    static ConsumerCheck checkConsumer(List<String> lines, Map<String, List<long[]>> inLog, Set<String> acked) {
        Map<Integer, Long> committed = new TreeMap<>();
        Map<Integer, Set<Long>> seen = new HashMap<>();
        Set<String> consumedValues = new HashSet<>();
        List<String> duplicates = new ArrayList<>();
        List<String> belowCommit = new ArrayList<>();
        List<String> wrongData = new ArrayList<>();
        List<String> failedCommits = new ArrayList<>();
        int records = 0;
        int assignments = 0;
        for (JsonNode e : events(lines)) {
            switch (e.path("name").asText()) {
                case "record_data" -> {
                    records++;
                    int p = e.get("partition").asInt();
                    long o = e.get("offset").asLong();
                    String v = e.get("value").asText();
                    consumedValues.add(v);
                    List<long[]> at = inLog.get(v);
                    if (at == null || at.stream().noneMatch(x -> x[0] == p && x[1] == o)) {
                        wrongData.add(v + " consumed at p" + p + "/" + o + ", in log at " + (at == null ? "nowhere" : where(at)));
                    }
                    if (!seen.computeIfAbsent(p, x -> new HashSet<>()).add(o)) {
                        duplicates.add("p" + p + "/" + o);
                        long c = committed.getOrDefault(p, 0L);
                        if (o < c) {
                            belowCommit.add("p" + p + "/" + o + " again after offset " + c + " was committed");
                        }
                    }
                }
                case "offsets_committed" -> {
                    if (e.path("success").asBoolean()) {
                        for (JsonNode c : e.path("offsets")) {
                            committed.merge(c.get("partition").asInt(), c.get("offset").asLong(), Math::max);
                        }
                    } else {
                        failedCommits.add(e.path("error").asText());
                    }
                }
                case "partitions_assigned" -> assignments++;
                default -> { }
            }
        }
        List<String> notConsumed = new ArrayList<>();
        for (String v : acked) {
            if (!consumedValues.contains(v)) {
                notConsumed.add(v);
            }
        }
        return new ConsumerCheck(committed, consumedValues, duplicates, belowCommit, wrongData, failedCommits, records,
                assignments, notConsumed);
    }

    /** The values among the VerifiableConsumer's record_data events. */
    static Set<String> consumedValues(List<String> lines) {
        Set<String> got = new HashSet<>();
        for (JsonNode e : events(lines)) {
            if (e.path("name").asText().equals("record_data")) {
                got.add(e.get("value").asText());
            }
        }
        return got;
    }

    static boolean consumedAll(List<String> lines, Set<String> values) {
        return consumedValues(lines).containsAll(values);
    }

    static List<TopicPartition> partitions(String topic, int count) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < count; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        return tps;
    }

    /**
     * Every record of the topic's {@code count} partitions, read by a consumer with {@code props}
     * (no group): value -> [partition, offset] of each record holding it. Fails, with
     * {@code context}, if it cannot read to the end offsets within {@link Clients#TIMEOUT_S}.
     */
    static Map<String, List<long[]>> readTopic(Properties props, String topic, int count, Supplier<String> context) {
        Map<String, List<long[]>> out = new HashMap<>();
        List<TopicPartition> tps = partitions(topic, count);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps);
            long deadline = System.currentTimeMillis() + Clients.TIMEOUT_S * 1000;
            while (tps.stream().anyMatch(tp -> c.position(tp) < ends.get(tp))) {
                if (System.currentTimeMillis() > deadline) {
                    fail("could not read the topic to its end offsets " + ends + "\n" + context.get());
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    out.computeIfAbsent(r.value(), v -> new ArrayList<>()).add(new long[] {r.partition(), r.offset()});
                }
            }
        }
        return out;
    }

    static Map<TopicPartition, Long> endOffsets(Properties props, String topic, int count) {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props)) {
            return c.endOffsets(partitions(topic, count));
        }
    }

    /** The JSON objects among a tool's stdout lines (it may print other lines too). */
    static List<JsonNode> events(List<String> lines) {
        List<JsonNode> out = new ArrayList<>();
        for (String l : lines) {
            if (l.startsWith("{")) {
                try {
                    out.add(JSON.readTree(l));
                } catch (Exception e) {
                    throw new AssertionError("not JSON: " + l, e);
                }
            }
        }
        return out;
    }

    /** How many lines are events named {@code event}. */
    static long count(List<String> lines, String event) {
        String needle = "\"name\":\"" + event + "\"";
        return lines.stream().filter(l -> l.contains(needle)).count();
    }

    /** The size of an event line's {@code partitions} array (-1 if the line is not JSON). */
    static int countPartitions(String line) {
        try {
            return JSON.readTree(line).path("partitions").size();
        } catch (Exception e) {
            return -1;
        }
    }

    /** Records' places as {@code p<partition>/<offset>,...}. */
    static String where(List<long[]> at) {
        List<String> s = new ArrayList<>();
        for (long[] x : at) {
            s.add("p" + x[0] + "/" + x[1]);
        }
        return String.join(",", s);
    }

    /** A list, or its first 20 elements and "...". */
    static String first(List<?> l) {
        return l.size() <= 20 ? l.toString() : l.subList(0, 20) + "...";
    }
}
