package spate.it;

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
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * A real {@code spate serve} for one test class: register it as a static field with
 * {@code @RegisterExtension}. It starts the broker on free loopback ports with a fresh data
 * directory, waits (30 s at most) for "spate ready" on its stderr, and after the class stops it
 * with SIGTERM ({@link Process#destroy()}), checks that it exited 0, and deletes the data
 * directory. The broker's stderr stays in target/spate-logs/ for reading after a failure.
 *
 * <p>A test may also {@link #kill()} the broker (SIGKILL, as {@code kill -9}: no shutdown of any
 * kind) and {@link #restart()} it on the same ports and the same data directory; each restart's
 * stderr is appended to the same log file, after a line naming the restart.
 *
 * <p>{@link #withListeners} starts it with several Kafka listeners ({@code --listeners}), one per
 * security protocol, each on its own free port; {@link #bootstrap()} is then the first one's
 * address and {@link #bootstrap(String)} any one's.
 */
public final class SpateBroker implements BeforeAllCallback, AfterAllCallback {
    private static final long READY_TIMEOUT_MS = 30_000;
    private static final long STOP_TIMEOUT_MS = 30_000;

    private final List<String> extraArgs;
    /** The listeners' security protocols ({@code --listeners}); empty: one {@code --listen}. */
    private final List<String> protocols;
    /** Each listener's port, by security protocol, in {@link #protocols} order. */
    private final Map<String, Integer> listenerPorts = new LinkedHashMap<>();
    /** Added to the log files' names ({@link #named}), for a class with several brokers. */
    private String label = "";
    private Process process;
    private Path dataDir;
    private Path logFile;
    private Path stdoutFile;
    private List<String> command;
    private int port;
    private int adminPort;
    private int restarts;
    /** Set when a restart failed: the data directory is kept for reading (its recovery failed). */
    private boolean keepDataDir;

    /** @param extraArgs more {@code spate serve} flags, after the standard ones ({@code --cores 2} unless given) */
    public SpateBroker(String... extraArgs) {
        this(List.of(), extraArgs);
    }

    private SpateBroker(List<String> protocols, String... extraArgs) {
        this.protocols = List.copyOf(protocols);
        this.extraArgs = List.of(extraArgs);
    }

    /**
     * A broker with one listener per security protocol of {@code protocols} (PLAINTEXT, SSL,
     * SASL_PLAINTEXT, SASL_SSL; the listener's name is its protocol), each on a free loopback
     * port: {@code --listeners PLAINTEXT://127.0.0.1:<port>,...} in that order instead of
     * {@code --listen}. The TLS and SASL flags go in {@code extraArgs}.
     */
    public static SpateBroker withListeners(List<String> protocols, String... extraArgs) {
        if (protocols.isEmpty() || protocols.stream().distinct().count() != protocols.size()) {
            throw new IllegalArgumentException("listeners must be distinct and at least one: " + protocols);
        }
        return new SpateBroker(protocols, extraArgs);
    }

    /**
     * Names this broker's log files {@code <TestClass>-<label>-<time>.stderr.log}, so that the
     * brokers of one class, started in the same second, do not share one. Returns this broker.
     */
    public SpateBroker named(String label) {
        this.label = "-" + label;
        return this;
    }

    /** The address of the (first) listener. */
    public String bootstrap() {
        return "127.0.0.1:" + port;
    }

    /** The port of the (first) listener. */
    public int port() {
        return port;
    }

    /** The address of the listener of security protocol {@code protocol} (see {@link #withListeners}). */
    public String bootstrap(String protocol) {
        return "127.0.0.1:" + port(protocol);
    }

    /** The port of the listener of security protocol {@code protocol} (see {@link #withListeners}). */
    public int port(String protocol) {
        Integer p = listenerPorts.get(protocol);
        if (p == null) {
            throw new IllegalArgumentException("no " + protocol + " listener; the broker has " + listenerPorts.keySet());
        }
        return p;
    }

    public Path dataDir() {
        return dataDir;
    }

    public Path logFile() {
        return logFile;
    }

    /** The broker's {@code /metrics} (Prometheus text) from its admin listener. */
    public String metrics() throws IOException, InterruptedException {
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        HttpRequest get = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + adminPort + "/metrics")).build();
        return http.send(get, HttpResponse.BodyHandlers.ofString()).body();
    }

    /**
     * The sum of metric {@code name} in a {@code /metrics} text over the series whose labels
     * contain every one of {@code labels} (each as written there, e.g. {@code kind="incremental"}).
     */
    public static double metricSum(String metrics, String name, String... labels) {
        double sum = 0;
        for (String line : metrics.lines().toList()) {
            if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) {
                continue;
            }
            boolean all = true;
            for (String label : labels) {
                all &= line.contains(label);
            }
            if (all) {
                sum += Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
            }
        }
        return sum;
    }

    /** The broker's stderr so far. */
    public String log() {
        try {
            return Files.readString(logFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The last {@code n} lines of the broker's stderr, for failure messages. */
    public String logTail(int n) {
        List<String> lines = log().lines().toList();
        return String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()));
    }

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        start(context.getRequiredTestClass().getSimpleName() + label);
    }

    @Override
    public void afterAll(ExtensionContext context) throws Exception {
        stop();
    }

    private void start(String name) throws IOException, InterruptedException {
        Path bin = Paths.get(System.getProperty("spate.bin", "../../target/debug/spate")).toAbsolutePath().normalize();
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException("no spate binary at " + bin + " (set -Dspate.bin=...)");
        }
        Path logDir = Paths.get(System.getProperty("spate.logdir", "target/spate-logs")).toAbsolutePath();
        Files.createDirectories(logDir);
        String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss"));
        logFile = logDir.resolve(name + "-" + stamp + ".stderr.log");
        stdoutFile = logDir.resolve(name + "-" + stamp + ".stdout.log");
        dataDir = Files.createTempDirectory("spate-it-" + name + "-");
        List<Integer> taken = new ArrayList<>();
        for (int i = 0; i < Math.max(1, protocols.size()) + 1; i++) {
            int p = freePort();
            while (taken.contains(p)) {
                p = freePort();
            }
            taken.add(p);
        }
        port = taken.get(0);
        adminPort = taken.get(taken.size() - 1);
        List<String> listen;
        if (protocols.isEmpty()) {
            listen = List.of("--listen", "127.0.0.1:" + port);
        } else {
            List<String> listeners = new ArrayList<>();
            for (int i = 0; i < protocols.size(); i++) {
                listenerPorts.put(protocols.get(i), taken.get(i));
                listeners.add(protocols.get(i) + "://127.0.0.1:" + taken.get(i));
            }
            listen = List.of("--listeners", String.join(",", listeners));
        }
        command = new ArrayList<>(List.of(bin.toString(), "serve"));
        command.addAll(listen);
        command.addAll(List.of(
                "--admin-listen", "127.0.0.1:" + adminPort,
                "--data-dir", dataDir.toString(),
                "--group-initial-rebalance-delay-ms", "0"));
        if (!extraArgs.contains("--cores")) {
            command.addAll(List.of("--cores", "2"));
        }
        command.addAll(extraArgs);
        launch(ProcessBuilder.Redirect.to(logFile.toFile()), ProcessBuilder.Redirect.to(stdoutFile.toFile()), 0);
    }

    /**
     * Starts {@link #command} and waits for "spate ready" on its stderr, looking only at what
     * comes after {@code logOffset} bytes of the log (a restart appends to the log of the first start).
     */
    private void launch(ProcessBuilder.Redirect stderr, ProcessBuilder.Redirect stdout, long logOffset)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(command)
                .redirectErrorStream(false)
                .redirectError(stderr)
                .redirectOutput(stdout);
        process = pb.start();
        Process started = process;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (started.isAlive()) {
                started.destroyForcibly();
            }
        }));
        long deadline = System.currentTimeMillis() + READY_TIMEOUT_MS;
        while (true) {
            if (Files.exists(logFile) && logSince(logOffset).contains("spate ready")) {
                return;
            }
            if (!process.isAlive()) {
                String tail = logTail(40);
                String kept = failedStart();
                throw new IllegalStateException("spate exited with status " + process.exitValue()
                        + " before it was ready" + kept + "; " + String.join(" ", command) + "\n" + tail);
            }
            if (System.currentTimeMillis() > deadline) {
                String tail = logTail(40);
                process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                String kept = failedStart();
                throw new IllegalStateException("spate not ready after " + READY_TIMEOUT_MS + " ms" + kept + "; "
                        + String.join(" ", command) + "\n" + tail);
            }
            Thread.sleep(50);
        }
    }

    /**
     * After a start that failed: the data directory of a first start is deleted; after a restart
     * it is kept (it is what the recovery failed on) and named in the message.
     */
    private String failedStart() throws IOException {
        if (restarts == 0) {
            cleanUp();
            return "";
        }
        keepDataDir = true;
        return " (restart " + restarts + " after kill; data directory kept: " + dataDir + ")";
    }

    private String logSince(long offset) throws IOException {
        byte[] all = Files.readAllBytes(logFile);
        int from = (int) Math.min(offset, all.length);
        return new String(all, from, all.length - from, StandardCharsets.UTF_8);
    }

    /** The broker's process id (for a test's own records). */
    public long pid() {
        return process.pid();
    }

    /**
     * Kills the broker with SIGKILL ({@link Process#destroyForcibly()} on Linux), as {@code kill -9}:
     * it gets no chance to flush or close anything. Waits (10 s at most) until the process is gone.
     */
    public void kill() throws InterruptedException {
        if (process == null || !process.isAlive()) {
            throw new IllegalStateException("spate is not running");
        }
        process.destroyForcibly();
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            throw new AssertionError("spate still alive 10 s after SIGKILL (pid " + process.pid() + ")");
        }
    }

    /**
     * Starts the broker again after {@link #kill()}, with the same command line: the same ports,
     * the same data directory. Its stderr is appended to the same log file. Waits for "spate
     * ready" as the first start does (recovery after a crash included).
     */
    public void restart() throws IOException, InterruptedException {
        if (process != null && process.isAlive()) {
            throw new IllegalStateException("spate is still running; kill() it first");
        }
        restarts++;
        long offset = Files.size(logFile);
        String banner = "\n==== SpateBroker: restart " + restarts + " after kill (previous exit status "
                + (process == null ? "none" : process.exitValue()) + ") at " + LocalDateTime.now() + " ====\n";
        Files.writeString(logFile, banner, StandardCharsets.UTF_8, java.nio.file.StandardOpenOption.APPEND);
        launch(ProcessBuilder.Redirect.appendTo(logFile.toFile()), ProcessBuilder.Redirect.appendTo(stdoutFile.toFile()),
                offset + banner.getBytes(StandardCharsets.UTF_8).length);
    }

    private void stop() throws IOException, InterruptedException {
        if (process == null) {
            return;
        }
        if (!process.isAlive()) {
            int status = process.exitValue();
            String tail = logTail(30);
            cleanUp();
            throw new AssertionError("spate was no longer running at the end of the class (exit status " + status
                    + (restarts > 0 ? ", after " + restarts + " restart(s)" : "") + "); log " + logFile + ":\n" + tail);
        }
        process.destroy(); // SIGTERM: a graceful shutdown
        boolean exited = process.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        if (!exited) {
            process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        int status = exited ? process.exitValue() : -1;
        String tail = logTail(30);
        cleanUp();
        if (!exited) {
            throw new AssertionError("spate did not exit within " + STOP_TIMEOUT_MS + " ms of SIGTERM (killed); log "
                    + logFile + ":\n" + tail);
        }
        if (status != 0) {
            throw new AssertionError("spate exited with status " + status + " after SIGTERM; log " + logFile
                    + ":\n" + tail);
        }
    }

    private void cleanUp() throws IOException {
        if (dataDir != null && !keepDataDir && Files.exists(dataDir)) {
            try (Stream<Path> paths = Files.walk(dataDir)) {
                for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
