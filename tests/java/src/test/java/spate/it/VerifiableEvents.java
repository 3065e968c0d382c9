package spate.it;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Reading what Kafka's VerifiableProducer and VerifiableConsumer print (one JSON event per line),
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
