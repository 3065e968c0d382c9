package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Kafka Connect standalone ({@code org.apache.kafka.connect.cli.ConnectStandalone},
 * connect-runtime 4.1.1) as a child JVM, with the file connectors of connect-file: a
 * FileStreamSourceConnector copies the lines of a file to a topic on Spate, a
 * FileStreamSinkConnector (a consumer group) copies the topic to another file.
 */
class ConnectFileTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static final long STARTUP_TIMEOUT_MS = 60_000;
    private static final long COPY_TIMEOUT_MS = 60_000;
    private static final long STOP_TIMEOUT_MS = 30_000;
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * Lines written to the source file, half before the worker starts and half appended while it
     * runs, arrive in the sink file exactly, in order, once each; both connectors and their tasks
     * are RUNNING by the worker's REST API; SIGTERM stops the worker within 30 s (its shutdown
     * hook: "Kafka Connect stopped").
     */
    @Test
    void fileSourceToTopicToFileSink(@TempDir Path tmp) throws Exception {
        String topic = "connect-lines";
        Clients.createTopic(broker, topic, 1, Map.of());
        Path input = tmp.resolve("input.txt");
        Path output = tmp.resolve("output.txt");
        int n = 200;
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            lines.add("line " + i + " " + "of the connect file test ".repeat(1 + i % 5).trim());
        }
        Files.write(input, lines.subList(0, n / 2), StandardCharsets.UTF_8);

        int restPort = freePort();
        Path worker = tmp.resolve("worker.properties");
        Files.writeString(worker, String.join("\n",
                "bootstrap.servers=" + broker.bootstrap(),
                "key.converter=org.apache.kafka.connect.storage.StringConverter",
                "value.converter=org.apache.kafka.connect.storage.StringConverter",
                "offset.storage.file.filename=" + tmp.resolve("connect.offsets"),
                "offset.flush.interval.ms=500",
                "listeners=http://127.0.0.1:" + restPort,
                "consumer.session.timeout.ms=10000",
                // No plugin.path: the connectors are on the classpath, found by their ServiceLoader manifests.
                "plugin.discovery=service_load",
                ""));
        Path source = tmp.resolve("source.properties");
        Files.writeString(source, String.join("\n",
                "name=file-source",
                "connector.class=org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max=1",
                "file=" + input,
                "topic=" + topic,
                ""));
        Path sink = tmp.resolve("sink.properties");
        Files.writeString(sink, String.join("\n",
                "name=file-sink",
                "connector.class=org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max=1",
                "file=" + output,
                "topics=" + topic,
                ""));

        try (ChildJvm connect = ChildJvm.start("ConnectStandalone",
                List.of("-Dorg.slf4j.simpleLogger.defaultLogLevel=info"),
                "org.apache.kafka.connect.cli.ConnectStandalone",
                List.of(worker.toString(), source.toString(), sink.toString()))) {
            HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
            String context = "\n" + connect.logs();

            // Both connectors and their tasks RUNNING.
            long deadline = System.currentTimeMillis() + STARTUP_TIMEOUT_MS;
            String status = "";
            while (!(running(status = status(http, restPort, "file-source")) && running(status(http, restPort, "file-sink")))) {
                if (System.currentTimeMillis() > deadline || !connect.isAlive()) {
                    fail("the connectors are not RUNNING after " + STARTUP_TIMEOUT_MS + " ms (worker alive "
                            + connect.isAlive() + "): file-source " + status + ", file-sink "
                            + status(http, restPort, "file-sink") + context + "\nworker stderr:\n"
                            + connect.stderrTail(40) + "\nbroker log:\n" + broker.logTail(30));
                }
                Thread.sleep(250);
            }

            // The first half arrives; then the second half is appended while the worker runs.
            awaitOutput(output, lines.subList(0, n / 2), connect);
            Files.write(input, lines.subList(n / 2, n), StandardCharsets.UTF_8, StandardOpenOption.APPEND);
            awaitOutput(output, lines, connect);

            // Nothing more arrives (no duplicates after another offset flush).
            Thread.sleep(1500);
            assertEquals(lines, Files.readAllLines(output, StandardCharsets.UTF_8), "the sink file later" + context);

            connect.terminate();
            if (!connect.waitFor(STOP_TIMEOUT_MS)) {
                fail("ConnectStandalone did not exit within " + STOP_TIMEOUT_MS + " ms of SIGTERM" + context
                        + "\nworker stderr:\n" + connect.stderrTail(40));
            }
            // A JVM ended by SIGTERM exits 143 once its shutdown hooks ran.
            assertTrue(connect.exitValue() == 143 || connect.exitValue() == 0,
                    "ConnectStandalone's exit status " + connect.exitValue() + context + "\n" + connect.stderrTail(40));
            String log = connect.stderrTail(200);
            assertTrue(log.contains("Kafka Connect stopped"), "no 'Kafka Connect stopped' in the worker's log" + context
                    + "\n" + connect.stderrTail(40));
        }
    }

    private static void awaitOutput(Path output, List<String> expected, ChildJvm connect) throws Exception {
        long deadline = System.currentTimeMillis() + COPY_TIMEOUT_MS;
        List<String> got = List.of();
        while (true) {
            if (Files.exists(output)) {
                got = Files.readAllLines(output, StandardCharsets.UTF_8);
                if (got.size() >= expected.size()) {
                    break;
                }
            }
            if (System.currentTimeMillis() > deadline || !connect.isAlive()) {
                fail("the sink file has " + got.size() + " of " + expected.size() + " lines after " + COPY_TIMEOUT_MS
                        + " ms (worker alive " + connect.isAlive() + ")\n" + connect.logs() + "\nworker stderr:\n"
                        + connect.stderrTail(40) + "\nbroker log:\n" + broker.logTail(30));
            }
            Thread.sleep(200);
        }
        assertEquals(expected, got, "the sink file: the source file's lines, in order, once each\n" + connect.logs());
    }

    /** GET /connectors/{name}/status, or the failure to get it. */
    private static String status(HttpClient http, int port, String connector) {
        try {
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(
                            URI.create("http://127.0.0.1:" + port + "/connectors/" + connector + "/status"))
                    .timeout(Duration.ofSeconds(5)).GET().build(), HttpResponse.BodyHandlers.ofString());
            return r.statusCode() + " " + r.body();
        } catch (IOException e) {
            return e.toString();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return e.toString();
        }
    }

    /** The connector and each of its tasks (at least one) RUNNING. */
    private static boolean running(String status) {
        if (!status.startsWith("200 ")) {
            return false;
        }
        try {
            JsonNode s = JSON.readTree(status.substring(4));
            if (!s.path("connector").path("state").asText().equals("RUNNING") || s.path("tasks").isEmpty()) {
                return false;
            }
            for (JsonNode t : s.path("tasks")) {
                if (!t.path("state").asText().equals("RUNNING")) {
                    return false;
                }
            }
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
