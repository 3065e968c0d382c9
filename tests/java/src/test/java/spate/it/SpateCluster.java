package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Three {@code spate serve} processes forming one cluster, for one test class: register it as a
 * static field with {@code @RegisterExtension}. Before the class it starts node 1, 2 and 3 with
 * the same {@code --controller-quorum-voters} (every port a free loopback one, every node its own
 * temp data directory, {@code --cores 1}), waits (60 s at most) for "spate ready" on each one's
 * stderr, then until every node's image lists the three brokers unfenced (a broker is fenced from
 * "ready" until its first heartbeat, and placement uses unfenced brokers only). After each test it
 * runs the metadata-consistency check ({@link #assertConsistent()}); after the class it stops the
 * three with SIGTERM, checks they exited 0, and deletes the data directories. Each node's stderr
 * stays in target/spate-logs/ for reading after a failure.
 *
 * <p>A class may give every node more {@code spate serve} flags ({@code new SpateCluster("--flag",
 * "value", ...)}, after the standard ones), and may {@link #restart(int)} one node as a rolling
 * restart does: SIGTERM, then the same command line again (same ports, same data directory).
 */
public final class SpateCluster implements BeforeAllCallback, AfterEachCallback, AfterAllCallback {
    static final int NODES = 3;
    private static final long READY_TIMEOUT_MS = 60_000;
    private static final long SETTLE_TIMEOUT_MS = 60_000;
    private static final long STOP_TIMEOUT_MS = 30_000;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(5)).build();
    private final Process[] processes = new Process[NODES];
    private final Path[] dataDirs = new Path[NODES];
    private final Path[] logFiles = new Path[NODES];
    private final int[] ports = new int[NODES];
    private final int[] adminPorts = new int[NODES];
    private final int[] controllerPorts = new int[NODES];
    private final List<List<String>> commands = new ArrayList<>();
    private final int[] restarts = new int[NODES];
    private final List<String> extraArgs;

    /** @param extraArgs more {@code spate serve} flags for every node, after the standard ones */
    public SpateCluster(String... extraArgs) {
        this.extraArgs = List.of(extraArgs);
    }

    /** The three Kafka listeners, as one bootstrap list. */
    public String bootstrapAll() {
        List<String> all = new ArrayList<>();
        for (int id = 1; id <= NODES; id++) {
            all.add(bootstrap(id));
        }
        return String.join(",", all);
    }

    /** Node {@code id}'s process id (for a test's own records). */
    public long pid(int id) {
        return processes[id - 1].pid();
    }

    /** The Kafka listener of node {@code id} (1, 2 or 3), as a bootstrap list of one. */
    public String bootstrap(int id) {
        return "127.0.0.1:" + ports[id - 1];
    }

    /** The node id listening on {@code port}, or -1. */
    public int nodeOfPort(int port) {
        for (int i = 0; i < NODES; i++) {
            if (ports[i] == port) {
                return i + 1;
            }
        }
        return -1;
    }

    /** The last {@code n} lines of every node's stderr, for failure messages. */
    public String logTails(int n) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < NODES; i++) {
            sb.append("---- node ").append(i + 1).append(" (").append(logFiles[i]).append(")\n");
            try {
                List<String> lines = Files.readString(logFiles[i], StandardCharsets.UTF_8).lines().toList();
                sb.append(String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()))).append('\n');
            } catch (IOException e) {
                sb.append("(unreadable: ").append(e).append(")\n");
            }
        }
        return sb.toString();
    }

    /**
     * Every node's stderr lines that contain any of {@code words} (the last {@code n} per node),
     * for failure messages about one subsystem (a group: "group", "coordinat", "member").
     */
    public String logLinesWith(int n, String... words) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < NODES; i++) {
            sb.append("---- node ").append(i + 1).append(" (").append(logFiles[i]).append("), lines with ")
                    .append(String.join("|", words)).append("\n");
            try {
                List<String> lines = Files.readString(logFiles[i], StandardCharsets.UTF_8).lines()
                        .filter(l -> java.util.Arrays.stream(words).anyMatch(l::contains)).toList();
                sb.append(String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()))).append('\n');
            } catch (IOException e) {
                sb.append("(unreadable: ").append(e).append(")\n");
            }
        }
        return sb.toString();
    }

    /** {@code GET path} on node {@code id}'s admin listener, parsed as JSON. */
    public JsonNode admin(int id, String path) throws IOException, InterruptedException {
        HttpRequest get = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + adminPorts[id - 1] + path))
                .timeout(Duration.ofSeconds(10)).build();
        HttpResponse<String> r = http.send(get, HttpResponse.BodyHandlers.ofString());
        if (r.statusCode() != 200) {
            throw new IOException("GET " + path + " on node " + id + ": HTTP " + r.statusCode() + " " + r.body());
        }
        return JSON.readTree(r.body());
    }

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        String name = context.getRequiredTestClass().getSimpleName();
        // A free port can be taken by another process between the probe and the bind: then a
        // node exits with "Address already in use" and the whole cluster starts again on new ports.
        for (int attempt = 1; ; attempt++) {
            try {
                start(name, attempt);
                return;
            } catch (PortTaken e) {
                if (attempt == 3) {
                    throw new IllegalStateException("cluster did not start after 3 attempts", e);
                }
            }
        }
    }

    @Override
    public void afterEach(ExtensionContext context) throws Exception {
        if (processes[0] != null) {
            assertConsistent();
        }
    }

    @Override
    public void afterAll(ExtensionContext context) throws Exception {
        stop();
    }

    /** A node exited before "ready" because one of its ports was taken. */
    private static final class PortTaken extends Exception {
        PortTaken(String message) {
            super(message);
        }
    }

    private void start(String name, int attempt) throws Exception {
        Path bin = Paths.get(System.getProperty("spate.bin", "../../target/debug/spate")).toAbsolutePath().normalize();
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException("no spate binary at " + bin + " (set -Dspate.bin=...)");
        }
        Path logDir = Paths.get(System.getProperty("spate.logdir", "target/spate-logs")).toAbsolutePath();
        Files.createDirectories(logDir);
        String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss"));
        int[] free = freePorts(3 * NODES);
        List<String> voters = new ArrayList<>();
        for (int i = 0; i < NODES; i++) {
            controllerPorts[i] = free[i];
            ports[i] = free[NODES + i];
            adminPorts[i] = free[2 * NODES + i];
            voters.add((i + 1) + "@127.0.0.1:" + controllerPorts[i]);
        }
        commands.clear();
        for (int i = 0; i < NODES; i++) {
            dataDirs[i] = Files.createTempDirectory("spate-it-" + name + "-n" + (i + 1) + "-");
            logFiles[i] = logDir.resolve(name + "-" + stamp + (attempt > 1 ? "-attempt" + attempt : "")
                    + "-node" + (i + 1) + ".stderr.log");
            List<String> command = new ArrayList<>(List.of(
                    bin.toString(), "serve",
                    "--node-id", String.valueOf(i + 1),
                    "--controller-quorum-voters", String.join(",", voters),
                    "--listen", "127.0.0.1:" + ports[i],
                    "--admin-listen", "127.0.0.1:" + adminPorts[i],
                    "--data-dir", dataDirs[i].toString(),
                    "--cores", "1",
                    "--group-initial-rebalance-delay-ms", "0"));
            command.addAll(extraArgs);
            commands.add(command);
            launch(i, ProcessBuilder.Redirect.to(logFiles[i].toFile()));
        }
        try {
            // The quorum needs a majority, so all three start before any is waited for.
            long deadline = System.currentTimeMillis() + READY_TIMEOUT_MS;
            for (int i = 0; i < NODES; i++) {
                while (!Files.readString(logFiles[i], StandardCharsets.UTF_8).contains("spate ready")) {
                    if (!processes[i].isAlive()) {
                        String log = Files.readString(logFiles[i], StandardCharsets.UTF_8);
                        String msg = "node " + (i + 1) + " exited with status " + processes[i].exitValue()
                                + " before it was ready; " + String.join(" ", commands.get(i)) + "\n" + logTails(30);
                        if (log.contains("Address already in use")) {
                            throw new PortTaken(msg);
                        }
                        throw new IllegalStateException(msg);
                    }
                    if (System.currentTimeMillis() > deadline) {
                        throw new IllegalStateException("node " + (i + 1) + " not ready after " + READY_TIMEOUT_MS
                                + " ms; " + String.join(" ", commands.get(i)) + "\n" + logTails(30));
                    }
                    Thread.sleep(50);
                }
            }
            // Ready comes before the first heartbeat unfences a broker.
            awaitAllUnfenced();
        } catch (Exception | Error e) {
            killAll();
            cleanUp();
            throw e;
        }
    }

    /** Waits until every node's image lists the three brokers unfenced. */
    private void awaitAllUnfenced() throws Exception {
        waitFor("every node's image lists the three brokers unfenced", SETTLE_TIMEOUT_MS, () -> {
            for (int id = 1; id <= NODES; id++) {
                JsonNode brokers = admin(id, "/v1/metadata").path("installed").path("brokers");
                if (brokers.size() != NODES) {
                    return false;
                }
                for (JsonNode b : brokers) {
                    if (b.path("fenced").asBoolean(true)) {
                        return false;
                    }
                }
            }
            return true;
        });
    }

    /**
     * Starts node {@code i + 1} with its command line, stderr to {@code stderr} (its log file,
     * new or appended to) and stdout appended to the same file, killed at JVM exit if still alive.
     */
    private Process launch(int i, ProcessBuilder.Redirect stderr) throws IOException {
        Process p = new ProcessBuilder(commands.get(i))
                .redirectError(stderr)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(logFiles[i].toFile()))
                .start();
        processes[i] = p;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (p.isAlive()) {
                p.destroyForcibly();
            }
        }));
        return p;
    }

    /** How long each step of one {@link #restart(int)} took, in ms. */
    public record Restart(int node, long pid, long stopMs, long readyMs, long unfencedMs) {
        @Override
        public String toString() {
            return "node " + node + " (pid " + pid + "): exited " + stopMs + " ms after SIGTERM, ready again "
                    + readyMs + " ms later, unfenced on every node " + unfencedMs + " ms after that";
        }
    }

    /**
     * Restarts node {@code id} as a rolling restart does: SIGTERM (a controlled shutdown: the
     * broker is fenced first, so the partitions it leads move to another in-sync replica before it
     * stops), waits (30 s at most) until it exited and fails unless it exited 0, starts it again
     * with the same command line (the same ports, the same data directory; its stderr appended to
     * the same log after a {@code ==== SpateCluster: restart} line), waits for "spate ready" in
     * what it logged since, then until every node's image lists the three brokers unfenced.
     */
    public Restart restart(int id) throws Exception {
        int i = id - 1;
        Process old = processes[i];
        if (old == null || !old.isAlive()) {
            throw new IllegalStateException("node " + id + " is not running");
        }
        long pid = old.pid();
        long t0 = System.nanoTime();
        old.destroy(); // SIGTERM
        if (!old.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
            String tails = logTails(30);
            old.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            throw new AssertionError("node " + id + " did not exit within " + STOP_TIMEOUT_MS
                    + " ms of SIGTERM (killed)\n" + tails);
        }
        if (old.exitValue() != 0) {
            throw new AssertionError("node " + id + " exited with status " + old.exitValue() + " after SIGTERM\n"
                    + logTails(30));
        }
        long t1 = System.nanoTime();
        restarts[i]++;
        String banner = "\n==== SpateCluster: restart " + restarts[i] + " of node " + id + " after SIGTERM (exit status 0) at "
                + LocalDateTime.now() + " ====\n";
        Files.writeString(logFiles[i], banner, StandardCharsets.UTF_8, StandardOpenOption.APPEND);
        long offset = Files.size(logFiles[i]);
        Process p = launch(i, ProcessBuilder.Redirect.appendTo(logFiles[i].toFile()));
        long deadline = System.currentTimeMillis() + READY_TIMEOUT_MS;
        while (!logSince(i, offset).contains("spate ready")) {
            if (!p.isAlive()) {
                throw new AssertionError("node " + id + " exited with status " + p.exitValue()
                        + " before it was ready again; " + String.join(" ", commands.get(i)) + "\n" + logTails(30));
            }
            if (System.currentTimeMillis() > deadline) {
                throw new AssertionError("node " + id + " not ready again after " + READY_TIMEOUT_MS + " ms; "
                        + String.join(" ", commands.get(i)) + "\n" + logTails(30));
            }
            Thread.sleep(50);
        }
        long t2 = System.nanoTime();
        awaitAllUnfenced();
        long t3 = System.nanoTime();
        return new Restart(id, pid, (t1 - t0) / 1_000_000, (t2 - t1) / 1_000_000, (t3 - t2) / 1_000_000);
    }

    private String logSince(int i, long offset) throws IOException {
        byte[] all = Files.readAllBytes(logFiles[i]);
        int from = (int) Math.min(offset, all.length);
        return new String(all, from, all.length - from, StandardCharsets.UTF_8);
    }

    interface Condition {
        boolean holds() throws Exception;
    }

    /** Polls {@code condition} every 100 ms until it holds; fails after {@code timeoutMs}. */
    void waitFor(String what, long timeoutMs, Condition condition) throws Exception {
        long deadline = System.currentTimeMillis() + timeoutMs;
        Exception last = null;
        while (true) {
            try {
                if (condition.holds()) {
                    return;
                }
            } catch (IOException e) {
                last = e; // a node not answering yet: try again until the deadline
            }
            if (System.currentTimeMillis() > deadline) {
                throw new AssertionError("not within " + timeoutMs + " ms: " + what
                        + (last == null ? "" : " (last error: " + last + ")") + "\n" + logTails(20));
            }
            Thread.sleep(100);
        }
    }

    /**
     * The metadata-consistency check: once no change is under way, every node serves an image
     * equal to the metadata its controller thread applied ({@code /v1/metadata}'s "installed" and
     * "controller"), at the same index as every other node's. Returns that index.
     */
    public long assertConsistent() throws Exception {
        JsonNode[] digests = new JsonNode[NODES];
        waitFor("every node's image and controller at one index", SETTLE_TIMEOUT_MS, () -> {
            for (int id = 1; id <= NODES; id++) {
                digests[id - 1] = admin(id, "/v1/metadata");
            }
            JsonNode index = digests[0].path("controller").path("index");
            if (!index.isIntegralNumber()) {
                return false;
            }
            for (JsonNode d : digests) {
                if (!index.equals(d.path("controller").path("index")) || !index.equals(d.path("installed").path("index"))) {
                    return false;
                }
            }
            return true;
        });
        for (int i = 0; i < NODES; i++) {
            assertEquals(digests[i].get("controller"), digests[i].get("installed"),
                    "node " + (i + 1) + " serves another image than its controller applied");
            assertEquals(digests[0].get("installed"), digests[i].get("installed"),
                    "nodes 1 and " + (i + 1) + " serve different images at the same index");
        }
        return digests[0].get("installed").get("index").asLong();
    }

    private void stop() throws Exception {
        if (processes[0] == null) {
            return;
        }
        List<String> problems = new ArrayList<>();
        boolean[] deadBefore = new boolean[NODES];
        for (int i = 0; i < NODES; i++) {
            if (!processes[i].isAlive()) {
                deadBefore[i] = true;
                problems.add("node " + (i + 1) + " was no longer running at the end of the class (exit status "
                        + processes[i].exitValue() + ")");
            }
        }
        for (Process p : processes) {
            if (p.isAlive()) {
                p.destroy(); // SIGTERM: a graceful shutdown (a controlled shutdown of each broker)
            }
        }
        long deadline = System.currentTimeMillis() + STOP_TIMEOUT_MS;
        for (int i = 0; i < NODES; i++) {
            boolean exited = processes[i].waitFor(Math.max(1, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
            if (!exited) {
                problems.add("node " + (i + 1) + " did not exit within " + STOP_TIMEOUT_MS + " ms of SIGTERM (killed)");
            } else if (!deadBefore[i] && processes[i].exitValue() != 0) {
                problems.add("node " + (i + 1) + " exited with status " + processes[i].exitValue() + " after SIGTERM");
            }
        }
        String tails = problems.isEmpty() ? "" : logTails(30);
        killAll();
        cleanUp();
        if (!problems.isEmpty()) {
            throw new AssertionError(String.join("; ", problems) + "\n" + tails);
        }
    }

    private void killAll() throws InterruptedException {
        for (Process p : processes) {
            if (p != null && p.isAlive()) {
                p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
        }
    }

    private void cleanUp() throws IOException {
        for (Path dir : dataDirs) {
            if (dir != null && Files.exists(dir)) {
                try (Stream<Path> paths = Files.walk(dir)) {
                    for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                        Files.deleteIfExists(p);
                    }
                } catch (UncheckedIOException e) {
                    throw e.getCause();
                }
            }
        }
    }

    /** {@code n} distinct free loopback ports (each probed while the others are still held). */
    private static int[] freePorts(int n) throws IOException {
        List<ServerSocket> held = new ArrayList<>();
        try {
            for (int i = 0; i < n; i++) {
                held.add(new ServerSocket(0, 1, InetAddress.getLoopbackAddress()));
            }
            Set<Integer> ports = held.stream().map(ServerSocket::getLocalPort).collect(Collectors.toCollection(HashSet::new));
            if (ports.size() != n) {
                throw new IllegalStateException("free ports not distinct: " + ports);
            }
            return held.stream().mapToInt(ServerSocket::getLocalPort).toArray();
        } finally {
            for (ServerSocket s : held) {
                s.close();
            }
        }
    }
}
